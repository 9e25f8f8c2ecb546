"""Writes a code synonyms file, {code: [description, synonym, ...]} as one JSON object, and prints a
small report: for the MIMIC-III codes of a setting (UMLS with `--mrconso`, as the paper; else the
open ICD-9-CM titles), or for a CodiEsp config (ICD-10-CM entries; in Spanish the train split's
evidence texts). The sources: `datasets_scripts.synonyms`.

The MIMIC result is cached in the datasets cache, keyed by the input files (their names, sizes and
modification times), the code set and the seed: a re-run is instant, and a changed input file is
read again.

    python -m datasets_scripts.code_synonyms --mimic-dir /path/to/mimic-iii --setting full \\
        [--mrconso /path/to/MRCONSO.RRF] [--icd9-descriptions ICD9_descriptions] --output synonyms.json
    python -m datasets_scripts.code_synonyms --mimic-dir /path/to/mimic-iii --setting full --recipe authors \\
        --icd9-descriptions ICD9_descriptions (--mrconso MRCONSO.RRF | --authors-synonyms icd_mimic3_random_sort.json) \\
        --output synonyms.json
    python -m datasets_scripts.code_synonyms --codiesp codiesp-d-50 [--language es] --output terms.json
"""

import argparse
import json
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import datasets

from .codiesp import Codiesp, codiesp_terms
from .errors import InputError
from .files import find_input, fingerprint, write_atomically
from .mimic_iii import MimicIII
from .synonyms import report
from .synonyms.icd9 import TITLE_FILES, authors_file_terms, open_icd9_synonyms, read_authors_synonyms
from .synonyms.icd9 import read_caml_descriptions, read_icd9_titles
from .synonyms.umls import authors_umls_synonyms, check_mrconso_path, umls_synonyms


def write_json(path: Path, content) -> None:
    try:
        write_atomically(path, lambda file: file.write(json.dumps(content, ensure_ascii=False, indent=1).encode("utf-8")))
    except OSError as error:  # nothing is left behind: write_atomically removes its .partial
        raise InputError(f"{path}: cannot be written ({error.strerror or type(error).__name__}).") from None


def check_output(path: Path) -> None:
    """--output names a file that can be written, before any work."""
    if path.is_dir():
        raise InputError(f"--output {path}: a folder; give a file name (e.g. {path / 'terms.json'}).")
    if path.parent.exists() and not path.parent.is_dir():
        raise InputError(f"--output {path}: {path.parent} is a file, not a folder.")


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--mimic-dir", type=Path, help="your MIMIC-III v1.4 folder")
    parser.add_argument("--codiesp", choices=["codiesp-d-50", "codiesp-d", "codiesp-p"], help="terms for a CodiEsp config")
    parser.add_argument("--language", choices=["en", "es"], default="en", help="with --codiesp")
    parser.add_argument("--num-synonyms", type=int, default=4, help="with --codiesp: M, for the parent-title fill")
    parser.add_argument("--setting", choices=["full", "50"], default="50", help="the code set")
    parser.add_argument("--mrconso", type=Path, help="UMLS MRCONSO.RRF; without it, the open ICD-9 titles")
    parser.add_argument("--icd9-descriptions", type=Path,
                        help="CAML's mimicdata/ICD9_descriptions: descriptions of the codes MIMIC-III's tables lack")
    parser.add_argument("--recipe", choices=["package", "authors"], default="package",
                        help="authors: their rules for codes without a description (docs/training.md)")
    parser.add_argument("--authors-synonyms", type=Path,
                        help="with --recipe authors: their {code: [strings]} file (icd_mimic3_random_sort.json) "
                             "instead of --mrconso")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--output", type=Path, required=True)
    args = parser.parse_args(argv)
    if args.mimic_dir is None and not args.codiesp:
        parser.error("give --mimic-dir (MIMIC-III codes) or --codiesp (CodiEsp codes)")
    try:
        check_output(args.output)
        if args.codiesp:
            synonyms, summary = codiesp_terms(Codiesp(config_name=args.codiesp, language=args.language),
                                              args.num_synonyms, args.seed)
            write_json(args.output, synonyms)
            print(json.dumps(summary, indent=1))
            return
        sources = SynonymSources(args.mrconso, args.icd9_descriptions, args.recipe, args.authors_synonyms)
        synonyms = mimic_synonyms(args.mimic_dir, args.setting, sources, args.seed)
        write_json(args.output, synonyms)
    except InputError as error:
        sys.exit(f"error: {error}")
    print(json.dumps(report(synonyms), indent=1))


@dataclass(frozen=True)
class SynonymSources:
    """Where MIMIC-III codes' synonyms come from, and by whose rules."""

    mrconso: Path | None = None
    icd9_descriptions: Path | None = None
    recipe: str = "package"
    authors_synonyms: Path | None = None

    def check(self) -> None:
        if self.authors_synonyms and (self.recipe != "authors" or self.mrconso):
            raise InputError("--authors-synonyms: the authors' own synonyms replace UMLS; give it with --recipe authors "
                             "and without --mrconso.")
        if self.recipe == "authors" and not (self.icd9_descriptions and (self.mrconso or self.authors_synonyms)):
            raise InputError("--recipe authors: give --icd9-descriptions (CAML's mimicdata/ICD9_descriptions, their "
                             "fallback) and --mrconso (UMLS) or --authors-synonyms (their icd_mimic3_random_sort.json).")
        if self.mrconso:
            check_mrconso_path(self.mrconso)

    def files(self) -> list[Path]:
        return [path for path in (self.mrconso, self.icd9_descriptions, self.authors_synonyms) if path]


def mimic_synonyms(mimic_dir: Path, setting: str, sources: SynonymSources, seed: int) -> dict[str, list[str]]:
    """The synonyms of a MIMIC-III setting's codes (UMLS with `mrconso`, the authors' file, else the open ICD-9
    titles), from the cache when its inputs have not changed."""
    sources.check()
    builder = MimicIII(config_name=f"mimic3-{setting}", data_dir=str(mimic_dir))
    inputs = [*builder.input_paths.values(), *(find_input(mimic_dir, name) for name in TITLE_FILES), *sources.files()]
    source = "authors-file" if sources.authors_synonyms else "umls" if sources.mrconso else "open-icd9"
    cached = Path(datasets.config.HF_DATASETS_CACHE) / "msmn_code_synonyms" / (
        f"{source}-{sources.recipe}-{setting}-seed{seed}-{fingerprint([p for p in inputs if p.is_file()])}.json"
    )
    if cached.is_file():
        return json.loads(cached.read_text(encoding="utf-8"))
    long_titles, short_titles = read_icd9_titles(mimic_dir)
    descriptions = long_titles
    if sources.icd9_descriptions:  # MIMIC-III's titles win, as in CAML's and the authors' code
        descriptions = read_caml_descriptions(sources.icd9_descriptions) | long_titles
    if sources.authors_synonyms:
        synonyms = authors_file_terms(builder.codes, descriptions, read_authors_synonyms(sources.authors_synonyms))
    elif sources.mrconso:
        recipe = authors_umls_synonyms if sources.recipe == "authors" else umls_synonyms
        synonyms = recipe(builder.codes, descriptions, sources.mrconso, seed)
    else:
        synonyms = open_icd9_synonyms(builder.codes, descriptions, short_titles, seed)
    write_json(cached, synonyms)
    return synonyms


if __name__ == "__main__":
    main()
