"""Peak memory and time of building the MIMIC-III full splits from a NOTEEVENTS of realistic size.

MIMIC-III cannot be shipped, so this writes a synthetic NOTEEVENTS.csv: one discharge summary of
MIMIC's average length (~9,600 characters) for every admission of the CAML full split lists
(52,726), and `--other-notes` notes of other categories (~3,000 characters) that the builder must
stream past; plus DIAGNOSES_ICD/PROCEDURES_ICD with 15 codes per admission. Then it builds
`mimic3-full` (sizes not checked) in a fresh process and reports its peak resident memory.

    python benchmarks/mimic_builder.py [--other-notes 1000000] [--work-dir /tmp/mimic-benchmark]
"""

import argparse
import csv
import json
import os
import random
import shutil
import sys
import time
from pathlib import Path

sys.path.insert(0, os.path.dirname(__file__))
from _measure import in_subprocess, measure  # noqa: E402

WORDS = "patient admitted history chest pain shortness breath denies fever chills cardiac catheterization".split()


def write_inputs(folder: Path, other_notes: int) -> float:
    from datasets_scripts.mimic_iii import split_hadm_ids

    rng = random.Random(0)
    hadm_ids = [hadm_id for ids in split_hadm_ids("full").values() for hadm_id in ids]
    paragraph = " ".join(rng.choice(WORDS) for _ in range(1200))  # ~9,600 characters
    header = ["ROW_ID", "SUBJECT_ID", "HADM_ID", "CHARTDATE", "CHARTTIME", "STORETIME", "CATEGORY", "DESCRIPTION", "CGID", "ISERROR", "TEXT"]
    with open(folder / "NOTEEVENTS.csv", "w", newline="") as file:
        writer = csv.writer(file)
        writer.writerow(header)
        for row, hadm_id in enumerate(hadm_ids):
            writer.writerow([row, hadm_id, hadm_id, "", "", "", "Discharge summary", "Report", "", "", f"[**{row}**]\n{paragraph}"])
        for row in range(other_notes):
            writer.writerow([row, 1, rng.choice(hadm_ids), "", "", "", "Nursing", "", "", "", paragraph[: 3000]])
    codes = [f"{rng.randint(10, 999)}{rng.randint(0, 99)}" for _ in range(9000)]
    for name in ("DIAGNOSES_ICD.csv", "PROCEDURES_ICD.csv"):
        with open(folder / name, "w", newline="") as file:
            writer = csv.writer(file)
            writer.writerow(["ROW_ID", "SUBJECT_ID", "HADM_ID", "SEQ_NUM", "ICD9_CODE"])
            for hadm_id in hadm_ids:
                writer.writerows([[0, 1, hadm_id, i, rng.choice(codes)] for i in range(15 if name.startswith("D") else 3)])
    return (folder / "NOTEEVENTS.csv").stat().st_size / 2**30


def build(folder: str, cache: str) -> dict:
    from datasets_scripts.mimic_iii import MimicIII

    result = {}

    def run():
        builder = MimicIII(config_name="mimic3-full", data_dir=folder, cache_dir=cache)
        builder.download_and_prepare()
        result["sizes"] = {name: len(split) for name, split in builder.as_dataset().items()}

    return measure(run) | result


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--other-notes", type=int, default=1_000_000)
    parser.add_argument("--work-dir", type=Path, default=Path("/tmp/mimic-builder-benchmark"))
    parser.add_argument("--one", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        print(json.dumps(build(*args.one)))
        return
    shutil.rmtree(args.work_dir, ignore_errors=True)
    (args.work_dir / "mimic").mkdir(parents=True)
    start = time.perf_counter()
    gigabytes = write_inputs(args.work_dir / "mimic", args.other_notes)
    print(f"synthetic NOTEEVENTS.csv: {gigabytes:.2f} GiB, written in {time.perf_counter() - start:.0f} s")
    first = in_subprocess(__file__, "--one", str(args.work_dir / "mimic"), str(args.work_dir / "cache"))
    print(f"build: {first['seconds']:.0f} s, peak memory {first['peak_mib'] / 1024:.2f} GiB, splits {first['sizes']}")
    again = in_subprocess(__file__, "--one", str(args.work_dir / "mimic"), str(args.work_dir / "cache"))
    print(f"again (cached): {again['seconds']:.1f} s, peak memory {again['peak_mib'] / 1024:.2f} GiB")
    shutil.rmtree(args.work_dir)


if __name__ == "__main__":
    main()
