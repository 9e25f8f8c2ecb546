"""Train MSMN on your own coded notes and save a self-contained checkpoint folder.

    python train.py --train_file train.jsonl [--validation_file dev.jsonl] \\
        --code_terms code_terms.json --output_dir msmn-model

- Notes: JSON lines (optionally .gz), one note per line: {"text": "...", "labels": ["I10", ...]}.
- Code terms: one JSON object {code: [description, synonym, ...]}; its codes are the label set.

The vocabulary (words of the training notes and of all code terms), the tokenizer, the per-code
term ids, the weights and the model's code are all written to --output_dir, which then loads with
`AutoModelForSequenceClassification.from_pretrained(dir, trust_remote_code=True)`.
Training runs the Hugging Face Trainer on the model's mean BCE loss; note text is never logged.
"""

import gzip
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path

import torch
from datasets import Dataset
from transformers import DataCollatorWithPadding, HfArgumentParser, Trainer, TrainingArguments, set_seed

from modeling_msmn import MSMNConfig, MSMNForSequenceClassification, build_code_term_ids, build_tokenizer
from modeling_msmn import build_vocabulary, split_words


@dataclass
class DataArguments:
    train_file: Path = field(metadata={"help": "JSON lines of {'text', 'labels'} to train on"})
    code_terms: Path = field(metadata={"help": "JSON {code: [description, synonym, ...]}; its codes are the label set"})
    validation_file: Path | None = field(default=None, metadata={"help": "JSON lines evaluated after each epoch"})
    min_count: int = field(default=1, metadata={"help": "minimum count of a training-note word in the vocabulary"})


@dataclass
class ModelArguments:
    num_synonyms: int = field(default=4, metadata={"help": "M: terms per code and attention heads"})
    rnn_dim: int = field(default=512, metadata={"help": "BiLSTM output size, both directions"})
    num_lstm_layers: int = 1
    hidden_size: int = field(default=512, metadata={"help": "d"})
    embedding_dim: int = 100
    term_length: int = 30
    max_note_tokens: int = 4000
    term_seed: int = field(default=0, metadata={"help": "seed of the choice of each code's synonyms"})


@dataclass
class MSMNTrainingArguments(TrainingArguments):
    """The Trainer's arguments with spec §7's defaults: AdamW lr 5e-4, weight decay 0.01 (not on
    biases), linear decay without warmup, 20 epochs, batch 16, gradient clipping 1.0."""

    learning_rate: float = 5e-4
    weight_decay: float = 0.01
    num_train_epochs: float = 20
    per_device_train_batch_size: int = 16
    per_device_eval_batch_size: int = 16
    eval_strategy: str = "epoch"
    save_strategy: str = "epoch"
    save_total_limit: int | None = 2


class InputError(ValueError):
    """Bad input files: the message names the file, the line and the fix."""


def read_notes(path: Path, label_set: set[str]) -> list[dict]:
    if not path.is_file():
        raise InputError(f"{path}: no such file (expected JSON lines of {{'text': ..., 'labels': [...]}}).")
    opener = gzip.open if path.suffix == ".gz" else open
    notes = []
    with opener(path, "rt", encoding="utf-8") as lines:
        for line_number, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            try:
                note = json.loads(line)
            except json.JSONDecodeError as error:
                raise InputError(f"{path}, line {line_number}: not valid JSON ({error.msg}, column {error.colno}).") from None
            if not isinstance(note, dict) or not isinstance(note.get("text"), str) or not isinstance(note.get("labels"), list):
                raise InputError(f"{path}, line {line_number}: each line needs a string 'text' and a list 'labels'.")
            unknown = [code for code in note["labels"] if code not in label_set]
            if unknown:
                raise InputError(
                    f"{path}, line {line_number}: codes {unknown[:5]} are not in the code terms file; add their "
                    "terms there (the code terms define the label set) or remove them from the labels."
                )
            notes.append({"text": note["text"], "labels": note["labels"]})
    if not notes:
        raise InputError(f"{path}: holds no notes; a split needs at least one.")
    return notes


def read_code_terms(path: Path) -> dict[str, list[str]]:
    if not path.is_file():
        raise InputError(f"{path}: no such file (expected JSON {{code: [description, synonym, ...]}}).")
    try:
        code_terms = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as error:
        raise InputError(f"{path}: not valid JSON ({error.msg}, line {error.lineno}).") from None
    if not isinstance(code_terms, dict) or not code_terms:
        raise InputError(f"{path}: expected a non-empty JSON object {{code: [description, synonym, ...]}}.")
    bad = [code for code, terms in code_terms.items() if not terms or not all(isinstance(t, str) for t in terms)]
    if bad:
        raise InputError(f"{path}: codes {bad[:5]} need a non-empty list of strings (description first).")
    return code_terms


def main(argv: list[str] | None = None) -> None:
    parser = HfArgumentParser((DataArguments, ModelArguments, MSMNTrainingArguments))
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) == 1 and argv[0].endswith(".json"):
        data_args, model_args, training_args = parser.parse_json_file(argv[0])
    else:
        data_args, model_args, training_args = parser.parse_args_into_dataclasses(argv)

    code_terms = read_code_terms(data_args.code_terms)
    codes = sorted(code_terms)
    train_notes = read_notes(data_args.train_file, set(codes))
    validation_notes = read_notes(data_args.validation_file, set(codes)) if data_args.validation_file else None
    if validation_notes is None:
        training_args.eval_strategy = "no"

    term_words = [word for terms in code_terms.values() for term in terms for word in split_words(term)]
    vocab = build_vocabulary((note["text"] for note in train_notes), data_args.min_count, term_words)
    tokenizer = build_tokenizer(vocab, model_max_length=model_args.max_note_tokens)
    term_ids, terms = build_code_term_ids(
        tokenizer, codes, code_terms, model_args.num_synonyms, model_args.term_length, model_args.term_seed
    )
    config = MSMNConfig(
        vocab_size=len(vocab),
        pad_token_id=tokenizer.pad_token_id,
        embedding_dim=model_args.embedding_dim,
        rnn_dim=model_args.rnn_dim,
        num_lstm_layers=model_args.num_lstm_layers,
        hidden_size=model_args.hidden_size,
        num_synonyms=model_args.num_synonyms,
        term_length=model_args.term_length,
        max_note_tokens=model_args.max_note_tokens,
        id2label=dict(enumerate(codes)),
        code_term_ids=term_ids,
        code_terms=terms,
        code_descriptions=[code_terms[code][0] for code in codes],
    )
    set_seed(training_args.seed)
    model = MSMNForSequenceClassification(config)

    code_index = config.label2id

    def encode(batch):
        encoded = tokenizer(batch["text"], truncation=True, max_length=model_args.max_note_tokens)
        encoded["labels"] = []
        for note_codes in batch["labels"]:
            multi_hot = torch.zeros(len(codes))
            multi_hot[[code_index[code] for code in note_codes]] = 1.0
            encoded["labels"].append(multi_hot.tolist())
        return encoded

    def to_dataset(notes):
        return Dataset.from_list(notes).map(encode, batched=True, remove_columns=["text", "labels"])

    trainer = Trainer(
        model=model,
        args=training_args,
        train_dataset=to_dataset(train_notes),
        eval_dataset=to_dataset(validation_notes) if validation_notes else None,
        data_collator=DataCollatorWithPadding(tokenizer),
        processing_class=tokenizer,
    )
    trainer.train(resume_from_checkpoint=training_args.resume_from_checkpoint)
    trainer.save_model(training_args.output_dir)
    print(f"Saved MSMN ({len(codes)} codes, vocabulary {len(vocab)}) to {training_args.output_dir}")


if __name__ == "__main__":
    try:
        main()
    except InputError as error:
        sys.exit(f"error: {error}")
