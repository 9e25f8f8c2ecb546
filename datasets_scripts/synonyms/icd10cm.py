"""Open ICD-10-CM synonyms: the description, inclusion terms and "includes" notes of the CMS/NCHS
tabular list (as shipped by the `simple-icd-10-cm` package); a code missing from the list (retired
since) takes the entry of its nearest listed parent. Also every ICD-10-CM code, as the candidates a
model can rank."""

import re
from collections.abc import Sequence
from pathlib import Path

from ..errors import InputError
from ..files import read_code_terms
from . import finish


def candidate_code_terms(candidates: str | None, num_synonyms: int) -> tuple[dict[str, list[str]], str | None]:
    """(code → [description, synonyms…] of every candidate code, the code system's name) of
    `candidates`: "icd10cm" (every ICD-10-CM code, with the terms of `open_icd10cm_synonyms`), a JSON
    file {code: [description, synonyms…]} of any code system, or None (no candidates)."""
    if candidates is None:
        return {}, None
    if candidates == "icd10cm":
        return open_icd10cm_synonyms(icd10cm_codes(), min_synonyms=num_synonyms - 1)[0], "ICD-10-CM"
    path = Path(candidates)
    if path.suffix.lower() != ".json":
        raise InputError(f"--candidate_codes {candidates!r}: give icd10cm, or a JSON file {{code: [description, "
                         "synonyms…]}} of your code system.")
    code_terms = read_code_terms(path)
    without_terms = [code for code, terms in code_terms.items() if not any(term.strip() for term in terms)]
    if without_terms:
        raise InputError(f"{path}: codes {without_terms[:5]} have no terms; each candidate code needs its description "
                         "(and any synonyms): the model scores a code from its terms.")
    return code_terms, path.stem


def import_icd10cm():
    """The `simple_icd_10_cm` module (imported on first use: only ICD-10-CM terms need it)."""
    import warnings

    with warnings.catch_warnings():  # the package imports the deprecated pkg_resources
        warnings.simplefilter("ignore")
        import simple_icd_10_cm

    return simple_icd_10_cm


def icd10cm_entry(code: str) -> tuple[str | None, list[str], str | None]:
    """(description, inclusion terms and includes, the code whose entry was used) from the ICD-10-CM
    tabular list; a code not in the list falls back to its nearest listed parent (None if none)."""
    icd10cm = import_icd10cm()
    listed = code.upper()
    while listed and not icd10cm.is_valid_item(listed):
        listed = listed[:-1].rstrip(".")
    if not listed:
        return None, [], None
    terms = icd10cm.get_inclusion_term(listed) + icd10cm.get_includes(listed)
    return icd10cm.get_description(listed), terms, listed


def open_icd10cm_synonyms(
    codes: Sequence[str], seed: int = 0, min_synonyms: int = 0
) -> tuple[dict[str, list[str]], dict[str, str]]:
    """(code → [description, synonyms…], code → the parent whose entry it took, for retired codes).

    A code with fewer than `min_synonyms` synonyms also gets its parent's title (e.g. the category
    "R50 Fever of other and unknown origin" for R50.9).
    """
    icd10cm = import_icd10cm()
    synonyms, fallbacks = {}, {}
    for code in codes:
        description, terms, listed = icd10cm_entry(code)
        if listed is not None and listed != code.upper().rstrip("."):
            fallbacks[code] = listed
        if listed is not None and len(terms) < min_synonyms and icd10cm.get_parent(listed):
            parent_title = icd10cm.get_description(icd10cm.get_parent(listed))
            terms = terms + [re.sub(r"\s*\([A-Z0-9.]+-[A-Z0-9.]+\)$", "", parent_title)]  # drop a block's "(I10-I1A)"
        synonyms[code] = finish(description, terms, seed, code)
    return synonyms, fallbacks


def icd10cm_codes() -> list[str]:
    """Every ICD-10-CM code of the tabular list that a coder can assign: its categories and
    subcategories, billable or not (CodiEsp's coders also used non-billable ones, e.g. C50.9),
    without chapters and blocks, each once: 98,186 codes in `simple-icd-10-cm` 1.5 (its list holds 39
    of them twice)."""
    icd10cm = import_icd10cm()
    codes = [code for code in icd10cm.get_all_codes(with_dots=True) if icd10cm.is_category(code) or icd10cm.is_subcategory(code)]
    return list(dict.fromkeys(codes))
