"""The reviewed notes back into training: every submitted note with its final codes as JSON lines of
`{"id", "text", "labels"}` (the package's one data shape, `datasets_scripts.load("files", ...)`), split by a
hash of the note id (80% train, 10% validation, 10% test): a note keeps its split as the worklist grows.
The acceptance figures as CSV files beside."""

import contextlib
import hashlib
import json
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session, selectinload

from datasets_scripts.files import write_atomically
from msmn.worklist.analytics import acceptance_report
from msmn.worklist.schema import Note

SPLITS = ("train", "validation", "test")


def split_of(note_id: str) -> str:
    """train, validation or test, from the note id alone (tenths 0–7, 8, 9 of its SHA-256)."""
    tenth = int.from_bytes(hashlib.sha256(note_id.encode("utf-8")).digest()[:8], "big") % 10
    return "test" if tenth == 9 else "validation" if tenth == 8 else "train"


def export_reviews(engine: Engine, folder: Path, batch: int = 1000) -> dict[str, int]:
    """train.jsonl, validation.jsonl and test.jsonl of the submitted notes in `folder`, streamed through `.partial`
    files renamed at the end (a failed export leaves the earlier files as they were); the notes of each split."""
    folder.mkdir(parents=True, exist_ok=True)
    partial = {split: folder / f"{split}.jsonl.partial" for split in SPLITS}
    counts = dict.fromkeys(SPLITS, 0)
    try:
        with contextlib.ExitStack() as stack:
            files = {split: stack.enter_context(open(path, "wb")) for split, path in partial.items()}
            with Session(engine) as session:
                query = (select(Note).where(Note.submitted_at.is_not(None)).order_by(Note.id)
                         .options(selectinload(Note.final_codes)).execution_options(yield_per=batch))
                for note in session.scalars(query):
                    record = {"id": note.note_id, "text": note.text, "labels": [code.code for code in note.final_codes]}
                    split = split_of(note.note_id)
                    files[split].write((json.dumps(record, ensure_ascii=False) + "\n").encode("utf-8"))
                    counts[split] += 1
        for split, path in partial.items():
            path.replace(folder / f"{split}.jsonl")
    finally:
        for path in partial.values():
            path.unlink(missing_ok=True)
    return counts


def write_report_csv(engine: Engine, folder: Path) -> list[Path]:
    """by_model.csv, by_coder.csv and by_code.csv of the acceptance figures in `folder`."""
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for name, table in acceptance_report(engine).items():
        path = folder / f"{name}.csv"
        write_atomically(path, lambda file: file.write(table.to_csv(index=False).encode("utf-8")))
        written.append(path)
    return written
