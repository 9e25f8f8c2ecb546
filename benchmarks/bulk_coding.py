"""Coding notes in bulk with `msmn-code`: peak memory against the number of notes, and notes per
second for 1 and 2 processes (torchrun).

A checkpoint of the CodiEsp preset's shape (50 codes, R = d = 256, M = 4, random weights: speed and
memory do not depend on what the weights learned) codes JSON lines of synthetic notes of `--tokens`
words each (drawn from a 20,000-word vocabulary), `--top-k 15` with 3 evidence spans per code. Each
run is a fresh `msmn-code` process (or torchrun and its workers); its peak resident memory is the
largest of its processes' (`getrusage`), its time the wall clock, model loading and the check of the
input included. The load (`uptime`) is printed with the figures.

    python benchmarks/bulk_coding.py [--notes 2000 40000] [--tokens 200] [--processes 1 2] [--device cuda]
"""

import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from modeling_msmn import ICDCodingPipeline, MSMNConfig, MSMNForSequenceClassification, build_code_term_ids
from modeling_msmn import build_tokenizer

WORDS = [f"word{index}" for index in range(20_000)]  # the vocabulary of the checkpoint and of the notes


def save_checkpoint(folder: Path) -> None:
    tokenizer = build_tokenizer(["[PAD]", "[UNK]", *WORDS])
    codes = [f"C{index:02d}" for index in range(50)]
    terms = {code: [" ".join(random.sample(WORDS, 4)) for _ in range(4)] for code in codes}
    term_ids, selected = build_code_term_ids(tokenizer, codes, terms, 4)
    config = MSMNConfig(vocab_size=len(tokenizer), id2label=dict(enumerate(codes)), rnn_dim=256, hidden_size=256,
                        num_synonyms=4, code_terms=selected)
    model = MSMNForSequenceClassification(config, code_term_ids=term_ids).eval()
    ICDCodingPipeline(model=model, tokenizer=tokenizer, task="icd-coding").save_pretrained(folder)


def write_notes(path: Path, num_notes: int, num_tokens: int) -> None:
    with open(path, "w", encoding="utf-8") as file:
        for index in range(num_notes):
            file.write(json.dumps({"id": f"note-{index}", "text": " ".join(random.choices(WORDS, k=num_tokens))}) + "\n")


def run_coding(checkpoint: Path, notes: Path, output: Path, processes: int, device: str | None) -> dict:
    """Wall time and peak memory (MiB, the largest process) of one msmn-code run, measured in a fresh
    Python process so that the children's peak is this run's alone."""
    command = ["-m", "msmn.coding", str(checkpoint), str(notes), "--top-k", "15", "--output", str(output), "--quiet"]
    if processes > 1:
        command = ["-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(processes), *command]
    command += ["--device", device] if device else []
    probe = ("import resource, subprocess, sys, time; start = time.perf_counter(); "
             "code = subprocess.run(sys.argv[1:]).returncode; seconds = time.perf_counter() - start; "
             "print(code, seconds, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)")
    result = subprocess.run([sys.executable, "-c", probe, sys.executable, *command], capture_output=True, text=True)
    code, seconds, peak_kib = result.stdout.split()
    if code != "0":
        raise SystemExit(f"msmn-code failed:\n{result.stderr[-3000:]}")
    return {"seconds": float(seconds), "peak_mib": int(peak_kib) / 1024}


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--notes", type=int, nargs="+", default=[2000, 40000])
    parser.add_argument("--tokens", type=int, default=200)
    parser.add_argument("--processes", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--device", help="e.g. cuda (each torchrun process its own GPU)")
    args = parser.parse_args()
    random.seed(0)
    torch.manual_seed(0)
    print(f"load: {subprocess.run(['uptime'], capture_output=True, text=True).stdout.strip()}; "
          f"{os.cpu_count()} CPUs, torch {torch.__version__}")
    print("| notes | processes | seconds | notes/s | peak MiB (largest process) |\n|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as folder:
        folder = Path(folder)
        save_checkpoint(folder / "checkpoint")
        for num_notes in args.notes:
            write_notes(folder / f"notes-{num_notes}.jsonl", num_notes, args.tokens)
            for processes in args.processes if num_notes == min(args.notes) else [1]:
                figures = run_coding(folder / "checkpoint", folder / f"notes-{num_notes}.jsonl",
                                     folder / f"codes-{num_notes}-{processes}.jsonl", processes, args.device)
                print(f"| {num_notes:,} | {processes} | {figures['seconds']:.1f} | {num_notes / figures['seconds']:.1f} | "
                      f"{figures['peak_mib']:.0f} |", flush=True)
    print(f"load after: {subprocess.run(['uptime'], capture_output=True, text=True).stdout.strip()}")


if __name__ == "__main__":
    start = time.perf_counter()
    main()
    print(f"total {time.perf_counter() - start:.0f} s", file=sys.stderr)
