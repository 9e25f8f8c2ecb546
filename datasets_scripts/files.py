"""Reading the user's input files: plain or gzipped CSV (MIMIC-III) and JSON lines (notes), streamed,
with errors that name the file, the line and the fix, and never quote a row (rows may hold patient text)."""

import csv
import functools
import gzip
import hashlib
import io
import json
import sys
import zlib
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import BinaryIO

from tqdm.auto import tqdm

from .errors import InputError

csv.field_size_limit(sys.maxsize)  # discharge summaries exceed the default 128 KiB field limit


def write_atomically(path: Path, write: Callable[[BinaryIO], None]) -> None:
    """Writes `path` through `write(file)` into `path.partial`, then renames it: an interrupted run never
    leaves a partial file where a cache or an output is read, and a failed one leaves no `.partial`."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(path.name + ".partial")
    try:
        with open(temporary, "wb") as file:
            write(file)
        temporary.replace(path)
    finally:
        temporary.unlink(missing_ok=True)


def find_input(folder: Path, name: str, fix: str = "Point data_dir at the folder holding your MIMIC-III v1.4 "
                                                   "CSV files (as downloaded from PhysioNet).") -> Path:
    """`folder/name` or `folder/name.gz`, whichever exists."""
    for candidate in (folder / name, folder / f"{name}.gz"):
        if candidate.is_file():
            return candidate
    raise InputError(f"{folder}: neither {name} nor {name}.gz is there. {fix}")


def fingerprint(paths: Sequence[Path]) -> str:
    """A short hash of the files' names, sizes and modification times: changes when a file does."""
    digest = hashlib.sha256()
    for path in sorted(paths):
        status = path.stat()
        digest.update(f"{path.name}:{status.st_size}:{status.st_mtime_ns};".encode())
    return digest.hexdigest()[:16]


def read_csv_rows(path: Path, required_columns: Sequence[str], progress: bool = False,
                  dataset: str = "MIMIC-III") -> Iterator[tuple[int, dict]]:
    """Yields (line number where the row starts, {column: value}) for each row of a CSV (or CSV.gz) file
    of `dataset`, streaming (a row spans several lines where a quoted note holds line breaks).

    Raises InputError for a missing column, a row with the wrong number of fields, a file cut short
    (also inside a quoted field: the reader is strict), or text that is not UTF-8.
    """
    size = path.stat().st_size
    # unbuffered, so that every byte read goes through the progress bar's counted `read`
    with open(path, "rb", buffering=0) as raw, tqdm.wrapattr(
        raw, "read", total=size, desc=path.name, disable=not progress
    ) as counted:
        row_start = 1  # the line where the row being read starts
        try:
            binary = gzip.GzipFile(fileobj=counted) if path.suffix == ".gz" else counted
            reader = csv.reader(io.TextIOWrapper(binary, encoding="utf-8", newline=""), strict=True)
            header = next(reader, None)
            if header is None:
                raise InputError(f"{path}: the file is empty; it should start with a header row.")
            missing = [column for column in required_columns if column not in header]
            if missing:
                raise InputError(
                    f"{path}, line 1: the header lacks the columns {missing} (it has {header}). "
                    f"Is this the right {dataset} file, unmodified?"
                )
            row_start = reader.line_num + 1
            for row in reader:
                if len(row) != len(header):
                    raise InputError(
                        f"{path}, line {row_start}: {len(row)} fields where the header has {len(header)}. "
                        "The file is damaged or was edited; download it again."
                    )
                yield row_start, dict(zip(header, row))
                row_start = reader.line_num + 1
        except (EOFError, gzip.BadGzipFile, zlib.error) as error:
            raise InputError(
                f"{path}: the gzip stream is cut short or corrupt ({type(error).__name__}); download the file again."
            ) from None
        except csv.Error as error:
            raise InputError(
                f"{path}, line {row_start}: not well-formed CSV ({error}): the row starting there is cut short or "
                "damaged; download it again."
            ) from None
        except UnicodeDecodeError:
            raise InputError(
                f"{path}, near line {reader.line_num + 1}: not UTF-8 text. {dataset}'s files are UTF-8: download the "
                "file again, or convert it (iconv -t utf-8)."
            ) from None


def read_json_lines(path: Path, expected: str) -> Iterator[tuple[int, dict]]:
    """Yields (line number, object) for each non-blank line of a JSON-lines file (or .gz), streaming.

    `expected` shows what a line holds, for the error messages (e.g. '{"text": ..., "labels": [...]}').
    Raises InputError for a missing file, a line that is not a JSON object, text that is not
    UTF-8, or a gzip file that is cut short.
    """
    if not path.is_file():
        raise InputError(f"{path}: no such file (expected JSON lines of {expected}).")
    opener = gzip.open if path.suffix.lower() == ".gz" else open
    try:
        with opener(path, "rt", encoding="utf-8-sig") as lines:  # a byte-order mark is no part of the first line
            for line_number, line in enumerate(lines, start=1):
                if not line.strip():
                    continue
                try:
                    record = json.loads(line, parse_constant=refuse_constant)
                except json.JSONDecodeError as error:
                    raise InputError(
                        f"{path}, line {line_number}: not valid JSON ({error.msg}, column {error.colno})."
                    ) from None
                if not isinstance(record, dict):
                    raise InputError(f"{path}, line {line_number}: each line must be a JSON object, {expected}.")
                yield line_number, record
    except UnicodeDecodeError:
        raise InputError(f"{path}: not UTF-8 text; convert it (e.g. iconv -t utf-8).") from None
    except (EOFError, gzip.BadGzipFile, zlib.error) as error:
        raise InputError(f"{path}: the gzip stream is cut short or corrupt ({type(error).__name__}).") from None


def refuse_constant(name: str):
    """NaN and Infinity, which Python's json reads but JSON does not have."""
    raise json.JSONDecodeError(f"{name} is not a JSON value", name, 0)


def unique_keys(path: Path, pairs: list[tuple]) -> dict:
    """A JSON object's pairs as a dict; a key given twice is an error (json keeps the last silently)."""
    repeated = [key for key, count in Counter(key for key, _ in pairs).items() if count > 1]
    if repeated:
        raise InputError(f"{path}: {repeated[:5]} appear more than once; give each code once, with all its terms.")
    return dict(pairs)


def read_code_terms(path: Path) -> dict[str, list[str]]:
    """A JSON object {code: [description, synonym, ...]} (the code terms; they define the label set)."""
    if not path.is_file():
        raise InputError(f"{path}: no such file (expected JSON {{code: [description, synonym, ...]}}).")
    try:
        code_terms = json.loads(path.read_text(encoding="utf-8"), object_pairs_hook=functools.partial(unique_keys, path))
    except json.JSONDecodeError as error:
        raise InputError(f"{path}: not valid JSON ({error.msg}, line {error.lineno}).") from None
    except UnicodeDecodeError:
        raise InputError(f"{path}: not UTF-8 text; convert it (e.g. iconv -t utf-8).") from None
    if not isinstance(code_terms, dict) or not code_terms:
        raise InputError(f"{path}: expected a non-empty JSON object {{code: [description, synonym, ...]}}.")
    if any(not code.strip() for code in code_terms):
        raise InputError(f"{path}: a code is empty (\"\" or only spaces); every key must be a code.")
    bad = [code for code, terms in code_terms.items() if not isinstance(terms, list) or not all(isinstance(t, str) for t in terms)]
    if bad:
        raise InputError(f"{path}: codes {bad[:5]} need a list of strings (description first).")
    return code_terms
