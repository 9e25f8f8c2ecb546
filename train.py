"""Train MSMN, evaluate it like the paper, and save a self-contained checkpoint folder.

    python train.py                                   # CodiEsp-D top-50 (English), the default
    python train.py --preset mimic3-50 --data_dir /path/to/mimic-iii --code_terms synonyms.json
    python train.py --train_file train.jsonl --validation_file dev.jsonl --test_file test.jsonl \\
        --code_terms code_terms.json --output_dir msmn-model
    python train.py config.json                       # every argument in a JSON (or YAML) file
    torchrun --nproc_per_node=4 train.py --preset mimic3-full ...

Presets set the data and the paper's hyper-parameters (spec §3, §7); any argument given on the
command line overrides them. Training runs the Hugging Face Trainer with the R-Drop loss; after
each epoch the dev set is evaluated and the best epoch (by `--metric_for_best_model`) is kept;
the global decision threshold is tuned on dev, stored in the saved config and applied to test.
The folder gets the weights, config, tokenizer, model code, `test_results.json` and a model card.
Note text never reaches the logs.
"""

import hashlib
import json
import logging
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from datasets import Dataset, DatasetDict
from transformers import DataCollatorWithPadding, HfArgumentParser, Trainer, TrainingArguments, set_seed
from transformers.training_args import ParallelMode

from modeling_msmn import ICDCodingPipeline, MSMNConfig, MSMNForSequenceClassification, build_code_term_ids, build_tokenizer
from modeling_msmn import build_vocabulary, split_words
from datasets_scripts.files import InputFileError, read_json_lines
from modeling_msmn.metrics import icd_metrics, mean_average_precision, tune_threshold

logger = logging.getLogger("msmn.train")

# CodiEsp has 500 training documents: at MIMIC's batch 16 and lr 5e-4, 20 epochs are only 640
# optimiser steps and MSMN underfits (dev P@5 0.18); batch 8, lr 2e-3 and 30 epochs (chosen on dev).
CODIESP = dict(dataset="codiesp", rnn_dim=256, hidden_size=256, num_synonyms=4, learning_rate=2e-3,
               per_device_train_batch_size=8, num_train_epochs=30)
# Word2vec from a few hundred notes needs many more passes: on CodiEsp's 500 Spanish training notes
# (no background set), dev P@5 after 8 epochs is 0.16, 0.28 and 0.39 with 10, 30 and 100 passes.
SMALL_WORD2VEC_CORPUS = 2000
# codiesp-d (1,767 train codes): scoring every code at each step (batch 16, no R-Drop, to fit the time)
# reached dev P@8 0.149 after 9 epochs (16 minutes); the batch's gold codes plus 256 sampled others
# reached 0.225 then, and 0.3645 at the best of 30 epochs, in 35 minutes on our 2-core CPU.
PRESETS = {
    "codiesp-d-50": dict(CODIESP, dataset_config="codiesp-d-50", metric_for_best_model="precision_at_5"),
    "codiesp-d": dict(CODIESP, dataset_config="codiesp-d", metric_for_best_model="precision_at_8",
                      candidate_codes="icd10cm", sampled_negative_codes=256, train_sampling_strategy="group_by_length"),
    "codiesp-p": dict(CODIESP, dataset_config="codiesp-p", metric_for_best_model="precision_at_5"),
    "mimic3-50": dict(dataset="mimic3", dataset_config="mimic3-50", rnn_dim=512, num_lstm_layers=1,
                      hidden_size=512, num_synonyms=8, metric_for_best_model="precision_at_5"),
    "mimic3-full": dict(dataset="mimic3", dataset_config="mimic3-full", rnn_dim=256, num_lstm_layers=2,
                        hidden_size=512, num_synonyms=4, metric_for_best_model="precision_at_8"),
}


@dataclass
class DataArguments:
    preset: str | None = field(
        default=None, metadata={"help": f"one of {sorted(PRESETS)}; without data arguments: codiesp-d-50"}
    )
    dataset: str = field(default="files", metadata={"help": "codiesp, mimic3 or files (JSON lines)"})
    dataset_config: str | None = field(default=None, metadata={"help": "e.g. codiesp-d-50, mimic3-full"})
    language: str = field(default="en", metadata={"help": "CodiEsp: en or es"})
    data_dir: str | None = field(default=None, metadata={"help": "MIMIC-III folder, or your own CodiEsp folder"})
    train_file: Path | None = field(default=None, metadata={"help": "JSON lines of {'text', 'labels'}"})
    validation_file: Path | None = None
    test_file: Path | None = None
    code_terms: Path | None = field(default=None, metadata={"help": "JSON {code: [description, synonyms…]}"})
    max_train_samples: int | None = field(default=None, metadata={"help": "keep the first N train documents"})
    max_eval_samples: int | None = field(default=None, metadata={"help": "keep the first N dev and test documents"})
    min_count: int = field(default=1, metadata={"help": "minimum count of a training-note word in the vocabulary"})
    word2vec: Path | None = field(default=None, metadata={"help": "pre-trained gensim model or word2vec text file"})
    word2vec_epochs: int | None = field(
        default=None, metadata={"help": f"word2vec passes; default 10, or 100 below {SMALL_WORD2VEC_CORPUS} notes"}
    )
    term_seed: int = field(default=0, metadata={"help": "seed of each code's choice of synonyms; -1 keeps their order"})
    word2vec_background: bool = field(
        default=True, metadata={"help": "CodiEsp, English: train word2vec on the 2,751 unlabelled background texts too"}
    )
    candidate_codes: str | None = field(
        default=None,
        metadata={"help": "icd10cm: the vocabulary and word2vec also cover the terms of every ICD-10-CM code, so that "
                          "the saved model can score codes it was not trained on from their terms (set_codes)"},
    )


@dataclass
class ModelArguments:
    """MSMNConfig's architecture settings (spec §3–6); one not given keeps the config's default."""

    num_synonyms: int | None = field(default=None, metadata={"help": "M: terms per code and attention heads"})
    rnn_dim: int | None = None
    num_lstm_layers: int | None = None
    hidden_size: int | None = None
    embedding_dim: int | None = None
    term_length: int | None = None
    max_note_tokens: int | None = None
    embedding_dropout: float | None = None
    lstm_dropout: float | None = None
    representation_dropout: float | None = None
    score_function: str | None = None
    mask_synonym_padding: bool | None = None


@dataclass
class MSMNTrainingArguments(TrainingArguments):
    """The Trainer's arguments with spec §7's defaults: AdamW lr 5e-4, weight decay 0.01 (not on
    biases), linear decay without warmup, 20 epochs, batch 16, gradient clipping 1.0, R-Drop α 5."""

    output_dir: str | None = "msmn-output"
    learning_rate: float = 5e-4
    weight_decay: float = 0.01
    num_train_epochs: float = 20
    per_device_train_batch_size: int = 16
    per_device_eval_batch_size: int = 16
    eval_strategy: str = "epoch"
    save_strategy: str = "epoch"
    save_total_limit: int | None = 2
    load_best_model_at_end: bool = True
    metric_for_best_model: str | None = "precision_at_5"
    greater_is_better: bool | None = True
    logging_strategy: str = "epoch"
    dataloader_pin_memory: bool = False
    rdrop_alpha: float = field(default=5.0, metadata={"help": "weight of the R-Drop KL term (0: plain BCE)"})
    rdrop_kl: str = field(default="reference", metadata={"help": "'reference' (softmax over codes) or 'bernoulli'"})
    sampled_negative_codes: int = field(
        default=0,
        metadata={"help": "per training step, score the batch's gold codes and this many other codes drawn at "
                          "random, not every code (0: every code, as in the paper); evaluation scores every code"},
    )


class InputError(ValueError):
    """Bad input: the message names the file or argument at fault and the fix."""


# ----------------------------------------------------------------------------- data


def read_notes(path: Path, label_set: set[str]) -> list[dict]:
    notes = []
    for line_number, note in read_json_lines(path, "{'text': ..., 'labels': [...]}"):
        if not isinstance(note.get("text"), str) or not isinstance(note.get("labels"), list):
            raise InputError(f"{path}, line {line_number}: each line needs a string 'text' and a list 'labels'.")
        unknown = [code for code in note["labels"] if code not in label_set]
        if unknown:
            raise InputError(
                f"{path}, line {line_number}: codes {unknown[:5]} are not in the code terms file; add their "
                "terms there (the code terms define the label set) or remove them from the labels."
            )
        notes.append({"text": note["text"], "labels": note["labels"], "gold_codes": note["labels"]})
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
    bad = [code for code, terms in code_terms.items() if not all(isinstance(t, str) for t in terms)]
    if bad:
        raise InputError(f"{path}: codes {bad[:5]} need a list of strings (description first).")
    return code_terms


def with_code_strings(dataset: DatasetDict) -> tuple[DatasetDict, list[str]]:
    """A builder's DatasetDict with class-label ids turned back into code strings."""
    codes = dataset["train"].features["labels"].feature.names
    dataset = dataset.map(
        lambda batch: {"codes": [[codes[i] for i in row] for row in batch["labels"]]},
        batched=True, remove_columns=["labels"],
    ).rename_column("codes", "labels")
    return dataset, list(codes)


def load_data(args: DataArguments, num_synonyms: int) -> tuple[DatasetDict, list[str], dict[str, list[str]]]:
    """(train/validation/test with 'text', 'labels' and 'gold_codes' as code strings, codes, code terms)."""
    if args.dataset == "codiesp":
        from datasets_scripts.code_synonyms import codiesp_synonyms
        from datasets_scripts.codiesp import load_codiesp

        dataset, codes = with_code_strings(load_codiesp(args.dataset_config, language=args.language, data_dir=args.data_dir))
        code_terms = read_code_terms(args.code_terms) if args.code_terms else codiesp_synonyms(
            args.dataset_config, args.language, num_synonyms, data_dir=args.data_dir)[0]
    elif args.dataset == "mimic3":
        from datasets_scripts.mimic_iii import load_mimic_iii

        if args.data_dir is None or args.code_terms is None:
            raise InputError(
                "MIMIC-III needs --data_dir (your MIMIC-III v1.4 folder) and --code_terms (made by "
                "python -m datasets_scripts.code_synonyms --mimic-dir ... [--mrconso MRCONSO.RRF] --output FILE)."
            )
        dataset, codes = with_code_strings(load_mimic_iii(args.data_dir, args.dataset_config))
        dataset = dataset.map(lambda row: {"gold_codes": row["labels"]})
        code_terms = read_code_terms(args.code_terms)
    elif args.dataset == "files":
        if args.train_file is None or args.code_terms is None:
            raise InputError("--dataset files needs --train_file and --code_terms (and --validation_file, --test_file).")
        code_terms = read_code_terms(args.code_terms)
        codes = sorted(code_terms)
        splits = {"train": args.train_file, "validation": args.validation_file, "test": args.test_file}
        dataset = DatasetDict(
            {name: Dataset.from_list(read_notes(path, set(codes))) for name, path in splits.items() if path is not None}
        )
    else:
        raise InputError(f"--dataset {args.dataset!r}: choose codiesp, mimic3 or files.")
    for name, limit in (("train", args.max_train_samples), ("validation", args.max_eval_samples), ("test", args.max_eval_samples)):
        if name in dataset and limit is not None:
            dataset[name] = dataset[name].select(range(min(limit, len(dataset[name]))))
    for name in dataset:
        if len(dataset[name]) == 0:
            raise InputError(f"the {name} split is empty: it needs at least one document.")
    return dataset, codes, code_terms


def candidate_code_terms(code_system: str | None, num_synonyms: int) -> list[str]:
    """The terms of every code of `code_system` (None: none), as the candidates are scored later."""
    if code_system is None:
        return []
    if code_system != "icd10cm":
        raise InputError(f"--candidate_codes {code_system!r}: the one code system at hand is icd10cm.")
    from datasets_scripts.code_synonyms import icd10cm_codes, open_icd10cm_synonyms

    code_terms = open_icd10cm_synonyms(icd10cm_codes(), min_synonyms=num_synonyms - 1)[0]
    return [term for terms in code_terms.values() for term in terms]


# ----------------------------------------------------------------------------- embeddings


def word2vec_vectors(args: DataArguments, tokenizer, texts: list[str], embedding_dim: int, seed: int):
    """Word2vec CBOW vectors (spec §2) trained on the training notes, cached by their content; or
    those of a given gensim model / word2vec text file."""
    from gensim.models import KeyedVectors, Word2Vec

    if args.word2vec is not None:
        if not args.word2vec.is_file():
            raise InputError(f"--word2vec {args.word2vec}: no such file (a gensim model or a word2vec text file).")
        if args.word2vec.suffix in (".txt", ".vec"):
            return KeyedVectors.load_word2vec_format(str(args.word2vec), binary=False)
        loaded = Word2Vec.load(str(args.word2vec)) if args.word2vec.suffix == ".model" else KeyedVectors.load(str(args.word2vec))
        return getattr(loaded, "wv", loaded)
    from datasets import config as datasets_config

    digest = hashlib.sha256(f"{embedding_dim}:{args.min_count}:{args.word2vec_epochs}:{seed}".encode())
    for text in texts:
        digest.update(hashlib.sha256(text.encode()).digest())
    cache = Path(datasets_config.HF_DATASETS_CACHE) / "msmn_word2vec" / f"{digest.hexdigest()[:20]}.kv"
    if cache.is_file():
        logger.info("word2vec: vectors read from the cache %s", cache)
        return KeyedVectors.load(str(cache))
    logger.info("word2vec: %d passes over %d texts", args.word2vec_epochs, len(texts))
    sentences = [split_words(text, tokenizer) for text in texts]  # as the saved tokenizer splits them
    model = Word2Vec(sentences, vector_size=embedding_dim, window=5, min_count=args.min_count, sg=0,
                     epochs=args.word2vec_epochs, seed=seed, workers=1)
    cache.parent.mkdir(parents=True, exist_ok=True)
    partial = cache.with_name(cache.name + ".partial")
    model.wv.save(str(partial))
    partial.replace(cache)
    return model.wv


def embedding_matrix(vectors, vocab: list[str], embedding_dim: int, seed: int) -> torch.Tensor:
    """Rows in tokenizer order: the word's vector, else N(0, 1) (unknown words, [UNK])."""
    if vectors.vector_size != embedding_dim:
        raise InputError(f"word2vec vectors have size {vectors.vector_size}; --embedding_dim is {embedding_dim}.")
    matrix = torch.randn(len(vocab), embedding_dim, generator=torch.Generator().manual_seed(seed))
    found = [(index, word) for index, word in enumerate(vocab) if word in vectors.key_to_index]
    if found:
        rows, words = zip(*found)
        matrix[list(rows)] = torch.from_numpy(np.stack([vectors[word] for word in words])).float()
    logger.info("word2vec: %d of %d vocabulary words have a vector", len(found), len(vocab))
    return matrix


# ----------------------------------------------------------------------------- training


def note_collator(tokenizer) -> DataCollatorWithPadding:
    """Pads a batch of notes to a multiple of 16 tokens: the attention's matrix products then run on
    faster kernel paths (up to 20% on AVX2); padding is masked, so the model's outputs are the same."""
    return DataCollatorWithPadding(tokenizer, pad_to_multiple_of=16)


def sampled_codes(labels: torch.Tensor, num_negatives: int) -> torch.Tensor:
    """Indices (c,), ascending, of the codes gold in some note of the batch (labels: (B, C)) and of
    `num_negatives` other codes drawn uniformly at random (all others if fewer)."""
    is_gold = labels.bool().any(dim=0)
    others = (~is_gold).nonzero().squeeze(1)
    drawn = others[torch.randperm(len(others), device=others.device)[:num_negatives]]
    return torch.cat([is_gold.nonzero().squeeze(1), drawn]).sort().values


class RDropTrainer(Trainer):
    """BCE averaged over two dropout passes plus α·symmetric KL (spec §7), in one forward pass over
    the doubled batch, so the synonym vectors are computed once per step for both passes. With
    `sampled_negative_codes`, each training step scores the batch's gold codes and that many random
    others: its cost no longer grows with the size of the code set."""

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        alpha, kl_form = self.args.rdrop_alpha, self.args.rdrop_kl
        if model.training and self.args.sampled_negative_codes > 0:
            inputs["code_indices"] = sampled_codes(inputs["labels"], self.args.sampled_negative_codes)
            inputs["labels"] = inputs["labels"][:, inputs["code_indices"]]
        if not model.training or alpha == 0:
            return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
        labels = inputs.pop("labels")
        code_indices = inputs.pop("code_indices", None)
        doubled = {name: torch.cat([value, value]) for name, value in inputs.items()}
        first, second = model(**doubled, code_indices=code_indices).logits.chunk(2)
        bce = (F.binary_cross_entropy_with_logits(first, labels) + F.binary_cross_entropy_with_logits(second, labels)) / 2
        loss = bce + alpha * rdrop_kl(first, second, kl_form)
        return (loss, {"logits": first}) if return_outputs else loss


def rdrop_kl(first: torch.Tensor, second: torch.Tensor, form: str) -> torch.Tensor:
    """Symmetric KL between two passes' predictions, averaged over batch × codes.

    "reference": between the softmax distributions over the code axis (the authors' code);
    "bernoulli": between the per-code Bernoulli distributions σ(logit).
    """
    if form == "reference":
        log_first, log_second = F.log_softmax(first, dim=-1), F.log_softmax(second, dim=-1)
        forward = F.kl_div(log_second, log_first, reduction="none", log_target=True)
        backward = F.kl_div(log_first, log_second, reduction="none", log_target=True)
        return (forward.mean() + backward.mean()) / 2
    if form == "bernoulli":
        p, q = torch.sigmoid(first), torch.sigmoid(second)
        log_p, log_q = F.logsigmoid(first), F.logsigmoid(second)
        log_not_p, log_not_q = F.logsigmoid(-first), F.logsigmoid(-second)
        kl_pq = p * (log_p - log_q) + (1 - p) * (log_not_p - log_not_q)
        kl_qp = q * (log_q - log_p) + (1 - q) * (log_not_q - log_not_p)
        return ((kl_pq + kl_qp) / 2).mean()
    raise InputError(f"--rdrop_kl {form!r}: choose 'reference' or 'bernoulli'.")


def predict(model, dataset: Dataset, tokenizer, args: TrainingArguments) -> tuple[np.ndarray, np.ndarray]:
    """(probabilities, labels) of a tokenised split: documents × codes."""
    loader = torch.utils.data.DataLoader(dataset, batch_size=args.per_device_eval_batch_size,
                                         collate_fn=note_collator(tokenizer))
    model.eval()
    probabilities, labels = [], []
    with torch.no_grad():
        for batch in loader:
            labels.append(batch.pop("labels").numpy() > 0.5)
            batch = {name: value.to(model.device) for name, value in batch.items()}
            probabilities.append(torch.sigmoid(model(**batch).logits.float()).cpu().numpy())
    return np.concatenate(probabilities), np.concatenate(labels)


def evaluation_metrics(eval_prediction) -> dict[str, float]:
    """Dev metrics of one epoch, micro/macro F1 at the threshold tuned on that same dev set."""
    probabilities = torch.sigmoid(torch.from_numpy(np.asarray(eval_prediction.predictions))).numpy()
    labels = np.asarray(eval_prediction.label_ids) > 0.5
    return icd_metrics(probabilities, labels, tune_threshold(probabilities, labels))


def test_report(probabilities, labels, gold_codes, codes, train_codes, threshold) -> dict[str, float]:
    metrics = icd_metrics(probabilities, labels, threshold)
    index = {code: i for i, code in enumerate(codes)}
    gold = [[index[c] for c in document if c in index] for document in gold_codes]
    metrics["map"] = mean_average_precision(probabilities, gold, [len(document) for document in gold_codes])
    unseen = [[index[c] for c in document if c in index and c not in train_codes] for document in gold_codes]
    if any(unseen):
        unseen_totals = [sum(1 for c in document if c not in train_codes) for document in gold_codes]
        metrics["map_unseen_codes"] = mean_average_precision(probabilities, unseen, unseen_totals)
    metrics["threshold"] = threshold
    return metrics


def metric_table(metrics: dict[str, float]) -> str:
    """The paper's table layout (spec §9) as a Markdown table: AUC, F1, P@k, in %; then MAP."""
    columns = [("macro_auc", "AUC macro"), ("micro_auc", "AUC micro"), ("macro_f1", "F1 macro"),
               ("micro_f1", "F1 micro"), ("precision_at_5", "P@5"), ("precision_at_8", "P@8"),
               ("precision_at_15", "P@15"), ("map", "MAP"), ("map_unseen_codes", "MAP unseen")]
    present = [(key, name) for key, name in columns if key in metrics]
    header = "| " + " | ".join(name for _, name in present) + " |"
    rule = "|" + "---|" * len(present)
    values = "| " + " | ".join(f"{100 * metrics[key]:.1f}" for key, _ in present) + " |"
    return f"{header}\n{rule}\n{values}"


DATA_OPTIONS = {"dataset", "train_file", "data_dir"}


def preset_defaults(preset: str | None, given: set[str]) -> dict:
    """The preset's settings; without a preset and without data options, the default codiesp-d-50."""
    if preset is None and not DATA_OPTIONS & given:
        preset = "codiesp-d-50"  # the package's embedded default
    if preset is None:
        return {}
    if preset not in PRESETS:
        raise InputError(f"--preset {preset!r} is unknown; choose one of {sorted(PRESETS)}.")
    return {"output_dir": f"msmn-{preset}", **PRESETS[preset]}


def parse_arguments(argv: list[str]):
    parser = HfArgumentParser((DataArguments, ModelArguments, MSMNTrainingArguments))
    if len(argv) == 1 and argv[0].endswith((".json", ".yaml", ".yml")):
        import yaml  # JSON is YAML

        settings = yaml.safe_load(Path(argv[0]).read_text(encoding="utf-8")) or {}
        return parser.parse_dict({**preset_defaults(settings.get("preset"), set(settings)), **settings})
    preset = HfArgumentParser(DataArguments).parse_known_args(argv)[0].preset
    given = {argument.split("=")[0].lstrip("-") for argument in argv if argument.startswith("--")}
    parser.set_defaults(**preset_defaults(preset, given))
    return parser.parse_args_into_dataclasses(argv)


def main(argv: list[str] | None = None) -> dict[str, float]:
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size > 1 and not torch.cuda.is_available():
        # Without it, transformers sets up no process group on CPU and each process trains alone.
        os.environ.setdefault("ACCELERATE_USE_CPU", "true")
    data_args, model_args, training_args = parse_arguments(sys.argv[1:] if argv is None else argv)
    if world_size > 1 and training_args.parallel_mode != ParallelMode.DISTRIBUTED:
        raise InputError(
            f"{world_size} processes were launched, but the Trainer is not distributed ({training_args.parallel_mode}); "
            "check --ddp_backend and the torchrun environment."
        )
    if training_args.bf16 and training_args.device.type == "cpu" and not torch.ops.mkldnn._is_mkldnn_bf16_supported():
        raise InputError(
            "--bf16: this CPU has no bfloat16 arithmetic (AVX512-BF16 or AMX): oneDNN cannot run the LSTM under "
            "bf16 autocast, and bf16 matrix products run far slower than float32 here. Train without --bf16."
        )
    if training_args.sampled_negative_codes < 0:
        raise InputError(f"--sampled_negative_codes {training_args.sampled_negative_codes}: give 0 (every code) or more.")
    logging.basicConfig(level=logging.INFO if training_args.should_log else logging.WARNING)
    logging.getLogger("gensim").setLevel(logging.WARNING)
    push_to_hub, training_args.push_to_hub = training_args.push_to_hub, False  # pushed once, at the end
    set_seed(training_args.seed)

    architecture = {name: value for name, value in vars(model_args).items() if value is not None}
    settings = MSMNConfig(**architecture)  # the defaults, overridden by the given settings, validated
    dataset, codes, code_terms = load_data(data_args, settings.num_synonyms)
    if "validation" not in dataset:
        training_args.eval_strategy, training_args.load_best_model_at_end = "no", False
    selection = training_args.metric_for_best_model or ""
    if selection.startswith("precision_at_") and int(selection.rsplit("_", 1)[1]) >= len(codes):
        logger.warning("%s cannot tell models apart with %d codes: selecting the best epoch by micro_auc", selection, len(codes))
        training_args.metric_for_best_model = "micro_auc"
    missing = [code for code in codes if not code_terms.get(code)]
    if missing:
        logger.warning("%d codes have no terms; they are represented by their code string (e.g. %s)", len(missing), missing[:3])
    code_terms = {code: code_terms.get(code) or [code] for code in codes}
    term_words = [word for code in codes for term in code_terms[code] for word in split_words(term)]
    candidate_terms = candidate_code_terms(data_args.candidate_codes, settings.num_synonyms)
    term_words += [word for term in candidate_terms for word in split_words(term)]
    train_texts = dataset["train"]["text"]
    vocab = build_vocabulary(train_texts, data_args.min_count, term_words)
    tokenizer = build_tokenizer(vocab, model_max_length=settings.max_note_tokens)
    term_ids, terms = build_code_term_ids(tokenizer, codes, code_terms, settings.num_synonyms, settings.term_length,
                                          None if data_args.term_seed < 0 else data_args.term_seed)
    config = MSMNConfig(
        **architecture, vocab_size=len(vocab), pad_token_id=tokenizer.pad_token_id, id2label=dict(enumerate(codes)),
        code_terms=terms, code_descriptions=[code_terms[code][0] for code in codes],
    )
    model = MSMNForSequenceClassification(config, code_term_ids=term_ids)
    word2vec_texts = list(train_texts)
    if data_args.dataset == "codiesp" and data_args.language == "en" and data_args.word2vec_background:
        from datasets_scripts.codiesp import read_background_texts

        word2vec_texts += read_background_texts()
    if data_args.word2vec_epochs is None:
        data_args.word2vec_epochs = 10 if len(word2vec_texts) >= SMALL_WORD2VEC_CORPUS else 100
    word2vec_texts += candidate_terms  # each term a sentence: its words get vectors, also those no note holds
    vectors = word2vec_vectors(data_args, tokenizer, word2vec_texts, config.embedding_dim, training_args.seed)
    model.set_word_embeddings(embedding_matrix(vectors, vocab, config.embedding_dim, training_args.seed))

    code_index = config.label2id

    def encode(batch):
        encoded = tokenizer(batch["text"], truncation=True, max_length=config.max_note_tokens)
        encoded["labels"] = []
        for document_codes in batch["labels"]:
            multi_hot = np.zeros(len(codes), dtype=np.float32)
            multi_hot[[code_index[code] for code in document_codes]] = 1.0
            encoded["labels"].append(multi_hot)
        return encoded

    encoded = dataset.map(encode, batched=True, remove_columns=dataset["train"].column_names)
    trainer = RDropTrainer(
        model=model,
        args=training_args,
        train_dataset=encoded["train"],
        eval_dataset=encoded.get("validation"),
        data_collator=note_collator(tokenizer),
        processing_class=tokenizer,
        compute_metrics=evaluation_metrics,
    )
    trainer.train(resume_from_checkpoint=training_args.resume_from_checkpoint)

    results = {}
    if trainer.is_world_process_zero():  # whole splits, in one process (also under torchrun)
        model = trainer.model
        if "validation" in encoded:
            dev_probabilities, dev_labels = predict(model, encoded["validation"], tokenizer, training_args)
            model.config.threshold = min(max(tune_threshold(dev_probabilities, dev_labels), 1e-6), 1 - 1e-6)
        if "test" in encoded:
            test_probabilities, test_labels = predict(model, encoded["test"], tokenizer, training_args)
            train_codes = {code for document in dataset["train"]["labels"] for code in document}
            results = test_report(test_probabilities, test_labels, dataset["test"]["gold_codes"], codes, train_codes,
                                  model.config.threshold)
    save_checkpoint(trainer, training_args.output_dir, results, data_args, push_to_hub)
    return results


def render_model_card(config: MSMNConfig, results: dict[str, float], data_args: DataArguments, repo: str) -> str:
    """`model_card.md` with this model's data, codes, settings and test results (as model-index)."""
    from string import Template

    on_mimic = data_args.dataset == "mimic3"
    dataset_name = {"codiesp": "CodiEsp", "mimic3": "MIMIC-III"}.get(data_args.dataset, "custom notes")
    description = {
        "codiesp": f"CodiEsp (CLEF eHealth 2020, CC BY 4.0), config {data_args.dataset_config}, {data_args.language}",
        "mimic3": f"MIMIC-III v1.4 discharge summaries, CAML splits, config {data_args.dataset_config}",
    }.get(data_args.dataset, f"notes from {data_args.train_file}")
    entries = "\n".join(
        f"      - {{type: {key}, value: {round(100 * value, 2)}, name: {key.replace('_', ' ')}}}"
        for key, value in results.items() if key != "threshold"
    ) or "      []"
    codes = [config.id2label[i] for i in range(config.num_labels)]
    template = Template((Path(__file__).parent / "model_card.md").read_text(encoding="utf-8"))
    return template.substitute(
        license={"codiesp": "cc-by-4.0", "mimic3": "other"}.get(data_args.dataset, "apache-2.0"),  # follows the data
        language="es" if data_args.language == "es" else "en",
        dataset_id={"codiesp": "bigbio/codiesp", "mimic3": "physionet/mimiciii"}.get(data_args.dataset, "custom"),
        dataset_name=dataset_name, dataset_description=description, model_name=Path(repo).name,
        metric_entries=entries, num_codes=config.num_labels, code_examples=", ".join(codes[:5]),
        num_synonyms=config.num_synonyms, rnn_dim=config.rnn_dim, num_lstm_layers=config.num_lstm_layers,
        hidden_size=config.hidden_size, score_function=config.score_function, threshold=round(config.threshold, 4),
        metric_table=metric_table(results) if results else "(no test split)", repo=repo,
        data_note=(
            "Trained on MIMIC-III: these weights are derived from credentialed data and fall under the "
            "PhysioNet Credentialed Health Data Use Agreement; share them only with credentialed users."
            if on_mimic else ""
        ),
    )


def save_checkpoint(trainer, output_dir, results, data_args, push_to_hub):
    if not trainer.is_world_process_zero():
        return
    folder = Path(output_dir)
    # through the pipeline: the folder also gets the pipeline's code and its entry in the config
    ICDCodingPipeline(model=trainer.model, tokenizer=trainer.processing_class).save_pretrained(folder)
    # The training arguments go to JSON, not to a pickle (epoch checkpoints keep theirs for resuming).
    (folder / "training_args.json").write_text(trainer.args.to_json_string(), encoding="utf-8")
    repo = trainer.args.hub_model_id or folder.name
    (folder / "test_results.json").write_text(json.dumps(results, indent=2))
    (folder / "README.md").write_text(render_model_card(trainer.model.config, results, data_args, repo), encoding="utf-8")
    if results:
        print("\nTest set (threshold tuned on dev):\n" + metric_table(results))
    print(f"Saved MSMN ({trainer.model.config.num_labels} codes) to {folder}")
    if push_to_hub:
        push_folder(folder, trainer.args)


def push_folder(folder: Path, args: TrainingArguments) -> None:
    """Uploads the checkpoint folder (weights, config, tokenizer, code, card), not the epoch checkpoints."""
    from huggingface_hub import CommitOperationAdd, HfApi

    repo_id = args.hub_model_id or folder.name
    files = [path for path in sorted(folder.rglob("*"))
             if path.is_file() and not path.relative_to(folder).parts[0].startswith(("checkpoint-", "runs"))]
    api = HfApi(token=args.hub_token)
    api.create_repo(repo_id, private=args.hub_private_repo, exist_ok=True)
    api.create_commit(
        repo_id,
        operations=[CommitOperationAdd(path_in_repo=path.relative_to(folder).as_posix(), path_or_fileobj=str(path)) for path in files],
        commit_message="MSMN checkpoint trained with msmn/train.py",
    )
    print(f"Pushed {folder} to https://huggingface.co/{repo_id}")


if __name__ == "__main__":
    try:
        main()
    except (InputError, InputFileError) as error:  # ours, and the data builders' (missing or malformed files)
        sys.exit(f"error: {error}")
