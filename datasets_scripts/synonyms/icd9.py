"""Open ICD-9-CM synonyms: the long and short titles of your MIMIC-III `D_ICD_DIAGNOSES` and
`D_ICD_PROCEDURES` tables (short titles are the abbreviations coders use); the long title is each
code's description."""

from collections.abc import Sequence
from pathlib import Path

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


def open_icd9_synonyms(codes: Sequence[str], long_titles: dict[str, str], short_titles: dict[str, str], seed: int = 0):
    return {
        code: finish(long_titles.get(code), [long_titles.get(code), short_titles.get(code)], seed, code)
        for code in codes
    }
