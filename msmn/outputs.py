"""Output files that a run cannot lose: a lock per output, JSON lines appended to a `.partial` file
that a stopped run resumes, and a run record beside it that refuses to splice two different runs.

    with OutputLock(path):                     # a second run on the same file is refused, naming this one
        kept = resumable_lines(path, ids, record)   # what a stopped run left, checked; never rewritten
        with open_for_appending(path, kept) as file: ...
        finish(path)                           # the .partial becomes the output, the record goes

A `.partial` file only ever grows by whole lines (a half-written last line is cut before appending),
so a run stopped by Ctrl-C, a full disk or a kill keeps every note it wrote, and `--resume` continues
from there. Messages name files and lines, never their content (it may hold note text).
"""

import errno
import fcntl
import json
import os
import socket
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from datasets_scripts import InputError
from datasets_scripts.files import write_atomically


def partial_path(path: Path) -> Path:
    return path.with_name(path.name + ".partial")


def record_path(path: Path) -> Path:
    """The run record of `path`'s .partial: which checkpoint and options wrote it."""
    return path.with_name(path.name + ".partial.run")


class OutputLock:
    """An exclusive lock on an output file for the life of a run (`PATH.lock`, flock'ed: the kernel
    releases it when the process dies, so a killed run never blocks the next one)."""

    def __init__(self, path: Path):
        self.path, self.lock_path, self.descriptor = path, path.with_name(path.name + ".lock"), None

    def __enter__(self) -> "OutputLock":
        while self.descriptor is None:
            descriptor = os.open(self.lock_path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = os.read(descriptor, 200).decode("utf-8", "replace").strip() or "another process"
                os.close(descriptor)
                raise InputError(f"{self.path}: {holder} is writing it; wait until that run ends, or give another "
                                 "output file.") from None
            if self.still_named(descriptor):  # not removed by the run that held it before
                self.descriptor = descriptor
            else:
                os.close(descriptor)
        os.ftruncate(self.descriptor, 0)
        holder = f"msmn-code (process {os.getpid()} on {socket.gethostname()}, since {time.strftime('%H:%M:%S')})"
        os.write(self.descriptor, holder.encode())
        return self

    def still_named(self, descriptor: int) -> bool:
        try:
            return os.stat(self.lock_path).st_ino == os.fstat(descriptor).st_ino
        except FileNotFoundError:
            return False

    def __exit__(self, *exception) -> None:
        self.lock_path.unlink(missing_ok=True)
        os.close(self.descriptor)
        self.descriptor = None


@dataclass
class KeptLines:
    """What a stopped run left: its whole lines' count and byte length, the file they are in."""

    source: Path | None = None
    count: int = 0
    length: int = 0


def resumable_lines(path: Path, expected_ids: Iterator, record: dict) -> KeptLines:
    """The whole lines that a stopped run left in `path`'s .partial (or in `path` itself), each checked to
    code the next note of the input, the run record checked against `record`. Reads only."""
    partial = partial_path(path)
    source = partial if partial.is_file() else path if path.is_file() else None
    if source is None:
        return KeptLines()
    if source == partial:
        check_record(path, record)
    kept = KeptLines(source)
    with open(source, "rb") as lines:
        for number, line in enumerate(lines, 1):
            if not line.endswith(b"\n"):
                break  # cut off mid-line by the stop: coded again
            check_line(source, number, line, next(expected_ids, None))
            kept.count, kept.length = number, kept.length + len(line)
    return kept


def check_line(source: Path, number: int, line: bytes, expected) -> None:
    """A kept line is whole JSON that codes the note the input has at its place."""
    keep = (f"keep its first {number - 1} lines (head -n {number - 1} FILE > FILE.kept, then rename it back) and "
            "resume, or " if number > 1 else "")
    damaged = (f"{source}, line {number}: not a line msmn-code writes (damaged); --resume cannot continue it: {keep}"
               "delete it to code every note again.")
    try:
        written = json.loads(line.decode("utf-8"))["id"]
    except (UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError):
        raise InputError(damaged) from None
    if written != expected:
        raise InputError(f"{source}, line {number}: codes note {written!r}, but note {number} of the input is "
                         f"{expected!r}; --resume continues only an output of the same notes in the same order.")


def check_record(path: Path, record: dict) -> None:
    """The .partial was written by the same checkpoint with the same options, or a clear error."""
    stored_path = record_path(path)
    if not stored_path.is_file():
        print(f"msmn-code: warning: {partial_path(path)} has no run record (written by an older msmn-code): which "
              "model and options wrote it cannot be checked.", file=sys.stderr)
        return
    try:
        stored = json.loads(stored_path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise InputError(f"{stored_path}: damaged; delete it and {partial_path(path)} to code every note again.") from None
    differ = [name for name in sorted(set(stored) | set(record)) if stored.get(name) != record.get(name)]
    if differ:
        said = "; ".join(f"{name}: {stored.get(name)!r} then, {record.get(name)!r} now" for name in differ)
        raise InputError(f"{partial_path(path)} was written by another run ({said}); --resume continues only with the "
                         "same model and options. Run it as it was, or delete the .partial to code every note again.")


def start(path: Path, record: dict, kept: KeptLines):
    """The .partial opened for appending after the kept lines (a half-written last line cut off), with its
    run record written first."""
    write_atomically(record_path(path), lambda file: file.write(json.dumps(record).encode("utf-8")))
    file = open(partial_path(path), "r+b" if kept.count else "wb")
    file.truncate(kept.length)
    file.seek(kept.length)
    return file


def finish(path: Path, file) -> None:
    """The complete .partial becomes `path` (flushed to disk first), and its run record goes."""
    file.flush()
    os.fsync(file.fileno())
    file.close()
    partial_path(path).replace(path)
    record_path(path).unlink(missing_ok=True)


def disk_message(error: OSError, path: Path) -> str:
    """What an OSError while writing `path` means for the user, in one line."""
    if error.errno in (errno.ENOSPC, errno.EDQUOT):
        return f"the disk is full (writing {path})"
    return f"cannot write {path} ({error.strerror or type(error).__name__})"


def write_whole(path: Path, write) -> None:
    """`path` written by `write(file)` through `path.partial`, renamed when complete; on any stop the
    .partial is removed (an HTML report holds note text and cannot be resumed)."""
    try:
        write_atomically(path, write)
    except OSError as error:
        raise InputError(f"{disk_message(error, path)}: nothing was written there; fix that and run again.") from None
