"""Peak memory and time of building `mimic4-icd10` from MIMIC-IV-shaped files of realistic size.

MIMIC-IV cannot be shipped, so this writes synthetic `hosp/` and `note/` folders: a discharge note
of `--note-characters` (default 7,600, about MIMIC-IV-Note's mean: 2.5 GB over its 331,793 notes)
for every admission of Edin et al.'s ICD-10 and ICD-9 split lists (331,605 admissions, 122,279 of
them ICD-10), gzipped as PhysioNet ships them; 15 diagnosis and 3 procedure codes per admission,
of its list's ICD version, drawn from 9,000 codes each; and the d_icd title tables. Then it builds
`mimic4-icd10` in a fresh process (the builder alone; code terms are not built) and reports the
time, the peak resident memory and the split sizes. Target: ≤ 2 minutes and ≤ 2 GB on a 2-core CPU.

    python benchmarks/mimic4_builder.py [--admissions N] [--work-dir /tmp/mimic4-benchmark]
"""

import argparse
import csv
import gzip
import json
import os
import random
import shutil
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, os.path.dirname(__file__))
from _measure import in_subprocess, measure  # noqa: E402

WORDS = "patient admitted history chest pain shortness breath denies fever chills cardiac catheterization".split()


def write_inputs(folder: Path, admissions: int | None, note_characters: int) -> float:
    from datasets_scripts.mimic_edin import split_lists

    rng = random.Random(0)
    versions = {hadm_id: 10 for hadm_id in split_lists("mimiciv_icd10_split.csv.gz")}
    versions |= {hadm_id: 9 for hadm_id in split_lists("mimiciv_icd9_split.csv.gz")}
    hadm_ids = sorted(versions)[:admissions]
    paragraph = " ".join(rng.choice(WORDS) for _ in range(note_characters // 8))[:note_characters]
    (folder / "hosp").mkdir(parents=True)
    (folder / "note").mkdir()

    def write(path, header, rows):
        with gzip.open(path, "wt", newline="", compresslevel=1) as file:
            writer = csv.writer(file)
            writer.writerow(header)
            writer.writerows(rows)

    write(folder / "note" / "discharge.csv.gz",
          ["note_id", "subject_id", "hadm_id", "note_type", "note_seq", "charttime", "storetime", "text"],
          ([f"{h}-DS-1", h, h, "DS", 1, "", "", f"Note {h}\n{paragraph}"] for h in hadm_ids))
    codes = {10: ([f"{rng.choice('ABCDEFGIJKLMNR')}{rng.randint(0, 99):02d}{rng.randint(0, 99)}" for _ in range(9000)],
                  [f"0{rng.randint(100000, 999999)}" for _ in range(9000)]),
             9: ([f"{rng.randint(10, 999)}{rng.randint(0, 99)}" for _ in range(9000)],
                 [f"{rng.randint(10, 99)}{rng.randint(0, 99)}" for _ in range(9000)])}
    for role, count, index in (("diagnoses", 15, 0), ("procedures", 3, 1)):
        write(folder / "hosp" / f"{role}_icd.csv.gz", ["subject_id", "hadm_id", "seq_num", "icd_code", "icd_version"],
              ([h, h, n, rng.choice(codes[versions[h]][index]), versions[h]] for h in hadm_ids for n in range(count)))
        titles = [(code, version, f"Title of {code}") for version in (9, 10) for code in codes[version][index]]
        write(folder / "hosp" / f"d_icd_{role}.csv.gz", ["icd_code", "icd_version", "long_title"], titles)
    return (folder / "note" / "discharge.csv.gz").stat().st_size / 2**30


def build(folder: str, cache: str) -> dict:
    from datasets_scripts.mimic_edin import MimicEdin

    result = {}

    def run():
        builder = MimicEdin(config_name="mimic4-icd10", data_dir=folder, cache_dir=cache)
        builder.download_and_prepare()
        result["sizes"] = {name: len(split) for name, split in builder.as_dataset().items()}

    return measure(run) | result


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--admissions", type=int, help="only the first N admissions (by hadm_id) of the lists")
    parser.add_argument("--note-characters", type=int, default=7600)
    parser.add_argument("--work-dir", default="/tmp/mimic4-benchmark")
    parser.add_argument("--build", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.build:
        print(json.dumps(build(*args.build)))
        return
    work = Path(args.work_dir)
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    start = time.perf_counter()
    size = write_inputs(work / "mimiciv", args.admissions, args.note_characters)
    notes = sum(1 for _ in gzip.open(work / "mimiciv" / "note" / "discharge.csv.gz", "rt")) if args.admissions else None
    print(f"wrote the inputs in {time.perf_counter() - start:.0f} s: discharge.csv.gz {size:.2f} GiB gzipped"
          + (f", {notes} lines" if notes else ""))
    load = subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()
    result = in_subprocess(__file__, "--build", str(work / "mimiciv"), str(work / "cache"), timeout=3600)
    print(f"mimic4-icd10 build: {result.get('seconds', float('nan')):.0f} s, peak memory added "
          f"{result.get('peak_mib', float('nan')):.0f} MiB, splits {result.get('sizes', result)}; load before: {load}")
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
