"""UMLS synonyms, as the authors' `load_umls.py` and `match.py` do it (github.com/GanjinZero/ICD-MSMN):
rows of the code system's vocabularies (ICD9CM; or ICD10CM and ICD10PCS) give code → CUI (the last
row wins); every English string of that CUI, from any source, gives two synonyms, its lower-cased
form and a cleaned one (" nos " removed, hyphens → spaces, whitespace collapsed); strings of fewer
than 2 words and 7 characters are dropped; accents are stripped and duplicates removed. UMLS is
licensed: none of it ships with this package."""

import gzip
import zlib
from collections.abc import Sequence
from pathlib import Path

from ..errors import InputError
from . import clean_term, finish, keep_term

MRCONSO_FIELDS = 18  # CUI|LAT|TS|LUI|STT|SUI|ISPREF|AUI|SAUI|SCUI|SDUI|SAB|TTY|CODE|STR|SRL|SUPPRESS|CVF|


def read_mrconso(path: Path, sources: Sequence[str] = ("ICD9CM",)) -> tuple[dict[str, str], dict[str, set[str]]]:
    """(code of the `sources` vocabularies → CUI, CUI → its English strings, raw lower-cased and
    cleaned), streaming, from MRCONSO.RRF or MRCONSO.RRF.gz. ICD9CM codes are dotted as MIMIC-III's,
    ICD10CM as ICD-10-CM's, ICD10PCS undotted. A line that is not 18 '|'-terminated fields, text that is
    not UTF-8, and a file without any row of `sources` are errors that name the file and line."""
    check_mrconso_path(path)
    code_to_cui, cui_strings, line_number = {}, {}, 0
    opener = gzip.open if path.suffix.lower() == ".gz" else open
    try:
        with opener(path, "rb") as lines:
            for line_number, line in enumerate(lines, start=1):
                fields = mrconso_fields(line, path, line_number)
                cui, language, source, code, string = fields[0], fields[1], fields[11], fields[13], fields[14]
                if source in sources:
                    code_to_cui[code] = cui
                if language == "ENG":
                    cui_strings.setdefault(cui, set()).update((string.lower(), clean_term(string)))
    except (EOFError, gzip.BadGzipFile, zlib.error) as error:
        raise InputError(f"{path}: the gzip stream is cut short or corrupt ({type(error).__name__}).") from None
    if not code_to_cui:
        raise InputError(f"{path}: holds no row of {', '.join(sources)} ({line_number:,} lines read), so "
                         "no code would get a UMLS synonym. Give the whole MRCONSO.RRF of a UMLS release with those "
                         "vocabularies.")
    return code_to_cui, cui_strings


def check_mrconso_path(path: Path) -> None:
    """`path` is an MRCONSO file, or a clear error (a UMLS folder is named with the file it holds)."""
    if path.is_dir():
        inside = next((candidate for candidate in (path / "MRCONSO.RRF", path / "META" / "MRCONSO.RRF")
                       if candidate.is_file()), None)
        hint = f" ({inside} is there)" if inside else " (it is in the release's META/ folder)"
        raise InputError(f"{path}: a folder; give the MRCONSO.RRF file itself{hint}.")
    if not path.is_file():
        raise InputError(f"{path}: no such file; give the MRCONSO.RRF of your UMLS Metathesaurus release.")


def mrconso_fields(line: bytes, path: Path, line_number: int) -> list[str]:
    """The 18 fields of an MRCONSO line (CUI|LAT|…|CODE|STR|…|CVF|, each followed by '|')."""
    try:
        text = line.decode("utf-8").rstrip("\r\n")
    except UnicodeDecodeError:
        raise InputError(f"{path}, line {line_number}: not UTF-8 text; UMLS ships MRCONSO.RRF in UTF-8: extract it "
                         "again (MetamorphoSys), or convert it (iconv -t utf-8).") from None
    fields = text.split("|")
    if len(fields) != MRCONSO_FIELDS + 1 or fields[-1]:
        found = len(fields) - 1 if text.endswith("|") else len(fields)
        raise InputError(
            f"{path}, line {line_number}: {found} '|'-separated fields, expected {MRCONSO_FIELDS}, each followed by "
            "'|' (CUI|LAT|…|CODE|STR|…). Is this an MRCONSO.RRF file, unmodified?"
        )
    return fields


def umls_strings(code: str, code_to_cui: dict[str, str], cui_strings: dict[str, set[str]]) -> list[str]:
    """The kept strings (2 words or 7 characters) of the code's CUI; none for a code without one."""
    cui = code_to_cui.get(code)
    return [string for string in cui_strings.get(cui, ()) if keep_term(string)] if cui else []


def umls_synonyms(
    codes: Sequence[str], descriptions: dict[str, str], mrconso: Path, seed: int = 0, sources: Sequence[str] = ("ICD9CM",)
) -> dict[str, list[str]]:
    """The package's UMLS recipe: each code's description, then the English strings of its CUI. A code ending in
    "." without a description of its own is looked up without the dot; a code without any description has no
    first term of its own (training takes a synonym as its description)."""
    code_to_cui, cui_strings = read_mrconso(mrconso, sources)
    result = {}
    for code in codes:
        lookup = code if code in descriptions or not code.endswith(".") else code[:-1]
        description = descriptions.get(lookup)
        strings = umls_strings(lookup, code_to_cui, cui_strings)
        # The authors' code puts the (lower-cased) description among the synonyms too.
        result[code] = finish(description, strings + ([description] if description else []), seed, code)
    return result


def authors_umls_synonyms(codes: Sequence[str], descriptions: dict[str, str], mrconso: Path, seed: int = 0):
    """The authors' UMLS recipe (their match.py, then their terms' first entry). The synonyms: a code with a
    description gets it and its CUI's strings; a code ending in "." without one, those of the code without the
    dot if that has a description, else none; any other code its CUI's strings alone. The first term is the
    code's own description, else the code string itself ("799.9", which may tokenise to nothing)."""
    code_to_cui, cui_strings = read_mrconso(mrconso, ("ICD9CM",))
    result = {}
    for code in codes:
        lookup = code[:-1] if code not in descriptions and code.endswith(".") else code
        if lookup in descriptions:
            found = [descriptions[lookup], *umls_strings(lookup, code_to_cui, cui_strings)]
        else:
            found = [] if lookup != code else umls_strings(code, code_to_cui, cui_strings)
        result[code] = [descriptions.get(code, code), *finish(None, found, seed, code)]
    return result
