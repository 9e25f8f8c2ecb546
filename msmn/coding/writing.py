"""Coding notes batch by batch into JSON lines (a note's codes, or a FHIR Bundle per note) and report
sections, through a resumable `.partial` file: what a stopped run wrote is kept, and a resume appends."""

import contextlib
import dataclasses
import itertools
import json
from collections.abc import Iterator
from pathlib import Path

from datasets_scripts import InputError
from msmn.outputs import KeptLines, disk_message, finish, partial_path, resumable_lines, start
from msmn.serving.fhir import bundle


@dataclasses.dataclass
class Coding:
    """How notes are coded into lines: the pipeline, its options, notes per call, and the FHIR system of
    the label set where each line is a FHIR Bundle (None: the codes as the pipeline gives them)."""

    coder: object
    options: dict
    batch_size: int
    fhir_system: str | None = None

    def line(self, note: dict, info: dict) -> dict:
        """A note's output line: its id and codes ("short_note": true where it is much shorter than the
        notes the model was trained on), or its FHIR Bundle."""
        if self.fhir_system is not None:
            return bundle([(str(note["id"]), info["codes"])], self.fhir_system)
        return {"id": note["id"], "codes": info["codes"], **({"short_note": True} if info["short_note"] else {})}


def batches(notes: Iterator[dict], size: int) -> Iterator[list[dict]]:
    return iter(lambda: list(itertools.islice(notes, size)), [])


def code_into(file, coding: Coding, notes: Iterator[dict], progress, report=None) -> None:
    """Codes the notes batch by batch: one whole JSON line per note into `file` (binary), flushed after
    each batch, and one section per note into `report` (a Report) where there is one."""
    for batch in batches(notes, coding.batch_size):
        coded = coding.coder([note["text"] for note in batch], batch_size=coding.batch_size, note_info=True,
                             **coding.options)
        lines = "".join(json.dumps(coding.line(note, info), ensure_ascii=False) + "\n" for note, info in zip(batch, coded))
        file.write(lines.encode("utf-8"))  # UTF-8 JSON lines whatever the terminal's locale
        file.flush()
        if report is not None:
            report.add(batch, coded)
        progress.update(len(batch))


def write_output(path: Path, coding: Coding, notes: Iterator[dict], progress, resume: bool, record: dict,
                 report=None) -> None:
    """The JSON lines of `notes` appended to `path.partial` (their report sections to `report`), renamed to
    `path` when complete. With `resume`, the whole lines that a stopped run left (in the .partial, or a
    finished `path`) are checked against the input and kept as they are; only the notes after them are coded."""
    kept = resumable_lines(path, (note["id"] for note in notes), record) if resume else KeptLines()
    progress.update(kept.count)
    if kept.source == path:  # a finished output: complete, or of other notes
        if next(notes, None) is None:
            return
        raise InputError(f"{path}: a finished output of {kept.count} notes, and the input has more; --resume continues "
                         "a stopped run's .partial file. Code the input into another file.")
    file = start(path, record, kept)
    try:
        code_into(file, coding, notes, progress, report)
        finish(path, file)
    except OSError as error:
        raise InputError(f"{disk_message(error, partial_path(path))}: the notes coded before are kept there; fix "
                         "that, then run the same command with --resume to continue.") from None
    finally:
        with contextlib.suppress(OSError):  # buffered bytes a full disk refused: a half line, cut on resume
            file.close()
