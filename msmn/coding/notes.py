"""Reading the notes that `msmn-code` codes: text files (one note each), JSON lines (one note per line,
gzipped too) and standard input, streamed, each line checked; errors name the file and line, never
the text of a note."""

import json
import sys
from collections.abc import Iterator
from pathlib import Path

from datasets_scripts import InputError
from datasets_scripts.files import read_json_lines


def utf8_note(data: bytes, source: str) -> str:
    """One note's text, decoded as is: line ends are kept, so evidence offsets index the file's text."""
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise InputError(f"{source}: not UTF-8 text; convert it (e.g. iconv -t utf-8).") from None


def is_json_lines(path: Path) -> bool:
    return path.name.lower().endswith((".jsonl", ".jsonl.gz"))


def check_note_files(paths: list[str]) -> None:
    """Every note file is there and of a kind msmn-code reads, before any work."""
    for name in paths:
        path = Path(name)
        if name == "-" or is_json_lines(path):
            continue
        if path.name.lower().endswith((".json", ".json.gz")):
            raise InputError(f'{path}: a .json file; give JSON lines instead (.jsonl: one {{"text": ..., "id": ...}} '
                             "object per line), e.g. jq -c '.[]' notes.json > notes.jsonl.")
        if not path.is_file():
            raise InputError(f"{path}: no such file.")


def read_notes(paths: list[str], stdin_note: str | None = None) -> Iterator[dict]:
    """{"id": ..., "text": ...} of each note of the given files, in order, streaming; with no file,
    `stdin_note` (the note read from standard input)."""
    for name in paths or ["-"]:
        path = Path(name)
        if name == "-":
            yield {"id": "stdin", "text": stdin_note}
        elif not is_json_lines(path):
            if not path.is_file():
                raise InputError(f"{path}: no such file.")
            yield {"id": path.name, "text": utf8_note(path.read_bytes(), str(path))}
        else:
            count = 0
            for line_number, record in read_json_lines(path, '{"text": ..., "id": ...}'):
                yield checked_note(record, f"{path}, line {line_number}", f"{path.name}:{line_number}")
                count += 1
            if count == 0:
                raise InputError(f'{path}: holds no notes; give one JSON line {{"text": ...}} per note.')


def checked_note(record: dict, source: str, default_id: str) -> dict:
    """{"id", "text"} of a JSON line, its text a note that can be written back as UTF-8."""
    if not isinstance(record.get("text"), str):
        raise InputError(f'{source}: needs a "text" field holding the note.')
    note_id = record.get("id", default_id)
    try:
        (record["text"] + json.dumps(note_id, ensure_ascii=False)).encode("utf-8")
    except UnicodeEncodeError:
        raise InputError(f"{source}: holds a lone surrogate escape (such as \\ud83e), which is no character; fix "
                         "the text where it was written (it was cut inside an emoji or other character).") from None
    return {"id": note_id, "text": record["text"]}


def count_notes(paths: list[str], stdin_note: str | None) -> int:
    """How many notes the files hold, reading each once: every line is checked before the model loads.
    Repeated ids and a file given twice are counted in a warning."""
    seen, repeated, first_repeated = set(), 0, None
    for note in read_notes(paths, stdin_note):
        key = json.dumps(note["id"])
        if key in seen:
            repeated += 1
            first_repeated = note["id"] if repeated == 1 else first_repeated
        seen.add(key)
    files = [Path(name).resolve() for name in paths if name != "-"]
    twice = sorted({str(name) for name in files if files.count(name) > 1})
    if twice:
        print(f"msmn-code: warning: {twice} given more than once: their notes are coded each time.", file=sys.stderr)
    if repeated:
        print(f"msmn-code: warning: {repeated} notes have the id of an earlier note (the first: {first_repeated!r}); "
              "each is coded, and the output has one line per note, in input order.", file=sys.stderr)
    return len(seen) + repeated


def read_stdin_note(paths: list[str]) -> str | None:
    """The note on standard input, where one is to be read (no file, or "-")."""
    if paths and "-" not in paths:
        return None
    if sys.stdin.isatty():
        print("msmn-code: waiting for a note on standard input (end it with Ctrl-D), or give note files: "
              "msmn-code MODEL notes.jsonl", file=sys.stderr)
    return utf8_note(sys.stdin.buffer.read(), "standard input")
