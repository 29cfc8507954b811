"""Spreadsheet-safe text cells in the CSV files this package writes (cleaned data, splits).

A cell that starts with ``=``, ``+``, ``-`` or ``@`` (or a tab, carriage return, line feed or NUL, or the
full-width forms of the four signs) is run as a formula when the file is opened in Excel, LibreOffice or Google
Sheets — "CSV injection" (OWASP; CWE-1236). Prompt datasets hold exactly such texts (``=cmd|' /C calc'!A0`` is
a classic attack prompt), and people open ``cleaned.csv`` and the split files in spreadsheets to look at them.

So, as OWASP recommends and spreadsheet-safe exporters do, the writer puts a single quote in front of such a
cell: a spreadsheet shows it as text. These files are also the pipeline's own input to the next stage, so the
escaping must round-trip exactly: the writer also quotes every cell that already starts with ``'``, which makes
the rule reversible — *a cell of a file written by this package that starts with ``'`` had one ``'`` added* —
and the readers (:func:`prompt_sentinel.data.loading.read_data_csv`, and :func:`~prompt_sentinel.data.loading.
read_table` for a CSV whose header is exactly :data:`~prompt_sentinel.data.loading.OUTPUT_COLUMNS`) remove it.
Training, evaluation and the leak checks therefore see every text exactly as it was in the input.

Only string columns (``id``, ``text``, ``source``) are escaped; ``label`` and ``row`` are integers.
"""

from __future__ import annotations

ESCAPE = "'"
FORMULA_PREFIXES = ("=", "+", "-", "@", "\t", "\r", "\n", "\0", "\uff1d", "\uff0b", "\uff0d", "\uff20")


def needs_escape(cell: str) -> bool:
    return cell.startswith(FORMULA_PREFIXES) or cell.startswith(ESCAPE)


def escape_cell(cell: str) -> str:
    """``cell`` as written to a spreadsheet-safe CSV (a leading ``'`` when it could start a formula)."""
    return ESCAPE + cell if needs_escape(cell) else cell


def unescape_cell(cell: str) -> str:
    """The original text of a cell written by :func:`escape_cell`."""
    return cell[len(ESCAPE) :] if cell.startswith(ESCAPE) else cell
