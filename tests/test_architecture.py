"""The code base keeps its shape: top-down import layers, one place for file names, docs true to the code."""

from __future__ import annotations

import ast
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from prompt_sentinel import run_layout
from prompt_sentinel.config import defaults_yaml

REPO = Path(__file__).resolve().parents[1]
CODE_DIRS = ("src/prompt_sentinel", "components", "pipelines", "serving")


def _lint_imports() -> str:
    exe = shutil.which("lint-imports", path=str(Path(sys.executable).parent))
    if exe is None:
        pytest.fail("lint-imports (import-linter, a dev dependency) is not installed")
    result = subprocess.run([exe, "--config", str(REPO / "pyproject.toml")], cwd=REPO, capture_output=True, text=True)
    return result.stdout + result.stderr if result.returncode else ""


def test_import_layers_hold() -> None:
    """cli -> pipelines -> components | serving -> stages -> domain -> foundation; contracts in pyproject.toml."""
    broken = _lint_imports()
    assert not broken, broken


def _string_constants(path: Path) -> list[tuple[int, str]]:
    tree = ast.parse(path.read_text(), filename=str(path))
    docstrings = {
        id(node.body[0].value)
        for node in ast.walk(tree)
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef)
        and node.body
        and isinstance(node.body[0], ast.Expr)
        and isinstance(node.body[0].value, ast.Constant)
    }
    return [
        (node.lineno, node.value)
        for node in ast.walk(tree)
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docstrings
    ]


def test_file_names_steps_hand_each_other_are_spelled_only_in_run_layout() -> None:
    """``evaluation.json`` written by one stage and read by another must come from one constant."""
    names = {
        value
        for key, value in vars(run_layout).items()
        if key.isupper() and isinstance(value, str) and re.search(r"\.(json|csv|html|md|skops|diff|yaml|onnx)$", value)
    }
    # Files whose names belong to another format's convention or to one module's private store.
    allowed = {
        "src/prompt_sentinel/run_layout.py",
        "src/prompt_sentinel/checksums.py",  # checksums.json is the manifest format itself
    }
    offenders = []
    for directory in CODE_DIRS:
        for path in sorted((REPO / directory).rglob("*.py")):
            rel = path.relative_to(REPO).as_posix()
            if rel in allowed:
                continue
            offenders += [f"{rel}:{line}: {value!r}" for line, value in _string_constants(path) if value in names]
    assert not offenders, "file names spelled outside run_layout:\n" + "\n".join(offenders)


def test_default_config_file_is_generated_from_the_typed_config() -> None:
    """configs/default.yaml lists every field with its default; `make default-config` regenerates it."""
    assert (REPO / "configs" / "default.yaml").read_text() == defaults_yaml()


def test_packaged_folders_exist() -> None:
    """Every package pyproject.toml ships is a real folder with an __init__.py."""
    import tomllib

    project = tomllib.loads((REPO / "pyproject.toml").read_text())
    setuptools = project["tool"]["setuptools"]
    roots = setuptools["package-dir"]
    for package in setuptools["packages"]:
        top, *rest = package.split(".")
        folder = REPO / roots.get(top, f"{roots['']}/{top}") / Path(*rest)
        assert (folder / "__init__.py").is_file(), f"pyproject.toml packages {package!r}, but {folder} is no package"


@pytest.mark.parametrize("script", sorted(p.name for p in (REPO / "benchmarks").glob("*.py")))
def test_benchmark_scripts_import(script: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Benchmarks are scripts nobody runs in CI: at least their imports must follow the code they measure."""
    import importlib.util

    monkeypatch.syspath_prepend(str(REPO / "benchmarks"))  # as when run as `python benchmarks/<script>`
    name = f"benchmark_{script[:-3]}"
    spec = importlib.util.spec_from_file_location(name, REPO / "benchmarks" / script)
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, name, module)  # dataclasses look their module up while the class is built
    spec.loader.exec_module(module)  # top-level code only: every script runs its work under main()
    assert callable(getattr(module, "main", None)), f"{script} has no main()"
