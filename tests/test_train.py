"""train.py end to end through its command line: it learns, saves a loadable folder, rejects bad input."""

import gzip
import json
import os
import random
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForSequenceClassification, AutoTokenizer

ROOT = Path(__file__).resolve().parent.parent
SIGNALS = {  # each code is signalled by its own words, which its terms share
    "I10": (["hypertension", "elevated blood pressure"], ["hypertension", "pressure"]),
    "J18.9": (["pneumonia", "lung infection"], ["pneumonia", "infiltrate"]),
    "R50.9": (["fever", "pyrexia"], ["fever", "febrile"]),
    "E11.9": (["diabetes mellitus", "high blood sugar"], ["diabetes", "glucose"]),
    "N39.0": (["urinary tract infection", "cystitis"], ["urinary", "dysuria"]),
}
FILLER = "patient was admitted seen today history of the with and no acute distress plan follow up clinic".split()


def synthetic_notes(count, seed):
    rng = random.Random(seed)
    notes = []
    for _ in range(count):
        codes = rng.sample(sorted(SIGNALS), rng.randint(1, 2))
        words = rng.choices(FILLER, k=30)
        for code in codes:
            for word in SIGNALS[code][1]:
                words.insert(rng.randrange(len(words) + 1), word)
        notes.append({"text": " ".join(words) + ".", "labels": codes})
    return notes


def write_jsonl(path, notes):
    with gzip.open(path, "wt", encoding="utf-8") as file:
        file.writelines(json.dumps(note) + "\n" for note in notes)


def run_train(*arguments, cwd):
    environment = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, str(ROOT / "train.py"), *arguments], capture_output=True, text=True, cwd=cwd, env=environment)


TINY_MODEL = ["--rnn_dim", "32", "--hidden_size", "32", "--embedding_dim", "16", "--num_synonyms", "2",
              "--per_device_train_batch_size", "8", "--learning_rate", "5e-3", "--seed", "0"]


@pytest.fixture
def corpus(tmp_path):
    write_jsonl(tmp_path / "train.jsonl.gz", synthetic_notes(160, seed=1))
    write_jsonl(tmp_path / "dev.jsonl.gz", synthetic_notes(40, seed=2))
    (tmp_path / "code_terms.json").write_text(json.dumps({code: terms for code, (terms, _) in SIGNALS.items()}))
    return tmp_path


def test_train_learns_and_saves_loadable_folder(corpus):
    result = run_train(
        "--train_file", "train.jsonl.gz", "--validation_file", "dev.jsonl.gz", "--code_terms", "code_terms.json",
        "--output_dir", "out", "--num_train_epochs", "20", *TINY_MODEL, cwd=corpus,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    for note in synthetic_notes(3, seed=2):  # note text never reaches the logs
        assert note["text"] not in result.stdout + result.stderr
    folder = corpus / "out"
    assert {"model.safetensors", "config.json", "tokenizer.json", "modeling_msmn.py"} <= set(os.listdir(folder))
    tokenizer = AutoTokenizer.from_pretrained(folder, trust_remote_code=True)
    model = AutoModelForSequenceClassification.from_pretrained(folder, trust_remote_code=True).eval()
    codes = [model.config.id2label[i] for i in range(model.config.num_labels)]
    assert codes == sorted(SIGNALS)

    test_notes = synthetic_notes(60, seed=3)
    with torch.no_grad():
        logits = model(**tokenizer([n["text"] for n in test_notes], padding=True, return_tensors="pt")).logits
    predicted = torch.sigmoid(logits) > model.config.threshold
    gold = torch.tensor([[code in n["labels"] for code in codes] for n in test_notes])
    true_positives = (predicted & gold).sum().item()
    micro_f1 = 2 * true_positives / (predicted.sum().item() + gold.sum().item())
    assert micro_f1 >= 0.9, micro_f1


def test_bad_inputs_fail_before_training(corpus):
    base = ["--code_terms", "code_terms.json", "--output_dir", "out", *TINY_MODEL]
    result = run_train("--train_file", "missing.jsonl", *base, cwd=corpus)
    assert result.returncode != 0 and "missing.jsonl: no such file" in result.stderr

    secret = "Patient Jane Doe has a secret history"
    (corpus / "unknown.jsonl").write_text(json.dumps({"text": secret, "labels": ["I10"]}) + "\n"
                                          + json.dumps({"text": secret, "labels": ["Z99.9"]}) + "\n")
    result = run_train("--train_file", "unknown.jsonl", *base, cwd=corpus)
    assert "unknown.jsonl, line 2: codes ['Z99.9'] are not in the code terms file" in result.stderr
    assert secret not in result.stdout + result.stderr

    (corpus / "broken.jsonl").write_text('{"text": "Jane Doe", "labels": ["I10"]}\n{"text": "Jane Doe", \n')
    result = run_train("--train_file", "broken.jsonl", *base, cwd=corpus)
    assert "broken.jsonl, line 2: not valid JSON" in result.stderr and "Jane Doe" not in result.stderr

    (corpus / "empty.jsonl").write_text("\n")
    result = run_train("--train_file", "empty.jsonl", *base, cwd=corpus)
    assert "empty.jsonl: holds no notes" in result.stderr
    assert not (corpus / "out").exists()
