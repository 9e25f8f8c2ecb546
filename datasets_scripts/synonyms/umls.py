"""UMLS synonyms, as the authors' `load_umls.py` and `match.py` do it (github.com/GanjinZero/ICD-MSMN):
rows of the code system's vocabularies (ICD9CM; or ICD10CM and ICD10PCS) give code → CUI (the last
row wins); every English string of that CUI, from any source, gives two synonyms, its lower-cased
form and a cleaned one (" nos " removed, hyphens → spaces, whitespace collapsed); strings of fewer
than 2 words and 7 characters are dropped; accents are stripped and duplicates removed. UMLS is
licensed: none of it ships with this package."""

from collections.abc import Sequence
from pathlib import Path

from ..errors import InputError
from . import clean_term, finish, keep_term

MRCONSO_FIELDS = 18  # CUI|LAT|TS|LUI|STT|SUI|ISPREF|AUI|SAUI|SCUI|SDUI|SAB|TTY|CODE|STR|SRL|SUPPRESS|CVF|


def read_mrconso(path: Path, sources: Sequence[str] = ("ICD9CM",)) -> tuple[dict[str, str], dict[str, set[str]]]:
    """(code of the `sources` vocabularies → CUI, CUI → its English strings, raw lower-cased and
    cleaned), streaming. ICD9CM codes are dotted as MIMIC-III's, ICD10CM as ICD-10-CM's, ICD10PCS undotted."""
    if not path.is_file():
        raise InputError(f"{path}: no such file; give the MRCONSO.RRF of your UMLS Metathesaurus release.")
    code_to_cui, cui_strings = {}, {}
    with open(path, encoding="utf-8") as lines:
        for line_number, line in enumerate(lines, start=1):
            fields = line.strip().split("|")
            if len(fields) not in (MRCONSO_FIELDS, MRCONSO_FIELDS + 1):
                raise InputError(
                    f"{path}, line {line_number}: {len(fields)} '|'-separated fields, expected {MRCONSO_FIELDS} "
                    "(CUI|LAT|…|CODE|STR|…). Is this an MRCONSO.RRF file, unmodified?"
                )
            cui, language, source, code, string = fields[0], fields[1], fields[11], fields[13], fields[14]
            if source in sources:
                code_to_cui[code] = cui
            if language == "ENG":
                cui_strings.setdefault(cui, set()).update((string.lower(), clean_term(string)))
    return code_to_cui, cui_strings


def umls_synonyms(
    codes: Sequence[str], descriptions: dict[str, str], mrconso: Path, seed: int = 0, sources: Sequence[str] = ("ICD9CM",)
) -> dict[str, list[str]]:
    """The authors' UMLS recipe: each code's description, then the English strings of its CUI."""
    code_to_cui, cui_strings = read_mrconso(mrconso, sources)

    def strings_of(code):
        cui = code_to_cui.get(code)
        return [s for s in cui_strings.get(cui, ()) if keep_term(s)] if cui else []

    result = {}
    for code in codes:
        lookup = code if code in descriptions or not code.endswith(".") else code[:-1]
        description = descriptions.get(lookup)
        strings = strings_of(lookup)
        # The authors' code puts the (lower-cased) description among the synonyms too.
        result[code] = finish(description, strings + ([description] if description else []), seed, code)
    return result
