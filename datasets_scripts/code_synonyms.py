"""Writes a code synonyms file, {code: [description, synonym, ...]} as one JSON object, and prints a
small report: for the MIMIC-III codes of a setting (UMLS with `--mrconso`, as the paper; else the
open ICD-9-CM titles), or for a CodiEsp config (ICD-10-CM entries; in Spanish the train split's
evidence texts). The sources: `datasets_scripts.synonyms`.

The MIMIC result is cached in the datasets cache, keyed by the input files (their names, sizes and
modification times), the code set and the seed: a re-run is instant, and a changed input file is
read again.

    python -m datasets_scripts.code_synonyms --mimic-dir /path/to/mimic-iii --setting full \\
        [--mrconso /path/to/MRCONSO.RRF] --output synonyms.json
    python -m datasets_scripts.code_synonyms --codiesp codiesp-d-50 [--language es] --output terms.json
"""

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

import datasets

from .codiesp import Codiesp, codiesp_terms
from .errors import InputError
from .files import find_input, fingerprint, write_atomically
from .mimic_iii import MimicIII
from .synonyms import report
from .synonyms.icd9 import TITLE_FILES, open_icd9_synonyms, read_icd9_titles
from .synonyms.umls import check_mrconso_path, umls_synonyms


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
        synonyms = mimic_synonyms(args.mimic_dir, args.setting, args.mrconso, args.seed)
        write_json(args.output, synonyms)
    except InputError as error:
        sys.exit(f"error: {error}")
    print(json.dumps(report(synonyms), indent=1))


def mimic_synonyms(mimic_dir: Path, setting: str, mrconso: Path | None, seed: int) -> dict[str, list[str]]:
    """The synonyms of a MIMIC-III setting's codes (UMLS with `mrconso`, else the open ICD-9 titles), from the
    cache when its inputs have not changed."""
    if mrconso:
        check_mrconso_path(mrconso)
    builder = MimicIII(config_name=f"mimic3-{setting}", data_dir=str(mimic_dir))
    inputs = [*builder.input_paths.values(), *(find_input(mimic_dir, name) for name in TITLE_FILES)]
    inputs += [mrconso] if mrconso else []
    source = "umls" if mrconso else "open-icd9"
    cached = Path(datasets.config.HF_DATASETS_CACHE) / "msmn_code_synonyms" / (
        f"{source}-{setting}-seed{seed}-{fingerprint([p for p in inputs if p.is_file()])}.json"
    )
    if cached.is_file():
        return json.loads(cached.read_text(encoding="utf-8"))
    long_titles, short_titles = read_icd9_titles(mimic_dir)
    if mrconso:
        synonyms = umls_synonyms(builder.codes, long_titles, mrconso, seed)
    else:
        synonyms = open_icd9_synonyms(builder.codes, long_titles, short_titles, seed)
    write_json(cached, synonyms)
    return synonyms


if __name__ == "__main__":
    main()
