"""A synthetic corpus whose codes are planted words, and train.py run on it (shared by the tests)."""

import gzip
import json
import os
import random
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

SIGNALS = {  # each code is signalled by its own words, which its terms share
    "I10": (["hypertension", "elevated blood pressure"], ["hypertension", "pressure"]),
    "J18.9": (["pneumonia", "lung infection"], ["pneumonia", "infiltrate"]),
    "R50.9": (["fever", "pyrexia"], ["fever", "febrile"]),
    "E11.9": (["diabetes mellitus", "high blood sugar"], ["diabetes", "glucose"]),
    "N39.0": (["urinary tract infection", "cystitis"], ["urinary", "dysuria"]),
}
FILLER = "patient was admitted seen today history of the with and no acute distress plan follow up clinic".split()
TINY_CONFIG = "rnn_dim=32,hidden_size=32,embedding_dim=16,num_synonyms=2"
TINY_MODEL = ["--config_overrides", TINY_CONFIG, "--learning_rate", "5e-3", "--seed", "0", "--word2vec_epochs", "2"]


def synthetic_notes(count, seed):
    rng = random.Random(seed)
    notes = []
    for _ in range(count):
        codes = rng.sample(sorted(SIGNALS), rng.randint(1, 2))
        words = rng.choices(FILLER, k=12)  # with 30, attention needs many epochs to find the planted words
        for code in codes:
            for word in SIGNALS[code][1]:
                words.insert(rng.randrange(len(words) + 1), word)
        notes.append({"text": " ".join(words) + ".", "labels": codes})
    return notes


def evidence_hits(notes, outputs):
    """(correct codes whose top evidence span holds one of the code's planted words, correct codes, how many
    spans of the same lengths placed at random in the notes would, on average) of the pipeline's outputs."""
    from modeling_msmn import split_words

    hits = correct = 0
    chance = 0.0
    for note, predictions in zip(notes, outputs):
        words = split_words(note["text"])
        for prediction in (p for p in predictions if p["code"] in note["labels"]):
            span, signals = split_words(prediction["evidence"][0]["text"]), SIGNALS[prediction["code"]][1]
            correct += 1
            hits += any(word in span for word in signals)
            starts = range(len(words) - len(span) + 1)
            chance += sum(any(w in words[s : s + len(span)] for w in signals) for s in starts) / len(starts)
    return hits, correct, chance


def write_jsonl(path, notes):
    with gzip.open(path, "wt", encoding="utf-8") as file:
        file.writelines(json.dumps(note) + "\n" for note in notes)


def run(command, cwd, environment=None, **kwargs):
    environment = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", **(environment or {})}
    return subprocess.run(command, capture_output=True, text=True, cwd=cwd, env=environment, **kwargs)


def run_train(*arguments, cwd, environment=None):
    return run([sys.executable, str(ROOT / "train.py"), *arguments], cwd, environment)


def write_corpus(folder):
    write_jsonl(folder / "train.jsonl.gz", synthetic_notes(160, seed=1))
    write_jsonl(folder / "dev.jsonl.gz", synthetic_notes(40, seed=2))
    write_jsonl(folder / "test.jsonl.gz", synthetic_notes(60, seed=3))
    (folder / "code_terms.json").write_text(json.dumps({code: terms for code, (terms, _) in SIGNALS.items()}))
    return folder


FILES = ["--train_file", "train.jsonl.gz", "--validation_file", "dev.jsonl.gz", "--test_file", "test.jsonl.gz",
         "--code_terms", "code_terms.json"]

# The full default loss (R-Drop, α = 5) on a small model, trained to convergence, so that the quality
# tests hold on any machine (margins measured over 5 seeds × 1 and 2 threads: see the tests' comments).
# What it took: notes of 12 filler words (not 30), word2vec's default passes for a small corpus (2 passes
# leave near-zero vectors), 40 epochs, and keeping the epoch with the lowest dev loss (with 5 codes
# train.py falls back to dev micro-AUC, which saturates early and kept half-trained epochs).
LEARNING_RUN = [*FILES, "--output_dir", "out", "--num_train_epochs", "40", "--per_device_train_batch_size", "8",
                *TINY_MODEL, "--config_overrides", "rnn_dim=64,hidden_size=64,embedding_dim=32,num_synonyms=2",
                "--learning_rate", "1e-2",
                "--word2vec_epochs", "100", "--metric_for_best_model", "loss", "--greater_is_better", "false"]
