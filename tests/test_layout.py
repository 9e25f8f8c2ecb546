"""The layers of docs/architecture.md: the model and the data import nothing of the repository above
them, the tools import no script, and no function outside the tests grows past one screen."""

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
FORBIDDEN = {  # folder -> top-level modules of the repository it must not import
    "modeling_msmn": {"datasets_scripts", "msmn", "train", "app", "benchmarks"},
    "datasets_scripts": {"modeling_msmn", "msmn", "train", "app", "benchmarks"},
    "msmn": {"train", "app", "benchmarks", "tests", "conftest"},
}


def imported_modules(path: Path) -> set[str]:
    """The top-level names of the absolute imports of a Python file."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0:
            names.add(node.module.split(".")[0])
    return names


@pytest.mark.parametrize("folder", sorted(FORBIDDEN))
def test_nothing_imports_upward(folder):
    upward = {str(path.relative_to(ROOT)): sorted(imported_modules(path) & FORBIDDEN[folder])
              for path in (ROOT / folder).rglob("*.py")}
    assert {path: names for path, names in upward.items() if names} == {}


def test_no_function_outside_the_tests_is_over_60_lines():
    paths = [ROOT / "train.py", ROOT / "app.py", *[path for folder in FORBIDDEN for path in (ROOT / folder).rglob("*.py")],
             *(ROOT / "benchmarks").glob("*.py")]
    long = [f"{path.relative_to(ROOT)}:{node.name} ({node.end_lineno - node.lineno + 1} lines)"
            for path in paths for node in ast.walk(ast.parse(path.read_text(encoding="utf-8")))
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.end_lineno - node.lineno + 1 > 60]
    assert long == []
