"""Your own coded notes: JSON lines of {"text": ..., "labels": [codes], "id": ... (optional)}, one
file per split, and a JSON file of code terms {code: [description, synonym, ...]}, whose codes are
the label set (sorted).

    import datasets_scripts
    data = datasets_scripts.load("files", train_file="train.jsonl", validation_file="dev.jsonl",
                                 test_file="test.jsonl", code_terms="code_terms.json")
"""

from pathlib import Path

from datasets import Dataset, DatasetDict

from .coding_data import CodingData, DataCard
from .errors import InputError
from .files import read_code_terms, read_json_lines


def read_coded_notes(path: Path, label_set: set[str]) -> list[dict]:
    """The examples of one split file, in the common shape (`gold_codes` are the labels)."""
    notes = []
    for line_number, note in read_json_lines(path, '{"text": ..., "labels": [...]}'):
        if not isinstance(note.get("text"), str) or not isinstance(note.get("labels"), list):
            raise InputError(f"{path}, line {line_number}: each line needs a string 'text' and a list 'labels'.")
        if not all(isinstance(code, str) for code in note["labels"]):
            raise InputError(f"{path}, line {line_number}: 'labels' must be a flat list of code strings, "
                             'e.g. ["I10", "E11.9"] (it holds a list, number or null).')
        unknown = [code for code in note["labels"] if code not in label_set]
        if unknown:
            raise InputError(
                f"{path}, line {line_number}: codes {unknown[:5]} are not in the code terms file; add their "
                "terms there (the code terms define the label set) or remove them from the labels."
            )
        identifier = str(note.get("id", f"{path.name}:{line_number}"))
        notes.append({"id": identifier, "text": note["text"], "labels": note["labels"], "gold_codes": note["labels"]})
    if not notes:
        raise InputError(f"{path}: holds no notes; a split needs at least one.")
    return notes


def load(
    train_file: str | None = None,
    validation_file: str | None = None,
    test_file: str | None = None,
    code_terms: str | None = None,
) -> CodingData:
    """Your splits and your code terms."""
    if train_file is None or code_terms is None:
        raise InputError("--dataset files needs --train_file and --code_terms (and --validation_file, --test_file).")
    terms = read_code_terms(Path(code_terms))
    codes = sorted(terms)
    files = {"train": train_file, "validation": validation_file, "test": test_file}
    splits = DatasetDict(
        {name: Dataset.from_list(read_coded_notes(Path(path), set(codes))) for name, path in files.items() if path}
    )
    return CodingData(
        splits=splits, codes=codes, code_terms=terms,
        card=DataCard(name="custom notes", dataset_id="custom", description=f"notes from {train_file}",
                      license="other", usage_note="Trained on the user's own notes: share the weights only as "
                                                  "the notes' terms of use allow."),
    )
