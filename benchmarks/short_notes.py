"""How a trained checkpoint codes short notes: CodiEsp-D top-50 dev and test reports cut to their first
N words (N = 1, 3, 10, 30, 100, whole), and a few keyword notes. Per length: codes per note, precision
and recall against the report's gold codes (micro), and the share of notes the pipeline flags short
(fewer words than 99% of the training notes; the 1st percentile is computed here from the train
split, so checkpoints that do not record it are measured too).

    python benchmarks/short_notes.py msmn-codiesp-d-50
"""

import argparse
import json
import os

import numpy as np
from transformers import pipeline

import datasets_scripts

LENGTHS = [1, 3, 10, 30, 100, None]  # None: the whole report
KEYWORD_NOTES = ["fever", "hypertension", "Fever and cough for 3 days.", "Chest pain, troponin raised."]


def cut(text: str, tokenizer, num_words: int | None) -> str:
    """The text up to the end of its `num_words`-th word (all of it for None)."""
    offsets = tokenizer(text, return_offsets_mapping=True)["offset_mapping"]
    return text if num_words is None or num_words >= len(offsets) else text[: offsets[num_words - 1][1]]


def scores(coder, reports, num_words: int | None, shortest: int) -> dict:
    notes = [cut(report["text"], coder.tokenizer, num_words) for report in reports]
    coded = coder(notes, batch_size=16, note_info=True)
    predicted = sum(len(info["codes"]) for info in coded)
    correct = sum(len({code["code"] for code in info["codes"]} & set(report["gold_codes"]))
                  for info, report in zip(coded, reports))
    gold = sum(len(set(report["gold_codes"]) & set(coder.model.config.label2id)) for report in reports)
    return {"words": num_words or "whole", "codes_per_note": predicted / len(notes),
            "precision": correct / predicted if predicted else float("nan"), "recall": correct / gold,
            "flagged_short": float(np.mean([info["note_words"] < shortest for info in coded]))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("model", help="a checkpoint folder trained on codiesp-d-50 (python train.py)")
    args = parser.parse_args()
    coder = pipeline("icd-coding", model=args.model, trust_remote_code=True)
    data = datasets_scripts.load("codiesp", config="codiesp-d-50")
    train_words = [len(ids) for ids in coder.tokenizer(list(data.splits["train"]["text"]))["input_ids"]]
    shortest = int(np.percentile(train_words, 1))
    print(f"training notes: 1st percentile {shortest} words, median {int(np.median(train_words))}; "
          f"threshold {coder.model.config.threshold:.3f}; load {os.getloadavg()[0]:.1f}")
    for split in ("validation", "test"):
        reports = list(data.splits[split])
        print(f"\n{split} ({len(reports)} reports)\n| words | codes per note | precision | recall | flagged short |")
        print("|---|---|---|---|---|")
        for num_words in LENGTHS:
            row = scores(coder, reports, num_words, shortest)
            print(f"| {row['words']} | {row['codes_per_note']:.1f} | {100 * row['precision']:.1f} | "
                  f"{100 * row['recall']:.1f} | {100 * row['flagged_short']:.0f}% |")
    print("\nkeyword notes: " + json.dumps({note: len(coder(note)) for note in KEYWORD_NOTES}))


if __name__ == "__main__":
    main()
