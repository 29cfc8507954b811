"""Recognising text files that are not UTF-8 at all (UTF-16/UTF-32 exports, binary files).

Spreadsheet tools save "Unicode text" as UTF-16. Decoded as UTF-8, such a file has a garbled header full of NUL
characters, and the first error a user would see is "required column 'text' not found". :func:`encoding_problem`
recognises the byte-order marks and the NUL patterns of UTF-16/UTF-32 so the error can name the real problem.
Single invalid bytes in otherwise UTF-8 text are not this module's business: they are reported per row.
"""

from __future__ import annotations

_BOMS = (  # longest first: the UTF-32 LE mark starts with the UTF-16 LE one
    (b"\xff\xfe\x00\x00", "UTF-32 (little-endian, byte-order mark FF FE 00 00)", "UTF-32"),
    (b"\x00\x00\xfe\xff", "UTF-32 (big-endian, byte-order mark 00 00 FE FF)", "UTF-32"),
    (b"\xff\xfe", "UTF-16 (little-endian, byte-order mark FF FE)", "UTF-16"),
    (b"\xfe\xff", "UTF-16 (big-endian, byte-order mark FE FF)", "UTF-16"),
)
_SAMPLE = 4096
_FIX = "save it as UTF-8 (spreadsheets: 'CSV UTF-8'; shell: iconv -f {enc} -t UTF-8 in > out)"


def encoding_problem(data: bytes) -> str | None:
    """Why ``data`` cannot be UTF-8 text (naming the encoding it looks like), or None when it may be."""
    for bom, name, iconv_name in _BOMS:
        if data.startswith(bom):
            return f"the file is encoded as {name}, not UTF-8; " + _FIX.format(enc=iconv_name)
    sample = data[:_SAMPLE]
    if len(sample) < 4 or sample.count(0) < len(sample) // 4:
        return None  # ASCII/UTF-8 text never has this many NULs
    # UTF-16 of mostly ASCII text: every other byte is NUL; UTF-32: three bytes of every four.
    per_position = [sample[i::4].count(0) / max(1, len(sample[i::4])) for i in range(4)]
    mostly_nul = [p > 0.9 for p in per_position]
    if mostly_nul == [False, True, True, True]:
        name, iconv_name = "UTF-32 (little-endian, no byte-order mark)", "UTF-32LE"
    elif mostly_nul == [True, True, True, False]:
        name, iconv_name = "UTF-32 (big-endian, no byte-order mark)", "UTF-32BE"
    elif mostly_nul == [False, True, False, True]:
        name, iconv_name = "UTF-16 (little-endian, no byte-order mark)", "UTF-16LE"
    elif mostly_nul == [True, False, True, False]:
        name, iconv_name = "UTF-16 (big-endian, no byte-order mark)", "UTF-16BE"
    else:
        share = sample.count(0) / len(sample)
        return f"the file is not text: {share:.0%} of its first {len(sample):,} bytes are NUL bytes"
    return f"the file looks encoded as {name}, not UTF-8; " + _FIX.format(enc=iconv_name)
