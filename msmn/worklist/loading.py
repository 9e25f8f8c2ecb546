"""Loading work: notes of JSON lines (`{"id", "text"}`, gzipped too) coded in bulk and stored with their
suggestions and the model's identity. Every line is checked before the model loads (an id on each note, no id
twice); notes are then read, coded and stored batch by batch (one transaction each), so memory stays flat and
a stopped load resumes where it stopped: notes already stored are skipped, and loading a file twice adds
nothing. Under torchrun each process codes every K-th note (`msmn.coding.shards`)."""

import json
from collections.abc import Iterator
from pathlib import Path

from tqdm.auto import tqdm

from datasets_scripts import InputError
from datasets_scripts.files import read_json_lines
from msmn.coding.notes import checked_note
from msmn.coding.shards import Shard
from msmn.coding.writing import batches
from msmn.worklist.store import Worklist

EXPECTED_LINE = '{"id": ..., "text": ...}'


def worklist_notes(paths: list[Path]) -> Iterator[dict]:
    """{"id": str, "text", "source": file and line} of every line, streaming; a note without an id is an error."""
    for path in paths:
        for line_number, record in read_json_lines(path, EXPECTED_LINE):
            source = f"{path}, line {line_number}"
            note_id = record.get("id")
            if note_id is None or isinstance(note_id, (dict, list, bool)) or str(note_id).strip() == "":
                raise InputError(f'{source}: needs an "id" (a string or a number): the worklist tells notes apart by it.')
            yield {**checked_note(record, source, ""), "id": str(note_id), "source": source}


def check_notes(paths: list[Path]) -> int:
    """Reads every line once before any work: the number of notes, or the first repeated id with both lines."""
    first_seen, count = {}, 0
    for note in worklist_notes(paths):
        if note["id"] in first_seen:
            raise InputError(f"{note['source']}: the id {note['id']!r} of {first_seen[note['id']]}; give each note "
                             "its own id (nothing was loaded).")
        first_seen[note["id"]] = note["source"]
        count += 1
    if count == 0:
        raise InputError(f"{', '.join(map(str, paths))}: hold no notes; give one JSON line {EXPECTED_LINE} per note.")
    return count


def load_notes(worklist: Worklist, coder, model: str, paths: list[Path], batch_size: int, shard: Shard,
               quiet: bool) -> tuple[int, int]:
    """Codes and stores this process's share of the notes not already stored; (added, already stored)."""
    total = check_notes(paths)
    added = kept = 0
    with tqdm(total=total, unit="notes", disable=quiet) as progress:
        for batch in batches(shard.notes(worklist_notes(paths)), batch_size):
            stored = worklist.stored_ids([note["id"] for note in batch])
            new = [note for note in batch if note["id"] not in stored]
            if new:
                coded = coder([note["text"] for note in new], batch_size=batch_size)
                added += worklist.add_notes([{**note, "codes": codes} for note, codes in zip(new, coded)], model)
            kept += len(batch) - len(new)
            progress.update(len(batch) * shard.world_size)
    return added, kept


def summary(added: int, kept: int, model: str) -> str:
    return json.dumps({"added": added, "already_stored": kept, "model": model})
