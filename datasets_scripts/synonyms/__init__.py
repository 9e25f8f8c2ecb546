"""Code synonyms: code → [description, synonym, ...], from three sources, one module each —
`umls` (UMLS MRCONSO.RRF, licensed: the paper's source), `icd9` (the ICD-9-CM titles of your MIMIC
tables) and `icd10cm` (the CMS/NCHS tabular list) — and the cleaning they share, here. The command
line that writes a synonyms file is `python -m datasets_scripts.code_synonyms`.

Synonyms are shuffled with a seed (the authors' code shuffled them unseeded), so the same inputs
always give the same terms.
"""

import random
import statistics
import unicodedata
from collections.abc import Iterable


def strip_accents(text: str) -> str:
    return "".join(c for c in unicodedata.normalize("NFKD", text) if unicodedata.category(c) != "Mn")


def clean_term(term: str) -> str:
    """The authors' cleaning: lower-case, " nos " removed, hyphens → spaces, whitespace collapsed."""
    term = f" {term} ".lower().replace(" nos ", " ").replace("-", " ")
    return " ".join(term.split())


def keep_term(term: str) -> bool:
    return len(term.split()) >= 2 or len(term) >= 7


def finish(description: str | None, synonyms: Iterable[str], seed: int, code: str) -> list[str]:
    """[description, shuffled synonyms]: accent-stripped, lower-cased, de-duplicated, as the authors' UMLS recipe does."""
    unique = sorted({strip_accents(term).lower() for term in synonyms if term})
    random.Random(f"{seed}:{code}").shuffle(unique)
    return ([description] if description else []) + unique


def report(synonyms: dict[str, list[str]]) -> dict:
    """Codes covered, synonyms per code (besides the description), codes with none."""
    counts = [max(len(terms) - 1, 0) for terms in synonyms.values()]
    return {
        "codes": len(synonyms),
        "codes_with_terms": sum(1 for terms in synonyms.values() if terms),
        "synonyms_per_code_median": statistics.median(counts) if counts else 0,
        "synonyms_per_code_mean": round(statistics.fmean(counts), 2) if counts else 0,
        "codes_without_synonyms": sum(1 for count in counts if count == 0),
        "codes_without_terms": sorted(code for code, terms in synonyms.items() if not terms)[:20],
    }
