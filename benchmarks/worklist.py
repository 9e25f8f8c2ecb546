"""The worklist's speed: the median (and 95th percentile) of claim-next + submit with 100,000 notes in the
database, half of them submitted, on SQLite and on PostgreSQL (a throw-away server of .ci/postgresql); and,
given a checkpoint, `msmn-worklist load` against `msmn-code` on the same notes (notes/s, loading included),
and the resident memory of a load of many notes as it goes.

    python benchmarks/worklist.py                                   # claims and submits, both databases
    python benchmarks/worklist.py --model msmn-codiesp-d-50         # also loading, on the CodiEsp test reports,
                                                                    # and memory over --load-notes (20,000)
"""

import argparse
import gzip
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from sqlalchemy import update

from msmn.worklist.database import open_worklist
from msmn.worklist.schema import Note
from msmn.worklist.store import Worklist

ROOT = Path(__file__).resolve().parents[1]
WORDS = "patient admitted with chest pain troponin raised history of hypertension and type two diabetes".split()


def filled_worklist(db: str, count: int) -> Worklist:
    """`count` notes of about 1,000 characters with two suggestions each, the first half submitted."""
    worklist = Worklist(open_worklist(db))
    text = " ".join(WORDS * 7)
    for start in range(0, count, 2000):
        worklist.add_notes([{"id": f"n{i:06d}", "text": text, "codes": [
            {"code": "I10", "probability": 0.9, "synonym": "hypertension", "evidence": [{"start": 0, "end": 7, "weight": 0.5}]},
            {"code": "E11.9", "probability": 0.7, "synonym": None, "evidence": []}]}
            for i in range(start, min(start + 2000, count))], "benchmark-model")
    with worklist.engine.begin() as connection:
        connection.execute(update(Note).where(Note.id <= count // 2).values(submitted_by="earlier", seconds=60.0,
                                                                            submitted_at=Note.loaded_at))
    return worklist


def claim_and_submit_ms(worklist: Worklist, rounds: int) -> list[float]:
    times = []
    for _ in range(rounds):
        start = time.perf_counter()
        note = worklist.claim_next("bench")
        worklist.submit("bench", note.pk, ["I10"], ["E11.9"], ["N18.3"])
        times.append(1000 * (time.perf_counter() - start))
    return times


def measure_database(name: str, db: str, count: int, rounds: int) -> None:
    start = time.perf_counter()
    worklist = filled_worklist(db, count)
    filled = time.perf_counter() - start
    times = claim_and_submit_ms(worklist, rounds)
    print(f"{name}: {count:,} notes ({count // 2:,} submitted) stored in {filled:.0f} s; claim-next + submit over "
          f"{rounds} rounds: median {statistics.median(times):.1f} ms, 95th percentile "
          f"{statistics.quantiles(times, n=20)[-1]:.1f} ms", flush=True)


def report_notes(folder: Path, count: int) -> Path:
    """`count` notes: the CodiEsp test reports over and over, each time with new ids."""
    with gzip.open(ROOT / "datasets_scripts" / "data" / "codiesp" / "test.jsonl.gz", "rt", encoding="utf-8") as lines:
        reports = [json.loads(line) for line in lines]
    notes = folder / f"notes-{count}.jsonl"
    notes.write_text("".join(json.dumps({"id": f"{reports[i % len(reports)]['id']}-{i}",
                                         "text": reports[i % len(reports)]["text_en"]}) + "\n" for i in range(count)))
    return notes


def resident_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def loading_memory(model: str, folder: Path, count: int) -> None:
    """msmn-worklist load of `count` notes, its resident memory every 15 seconds."""
    command = [sys.executable, "-m", "msmn.worklist", "load", model, str(report_notes(folder, count)), "--db",
               str(folder / "memory.sqlite"), "--quiet"]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, cwd=ROOT)
    start, samples = time.perf_counter(), []
    while process.poll() is None:
        time.sleep(15)
        if process.poll() is None:
            samples.append(f"{time.perf_counter() - start:.0f} s: {resident_mib(process.pid):.0f} MiB")
    print(f"msmn-worklist load of {count:,} notes in {time.perf_counter() - start:.0f} s; resident memory: "
          + ", ".join(samples), flush=True)


def loading_speed(model: str, folder: Path, count: int = 1000) -> None:
    """msmn-worklist load and msmn-code on the same `count` notes, each from a cold start."""
    notes = report_notes(folder, count)
    commands = {"msmn-worklist load": [sys.executable, "-m", "msmn.worklist", "load", model, str(notes), "--db",
                                       str(folder / "load.sqlite"), "--quiet"],
                "msmn-code": [sys.executable, "-m", "msmn.coding", model, str(notes), "--output",
                              str(folder / "codes.jsonl"), "--quiet"]}
    for name, command in commands.items():
        start = time.perf_counter()
        subprocess.run(command, check=True, stdout=subprocess.DEVNULL, cwd=ROOT)
        seconds = time.perf_counter() - start
        print(f"{name}: {count} notes in {seconds:.1f} s, {count / seconds:.1f} notes/s (loading included)", flush=True)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--notes", type=int, default=100_000)
    parser.add_argument("--rounds", type=int, default=500)
    parser.add_argument("--model", help="a checkpoint folder: also measure loading against msmn-code")
    parser.add_argument("--load-notes", type=int, default=20_000,
                        help="with --model: notes loaded while memory is sampled")
    args = parser.parse_args()
    print(f"load: {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}", flush=True)
    with tempfile.TemporaryDirectory() as folder:
        measure_database("SQLite", str(Path(folder) / "bench.sqlite"), args.notes, args.rounds)
        url = subprocess.run([str(ROOT / ".ci" / "postgresql")], capture_output=True, text=True, check=True).stdout.strip()
        try:
            measure_database("PostgreSQL", url, args.notes, args.rounds)
        finally:
            subprocess.run([str(ROOT / ".ci" / "postgresql"), "stop", url], check=True)
        if args.model:
            loading_speed(args.model, Path(folder))
            loading_memory(args.model, Path(folder), args.load_notes)


if __name__ == "__main__":
    main()
