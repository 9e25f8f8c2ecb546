"""Coding notes batch by batch into JSON lines (and report sections), through a resumable `.partial`
file: what a stopped run wrote is kept, and a resume appends."""

import contextlib
import itertools
import json
from collections.abc import Iterator
from pathlib import Path

from datasets_scripts import InputError
from msmn.outputs import KeptLines, disk_message, finish, partial_path, resumable_lines, start


def batches(notes: Iterator[dict], size: int) -> Iterator[list[dict]]:
    return iter(lambda: list(itertools.islice(notes, size)), [])


def code_into(file, coder, notes: Iterator[dict], options: dict, batch_size: int, progress, report=None) -> None:
    """Codes the notes batch by batch: one whole JSON line per note into `file` (binary), flushed after
    each batch, and one section per note into `report` (a Report) where there is one."""
    for batch in batches(notes, batch_size):
        coded = coder([note["text"] for note in batch], batch_size=batch_size, note_info=True, **options)
        lines = "".join(json.dumps(output_line(note, info), ensure_ascii=False) + "\n" for note, info in zip(batch, coded))
        file.write(lines.encode("utf-8"))  # UTF-8 JSON lines whatever the terminal's locale
        file.flush()
        if report is not None:
            report.add(batch, coded)
        progress.update(len(batch))


def output_line(note: dict, info: dict) -> dict:
    """A note's output line: its id and codes, and "short_note": true where it is much shorter than the
    notes the model was trained on."""
    return {"id": note["id"], "codes": info["codes"], **({"short_note": True} if info["short_note"] else {})}


def write_output(path: Path, coder, notes: Iterator[dict], options: dict, batch_size: int, progress,
                 resume: bool, record: dict, report=None) -> None:
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
        code_into(file, coder, notes, options, batch_size, progress, report)
        finish(path, file)
    except OSError as error:
        raise InputError(f"{disk_message(error, partial_path(path))}: the notes coded before are kept there; fix "
                         "that, then run the same command with --resume to continue.") from None
    finally:
        with contextlib.suppress(OSError):  # buffered bytes a full disk refused: a half line, cut on resume
            file.close()
