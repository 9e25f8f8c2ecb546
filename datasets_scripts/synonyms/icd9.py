"""Open ICD-9-CM synonyms: the long and short titles of your MIMIC-III `D_ICD_DIAGNOSES` and
`D_ICD_PROCEDURES` tables (short titles are the abbreviations coders use); the long title is each
code's description."""

import json
from collections.abc import Sequence
from pathlib import Path

from ..errors import InputError
from ..files import find_input, read_csv_rows
from ..icd_codes import format_icd9_code
from . import finish

TITLE_FILES = ("D_ICD_DIAGNOSES.csv", "D_ICD_PROCEDURES.csv")


def read_icd9_titles(mimic_dir: Path) -> tuple[dict[str, str], dict[str, str]]:
    """(code → long title, code → short title) from D_ICD_DIAGNOSES and D_ICD_PROCEDURES, CAML-formatted."""
    long_titles, short_titles = {}, {}
    for name, is_diagnosis in zip(TITLE_FILES, (True, False)):
        path = find_input(mimic_dir, name)
        for _, row in read_csv_rows(path, ["ICD9_CODE", "SHORT_TITLE", "LONG_TITLE"]):
            code = format_icd9_code(row["ICD9_CODE"], is_diagnosis)
            long_titles[code], short_titles[code] = row["LONG_TITLE"], row["SHORT_TITLE"]
    return long_titles, short_titles


def read_caml_descriptions(path: Path) -> dict[str, str]:
    """Code → description of CAML's `ICD9_descriptions` (mimicdata/ in github.com/jamesmullenbach/caml-mimic, MIT;
    the ICD-9-CM titles, public domain): a line is a dotted code, then its description, split on whitespace as
    the authors read it; a code's first line wins. The authors' fallback for codes without a MIMIC-III title."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise InputError(f"--icd9-descriptions {path}: no such file; it is mimicdata/ICD9_descriptions of CAML's "
                         "repository (github.com/jamesmullenbach/caml-mimic).") from None
    except UnicodeDecodeError as error:
        raise InputError(f"--icd9-descriptions {path}: not UTF-8 text (byte {error.start}); is it CAML's "
                         "ICD9_descriptions?") from None
    descriptions = {}
    for fields in (line.split() for line in text.splitlines()):
        if fields:
            descriptions.setdefault(fields[0], " ".join(fields[1:]))
    if not descriptions:
        raise InputError(f"--icd9-descriptions {path}: empty; give CAML's ICD9_descriptions.")
    return descriptions


def read_authors_synonyms(path: Path) -> dict[str, list[str]]:
    """The authors' committed synonym file (embedding/icd_mimic3_random_sort.json of their repository): a JSON
    object code → [strings], each list in the order training takes it."""
    try:
        synonyms = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise InputError(f"--authors-synonyms {path}: no such file; it is embedding/icd_mimic3_random_sort.json of "
                         "the authors' repository (github.com/GanjinZero/ICD-MSMN).") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise InputError(f"--authors-synonyms {path}: not a JSON file ({type(error).__name__}).") from None
    if not isinstance(synonyms, dict) or not all(
            isinstance(terms, list) and all(isinstance(term, str) for term in terms) for terms in synonyms.values()):
        raise InputError(f"--authors-synonyms {path}: expected a JSON object code → [strings], as their "
                         "icd_mimic3_random_sort.json.")
    return synonyms


def authors_file_terms(codes: Sequence[str], descriptions: dict[str, str], synonyms: dict[str, list[str]]):
    """The authors' terms from their synonym file: the code's description (the code string where it has none),
    then the file's strings in their order; `train.py --term_seed -1` then takes the first M − 1, cyclically."""
    return {code: [descriptions.get(code, code), *synonyms.get(code, [])] for code in codes}


def open_icd9_synonyms(codes: Sequence[str], long_titles: dict[str, str], short_titles: dict[str, str], seed: int = 0):
    return {
        code: finish(long_titles.get(code), [long_titles.get(code), short_titles.get(code)], seed, code)
        for code in codes
    }
