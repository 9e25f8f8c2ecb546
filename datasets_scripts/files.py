"""Reading the user's input files: plain or gzipped CSV (MIMIC-III) and JSON lines (notes), streamed,
with errors that name the file, the line and the fix, and never quote a row (rows may hold patient text)."""

import csv
import gzip
import hashlib
import io
import json
import sys
import zlib
from collections.abc import Iterator, Sequence
from pathlib import Path

from tqdm.auto import tqdm

csv.field_size_limit(sys.maxsize)  # discharge summaries exceed the default 128 KiB field limit


class InputFileError(ValueError):
    """A user's input file is missing, malformed or cut short."""


def find_input(folder: Path, name: str) -> Path:
    """`folder/name` or `folder/name.gz`, whichever exists."""
    for candidate in (folder / name, folder / f"{name}.gz"):
        if candidate.is_file():
            return candidate
    raise InputFileError(
        f"{folder}: neither {name} nor {name}.gz is there. Point data_dir at the folder holding your "
        f"MIMIC-III v1.4 CSV files (as downloaded from PhysioNet)."
    )


def fingerprint(paths: Sequence[Path]) -> str:
    """A short hash of the files' names, sizes and modification times: changes when a file does."""
    digest = hashlib.sha256()
    for path in sorted(paths):
        status = path.stat()
        digest.update(f"{path.name}:{status.st_size}:{status.st_mtime_ns};".encode())
    return digest.hexdigest()[:16]


class _ProgressReader(io.RawIOBase):
    """Counts the bytes read from a binary file into a progress bar."""

    def __init__(self, raw, progress):
        self.raw, self.progress = raw, progress

    def readable(self):
        return True

    def readinto(self, buffer):
        count = self.raw.readinto(buffer)
        self.progress.update(count)
        return count


def read_csv_rows(path: Path, required_columns: Sequence[str], progress: bool = False) -> Iterator[tuple[int, dict]]:
    """Yields (line number, {column: value}) for each row of a CSV (or CSV.gz) file, streaming.

    Raises InputFileError for a missing column, a row with the wrong number of fields, or a gzip
    file that is cut short.
    """
    raw = open(path, "rb")
    bar = tqdm(total=path.stat().st_size, unit="B", unit_scale=True, desc=path.name, disable=not progress)
    try:
        stream = io.BufferedReader(_ProgressReader(raw, bar), buffer_size=1 << 20)
        binary = gzip.GzipFile(fileobj=stream) if path.suffix == ".gz" else stream
        reader = csv.reader(io.TextIOWrapper(binary, encoding="utf-8", newline=""))
        header = next(reader, None)
        if header is None:
            raise InputFileError(f"{path}: the file is empty; it should start with a header row.")
        missing = [column for column in required_columns if column not in header]
        if missing:
            raise InputFileError(
                f"{path}, line 1: the header lacks the columns {missing} (it has {header}). "
                "Is this the right MIMIC-III file, unmodified?"
            )
        for row in reader:
            if len(row) != len(header):
                raise InputFileError(
                    f"{path}, line {reader.line_num}: {len(row)} fields where the header has {len(header)}. "
                    "The file is damaged or was edited; download it again."
                )
            yield reader.line_num, dict(zip(header, row))
    except (EOFError, gzip.BadGzipFile, zlib.error) as error:
        raise InputFileError(
            f"{path}: the gzip stream is cut short or corrupt ({type(error).__name__}); download the file again."
        ) from None
    except csv.Error as error:
        raise InputFileError(f"{path}: not a well-formed CSV file ({error}); download it again.") from None
    finally:
        bar.close()
        raw.close()


def read_json_lines(path: Path, expected: str) -> Iterator[tuple[int, dict]]:
    """Yields (line number, object) for each non-blank line of a JSON-lines file (or .gz), streaming.

    `expected` shows what a line holds, for the error messages (e.g. '{"text": ..., "labels": [...]}').
    Raises InputFileError for a missing file, a line that is not a JSON object, text that is not
    UTF-8, or a gzip file that is cut short.
    """
    if not path.is_file():
        raise InputFileError(f"{path}: no such file (expected JSON lines of {expected}).")
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rt", encoding="utf-8") as lines:
            for line_number, line in enumerate(lines, start=1):
                if not line.strip():
                    continue
                try:
                    record = json.loads(line)
                except json.JSONDecodeError as error:
                    raise InputFileError(
                        f"{path}, line {line_number}: not valid JSON ({error.msg}, column {error.colno})."
                    ) from None
                if not isinstance(record, dict):
                    raise InputFileError(f"{path}, line {line_number}: each line must be a JSON object, {expected}.")
                yield line_number, record
    except UnicodeDecodeError:
        raise InputFileError(f"{path}: not UTF-8 text; convert it (e.g. iconv -t utf-8).") from None
    except (EOFError, gzip.BadGzipFile, zlib.error) as error:
        raise InputFileError(f"{path}: the gzip stream is cut short or corrupt ({type(error).__name__}).") from None
