"""The documentation's Python snippets run as written, on a checkpoint trained in the suite, and the
documentation speaks of the code, not of how it was made."""

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
CHECKPOINT_NAME = '"msmn-codiesp-d-50"'  # the folder `python train.py` saves, as the snippets name it
ALL_CODES_NAME = '"msmn-codiesp-d-all-codes"'  # the folder of `--preset codiesp-d-all-codes`, with candidate codes


def python_snippets():
    """(page, snippet) for every ```python block of the README and the docs pages."""
    return [(page.relative_to(ROOT).as_posix(), snippet) for page in PAGES
            for snippet in re.findall(r"```python\n(.*?)```", page.read_text(encoding="utf-8"), flags=re.S)]


def test_the_readme_has_python_snippets():
    assert [page for page, _ in python_snippets()].count("README.md") >= 1


@pytest.mark.slow  # most snippets load the checkpoint that the suite trains
@pytest.mark.parametrize("page, snippet", python_snippets(), ids=lambda value: value if value.endswith(".md") else "")
def test_python_snippet_runs(page, snippet, request, capsys):
    # a snippet that ranks every ICD-10-CM code runs on the suite's checkpoint with candidate codes
    if ALL_CODES_NAME in snippet:
        name, checkpoint = ALL_CODES_NAME, request.getfixturevalue("ranked_checkpoint")[0]
    else:
        name, checkpoint = CHECKPOINT_NAME, request.getfixturevalue("synthetic_checkpoint")[0]
    assert name in snippet, f"{page}: a snippet that does not load the trained checkpoint"
    code = compile(snippet.replace(name, repr(str(checkpoint))), page, "exec")
    exec(code, {"__name__": "__snippet__"})
    assert capsys.readouterr().out.strip(), f"{page}: the snippet printed nothing"


def test_no_history_in_the_code_or_the_docs():
    """No issue numbers, dates of work, commit hashes or references to notes a clone does not have."""
    history = re.compile(r"\bissue \d+|\bspec §|§\d|reference_code|\b20\d\d-\d\d-\d\d\b|"
                         r"(January|February|March|April|May|June|July|August|September|October|November|December) 20\d\d|"
                         r"\bcommit [0-9a-f]{7}|\bour (CPU|machine|notes)\b")
    files = [*PAGES, *ROOT.glob("*.py"), *ROOT.glob("*/*.py"), *ROOT.glob("msmn/**/*.py"), ROOT / "presets" / "README.md"]
    files = [path for path in files if ".venv" not in path.parts and path != Path(__file__).resolve()]
    found = [f"{path.relative_to(ROOT)}:{number}" for path in files
             for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1) if history.search(line)]
    assert found == []
