"""Code synonyms: code → [description, synonym, ...] as one JSON object, with a small report.

Sources:
- UMLS `MRCONSO.RRF` (licensed; the paper's source), exactly as the authors' `load_umls.py` and
  `match.py` do it (github.com/GanjinZero/ICD-MSMN): ICD9CM rows give code → CUI (the last row wins); every
  English string of that CUI, from any source, gives two synonyms, its lower-cased form and a
  cleaned one (" nos " removed, hyphens → spaces, whitespace collapsed); strings of fewer than
  2 words and 7 characters are dropped; accents are stripped and duplicates removed.
- Open, for ICD-9-CM: the long and short titles of your MIMIC-III `D_ICD_DIAGNOSES` and
  `D_ICD_PROCEDURES` tables (short titles are the abbreviations coders use).
- Open, for ICD-10-CM: the description, inclusion terms and "includes" notes of the CMS/NCHS
  tabular list (as shipped by the `simple-icd-10-cm` package). A code missing from that list
  (retired since) takes the entry of its nearest listed parent.

The description of each code (first term) is the long title of the `D_ICD_*` tables. Synonyms
are shuffled with a seed (the reference shuffled them unseeded), so the same inputs always give
the same file. The command caches its result in the datasets cache, keyed by the input files (their
names, sizes and modification times), the code set and the seed: a re-run is instant, and a
changed input file is read again.

    python -m datasets_scripts.code_synonyms --mimic-dir /path/to/mimic-iii --setting full \\
        [--mrconso /path/to/MRCONSO.RRF] --output synonyms.json
    python -m datasets_scripts.code_synonyms --codiesp codiesp-d-50 [--language es] --output terms.json
"""

import argparse
import json
import random
import re
import statistics
import sys
import unicodedata
from collections.abc import Iterable, Sequence
from pathlib import Path

import datasets

from .files import InputError, find_input, fingerprint, read_csv_rows, write_atomically
from .mimic_iii import format_icd9_code

TITLE_FILES = ("D_ICD_DIAGNOSES.csv", "D_ICD_PROCEDURES.csv")
MRCONSO_FIELDS = 18  # CUI|LAT|TS|LUI|STT|SUI|ISPREF|AUI|SAUI|SCUI|SDUI|SAB|TTY|CODE|STR|SRL|SUPPRESS|CVF|


def strip_accents(text: str) -> str:
    return "".join(c for c in unicodedata.normalize("NFKD", text) if unicodedata.category(c) != "Mn")


def clean_term(term: str) -> str:
    """The reference's cleaning: lower-case, " nos " removed, hyphens → spaces, whitespace collapsed."""
    term = f" {term} ".lower().replace(" nos ", " ").replace("-", " ")
    return " ".join(term.split())


def keep_term(term: str) -> bool:
    return len(term.split()) >= 2 or len(term) >= 7


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


def read_icd9_titles(mimic_dir: Path) -> tuple[dict[str, str], dict[str, str]]:
    """(code → long title, code → short title) from D_ICD_DIAGNOSES and D_ICD_PROCEDURES, CAML-formatted."""
    long_titles, short_titles = {}, {}
    for name, is_diagnosis in zip(TITLE_FILES, (True, False)):
        path = find_input(mimic_dir, name)
        for _, row in read_csv_rows(path, ["ICD9_CODE", "SHORT_TITLE", "LONG_TITLE"]):
            code = format_icd9_code(row["ICD9_CODE"], is_diagnosis)
            long_titles[code], short_titles[code] = row["LONG_TITLE"], row["SHORT_TITLE"]
    return long_titles, short_titles


def finish(description: str | None, synonyms: Iterable[str], seed: int, code: str) -> list[str]:
    """[description, shuffled synonyms]: accent-stripped, lower-cased, de-duplicated, as the authors' UMLS recipe does."""
    unique = sorted({strip_accents(term).lower() for term in synonyms if term})
    random.Random(f"{seed}:{code}").shuffle(unique)
    return ([description] if description else []) + unique


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
        # The reference puts the (lower-cased) description among the synonyms too.
        result[code] = finish(description, strings + ([description] if description else []), seed, code)
    return result


def open_icd9_synonyms(codes: Sequence[str], long_titles: dict[str, str], short_titles: dict[str, str], seed: int = 0):
    return {
        code: finish(long_titles.get(code), [long_titles.get(code), short_titles.get(code)], seed, code)
        for code in codes
    }


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


def candidate_code_terms(code_system: str | None, num_synonyms: int) -> dict[str, list[str]]:
    """code → terms for every code of `code_system` (None: none), as the candidates are scored later."""
    if code_system is None:
        return {}
    if code_system != "icd10cm":
        raise InputError(f"--candidate_codes {code_system!r}: the one code system at hand is icd10cm.")
    return open_icd10cm_synonyms(icd10cm_codes(), min_synonyms=num_synonyms - 1)[0]


def codiesp_synonyms(
    config_name: str, language: str = "en", num_synonyms: int = 4, seed: int = 0, data_dir: str | None = None,
    extra_codes: Sequence[str] = (),
) -> tuple[dict[str, list[str]], dict]:
    """Terms for the codes of a CodiEsp config, and a report.

    English diagnoses: ICD-10-CM entries (with the parent's title for codes with fewer than M−1
    terms; retired codes take their parent's entry). Spanish, and procedures (no open ICD-10-PCS
    titles are at hand): the train split's CodiEsp-X evidence texts of the code, most frequent
    first, then the English terms. Dev and test evidence is never used.
    """
    from .codiesp import Codiesp, spanish_evidence_terms

    builder = Codiesp(config_name=config_name, language=language, data_dir=data_dir, extra_codes=extra_codes)
    codes, diagnoses = builder.codes, builder.config.task == "d"
    english, fallbacks = open_icd10cm_synonyms(codes, seed, num_synonyms - 1) if diagnoses else ({}, {})
    if language == "en" and diagnoses:
        synonyms = english
    else:
        evidence = spanish_evidence_terms(codes, builder.splits["train"])
        synonyms = {}
        for code in codes:
            terms = evidence[code] + english.get(code, [])
            if not terms and not diagnoses:
                terms = [code]  # a procedure never seen with evidence in train: only its code
            unique = list(dict.fromkeys(terms))
            synonyms[code] = unique
    summary = report(synonyms) | {"codes_from_parent_entry": len(fallbacks)}
    return synonyms, summary


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


def write_json(path: Path, content) -> None:
    write_atomically(path, lambda file: file.write(json.dumps(content, ensure_ascii=False, indent=1).encode("utf-8")))


def main(argv: Sequence[str] | None = None) -> None:
    from .mimic_iii import MimicIII

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--mimic-dir", type=Path, help="your MIMIC-III v1.4 folder")
    parser.add_argument("--codiesp", choices=["codiesp-d-50", "codiesp-d", "codiesp-p"], help="terms for a CodiEsp config")
    parser.add_argument("--language", choices=["en", "es"], default="en", help="with --codiesp")
    parser.add_argument("--num-synonyms", type=int, default=4, help="with --codiesp: M, for the parent-title fill")
    parser.add_argument("--setting", choices=["full", "50"], default="50", help="the code set")
    parser.add_argument("--mrconso", type=Path, help="UMLS MRCONSO.RRF; without it, the open ICD-9 titles")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--output", type=Path, required=True)
    args = parser.parse_args(argv)
    if args.codiesp:
        synonyms, summary = codiesp_synonyms(args.codiesp, args.language, args.num_synonyms, args.seed)
        write_json(args.output, synonyms)
        print(json.dumps(summary, indent=1))
        return
    if args.mimic_dir is None:
        parser.error("give --mimic-dir (MIMIC-III codes) or --codiesp (CodiEsp codes)")
    try:
        builder = MimicIII(config_name=f"mimic3-{args.setting}", data_dir=str(args.mimic_dir))
        inputs = [*builder.input_paths.values(), *(find_input(args.mimic_dir, name) for name in TITLE_FILES)]
        inputs += [args.mrconso] if args.mrconso else []
        source = "umls" if args.mrconso else "open-icd9"
        cached = Path(datasets.config.HF_DATASETS_CACHE) / "msmn_code_synonyms" / (
            f"{source}-{args.setting}-seed{args.seed}-{fingerprint([p for p in inputs if p.is_file()])}.json"
        )
        if args.mrconso and not args.mrconso.is_file():
            raise InputError(f"{args.mrconso}: no such file; give the MRCONSO.RRF of your UMLS release.")
        if cached.is_file():
            synonyms = json.loads(cached.read_text(encoding="utf-8"))
        else:
            long_titles, short_titles = read_icd9_titles(args.mimic_dir)
            if args.mrconso:
                synonyms = umls_synonyms(builder.codes, long_titles, args.mrconso, args.seed)
            else:
                synonyms = open_icd9_synonyms(builder.codes, long_titles, short_titles, args.seed)
            write_json(cached, synonyms)
    except InputError as error:
        sys.exit(f"error: {error}")
    write_json(args.output, synonyms)
    print(json.dumps(report(synonyms), indent=1))


if __name__ == "__main__":
    main()
