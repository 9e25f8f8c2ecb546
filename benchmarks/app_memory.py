"""The review app's memory and files over many codings: `ReviewEvents.code_note` (what the Code button
runs) on notes of every length from 1 to 400 words, in one page session, with the resident memory
and the number of export files printed every 100 codings. Flat memory and two export files are the
target (the pipeline pads notes to a multiple of 64 tokens, so oneDNN keeps a few kernels, not one
per note length).

    python benchmarks/app_memory.py msmn-codiesp-d-50 [--codings 1000]
"""

import argparse
import os
import tempfile
from pathlib import Path

import gradio

import datasets_scripts
from msmn.review.page import Review, ReviewEvents
from msmn.checkpoints import load_coder


def resident_mib() -> int:
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith("VmRSS:")) // 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("model", help="a checkpoint folder")
    parser.add_argument("--codings", type=int, default=1000)
    args = parser.parse_args()
    coder = load_coder(args.model, None)
    words = " ".join(datasets_scripts.load("codiesp", config="codiesp-d-50").splits["train"]["text"][:20]).split()
    exports = Path(tempfile.mkdtemp(prefix="app-memory-"))
    events = ReviewEvents(gradio, coder, exports, max_note_chars=200_000)
    review = Review()
    print(f"load {os.getloadavg()[0]:.1f}; resident memory after loading: {resident_mib()} MiB")
    print("| codings | resident MiB | export files |\n|---|---|---|")
    for coding in range(1, args.codings + 1):
        note = " ".join(words[coding % 400 : coding % 400 + 1 + coding % 400])
        review = events.code_note(note, coder.model.config.threshold, 0, False, review)[0]
        if coding % 100 == 0:
            files = sum(1 for path in exports.rglob("*") if path.is_file())
            print(f"| {coding} | {resident_mib()} | {files} |")


if __name__ == "__main__":
    main()
