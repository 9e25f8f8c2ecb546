"""Train MSMN, evaluate it like the paper, and save a self-contained checkpoint folder.

    python train.py                                   # preset codiesp-d-50: CodiEsp diagnoses, top 50 (English)
    python train.py --preset mimic3-50 --data_dir /path/to/mimic-iii --code_terms synonyms.json
    python train.py --dataset files --train_file train.jsonl --validation_file dev.jsonl --test_file test.jsonl \\
        --code_terms code_terms.json --output_dir msmn-model --config_overrides num_synonyms=8,score_function=dot
    python train.py config.json                       # every argument in a JSON (or YAML) file
    torchrun --nproc_per_node=4 train.py --preset mimic3-full ...

The data come from `datasets_scripts.load(--dataset, ...)`; a preset (`presets/NAME.json`) sets the
data and the hyper-parameters, and any argument given on the command line overrides it. Training
runs the Hugging Face Trainer with the R-Drop loss; after each epoch the dev set is evaluated and
the best epoch (by `--metric_for_best_model`) is kept; the global decision threshold is tuned on
dev, stored in the saved config and applied to test. The folder gets the weights, config,
tokenizer, model and pipeline code, `test_results.json` and a model card. Note text never reaches
the logs.
"""

import argparse
import hashlib
import json
import logging
import os
import shutil
import sys
import textwrap
from collections import Counter
from dataclasses import dataclass, field, fields
from fnmatch import fnmatch
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import SequentialSampler
from transformers import DataCollatorWithPadding, HfArgumentParser, Trainer, TrainingArguments, set_seed
from transformers.training_args import ParallelMode

import datasets_scripts
from datasets_scripts import InputError
from datasets_scripts.synonyms.icd10cm import candidate_code_terms
from datasets_scripts.files import write_atomically
from msmn.training.model_card import model_card
from modeling_msmn import ICDCodingPipeline, MSMNConfig, MSMNForSequenceClassification, build_code_term_ids
from modeling_msmn import build_tokenizer, build_vocabulary, split_words
from msmn.training.candidate_tuning import build_ranker
from msmn.evaluation.metrics import icd_metrics, metric_table, test_report, tune_threshold

logger = logging.getLogger("msmn.train")

PRESETS = Path(__file__).parent / "presets"
DEFAULT_PRESET = "codiesp-d-50"  # without a preset and without data arguments
# Word2vec from a few hundred notes needs many more passes: on CodiEsp's 500 Spanish training notes
# (no background set), dev P@5 after 8 epochs is 0.16, 0.28 and 0.39 with 10, 30 and 100 passes.
SMALL_WORD2VEC_CORPUS = 2000
# what gensim's word2vec reader raises on a damaged, truncated or foreign file
UNREADABLE_WORD2VEC = (ValueError, EOFError, UnicodeDecodeError)
HUB_IGNORED = ["checkpoint-*", "runs/*"]  # what --push_to_hub leaves out of the folder: the Trainer's own files


@dataclass
class DataArguments:
    preset: str | None = field(default=None, metadata={"help": f"a file of {PRESETS.name}/ without .json"})
    dataset: str = field(default="files", metadata={"help": f"one of {sorted(datasets_scripts.DATASETS)}"})
    dataset_config: str | None = field(default=None, metadata={"help": "e.g. codiesp-d-50, mimic3-full"})
    language: str | None = field(default=None, metadata={"help": "CodiEsp: en (default) or es"})
    data_dir: str | None = field(default=None, metadata={"help": "your MIMIC folder, or your own CodiEsp folder"})
    note_dir: str | None = field(default=None, metadata={"help": "MIMIC-IV: your MIMIC-IV-Note folder (default: data_dir)"})
    train_file: str | None = field(default=None, metadata={"help": "JSON lines of {'text', 'labels'}"})
    validation_file: str | None = None
    test_file: str | None = None
    code_terms: str | None = field(default=None, metadata={"help": "JSON {code: [description, synonyms…]}"})
    mrconso: str | None = field(default=None, metadata={"help": "MIMIC-IV: your UMLS MRCONSO.RRF, for code synonyms"})
    max_train_samples: int | None = field(default=None, metadata={"help": "keep the first N train documents"})
    max_eval_samples: int | None = field(default=None, metadata={"help": "keep the first N dev and test documents"})
    min_count: int = field(default=1, metadata={"help": "minimum count of a training-note word in the vocabulary"})
    min_notes: int = field(
        default=5,
        metadata={"help": "a training-note word enters the vocabulary only if at least this many distinct training "
                          "notes hold it (keeps a name or id of a few notes out of the published tokenizer; 5 was "
                          "chosen on CodiEsp-D top-50 dev)"},
    )
    word2vec: Path | None = field(
        default=None, metadata={"help": "pre-trained vectors: a word2vec text (.txt, .vec) or binary (.bin) file"}
    )
    trust_pickle: bool = field(
        default=False,
        metadata={"help": "allow --word2vec to be a gensim model (.model, .kv): loading one runs pickle, which can "
                          "execute arbitrary code"},
    )
    word2vec_epochs: int | None = field(
        default=None, metadata={"help": f"word2vec passes; default 10, or 100 below {SMALL_WORD2VEC_CORPUS} texts"}
    )
    word2vec_unlabelled_texts: bool = field(
        default=True, metadata={"help": "train word2vec on the dataset's unlabelled texts too (CodiEsp's background set)"}
    )
    term_seed: int = field(default=0, metadata={"help": "seed of each code's choice of synonyms; -1 keeps their order"})
    candidate_codes: str | None = field(
        default=None,
        metadata={"help": "icd10cm, or a JSON file {code: [description, synonyms…]}: codes the saved model also ranks "
                          "beyond its label set (the pipeline's candidates='all'); the vocabulary and word2vec cover "
                          "their terms, and the folder stores what ranking them needs, with operating points chosen on dev"},
    )
    config_overrides: str | None = field(
        default=None,
        metadata={"help": "MSMNConfig settings, e.g. 'num_synonyms=8,rnn_dim=256,score_function=dot'; after the preset's"},
    )

    def __post_init__(self):
        counts = {"max_train_samples": self.max_train_samples, "max_eval_samples": self.max_eval_samples,
                  "min_count": self.min_count, "min_notes": self.min_notes}
        for name, value in counts.items():
            if value is not None and value < 1:
                keep_all = " (or leave it out to keep every document)" if name.startswith("max_") else ""
                raise InputError(f"--{name} {value}: give 1 or more{keep_all}.")

    def term_seed_or_none(self) -> int | None:
        """The seed of each code's choice of terms; None (--term_seed -1) keeps their order."""
        return None if self.term_seed < 0 else self.term_seed

    def dataset_options(self) -> dict:
        """The options given for the dataset's `load`."""
        options = {"config": self.dataset_config, "language": self.language, "data_dir": self.data_dir,
                   "note_dir": self.note_dir,
                   "train_file": self.train_file, "validation_file": self.validation_file,
                   "test_file": self.test_file, "code_terms": self.code_terms, "mrconso": self.mrconso}
        return {name: value for name, value in options.items() if value is not None}


@dataclass
class MSMNTrainingArguments(TrainingArguments):
    """The Trainer's arguments with the paper's defaults: AdamW lr 5e-4, weight decay 0.01 (not on
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
    ddp_find_unused_parameters: bool | None = False  # MSMN uses every parameter at every step
    rdrop_alpha: float = field(default=5.0, metadata={"help": "weight of the R-Drop KL term (0: plain BCE)"})
    rdrop_kl: str = field(default="reference", metadata={"help": "'reference' (softmax over codes) or 'bernoulli'"})
    sampled_negative_codes: int = field(
        default=0,
        metadata={"help": "per training step, score the batch's gold codes and this many other codes drawn at "
                          "random, not every code (0: every code, as in the paper); evaluation scores every code"},
    )
    extra_negative_codes: int = field(
        default=0,
        metadata={"help": "per training step, also score this many codes of --candidate_codes outside the label set, "
                          "drawn at random, as negatives of every note (their terms only: not with score_function=linear)"},
    )
    overwrite_output_dir: bool = field(
        default=False,
        metadata={"help": "train into an --output_dir that already holds files (a trained model is replaced, and the "
                          "earlier run's checkpoint-* folders are removed); without it, such a folder is refused"},
    )

    def __post_init__(self):
        if self.rdrop_kl not in ("reference", "bernoulli"):
            raise InputError(f"--rdrop_kl {self.rdrop_kl!r}: choose 'reference' or 'bernoulli'.")
        if self.sampled_negative_codes < 0:
            raise InputError(f"--sampled_negative_codes {self.sampled_negative_codes}: give 0 (every code) or more.")
        if self.extra_negative_codes < 0:
            raise InputError(f"--extra_negative_codes {self.extra_negative_codes}: give 0 (none) or more.")
        super().__post_init__()


# ----------------------------------------------------------------------------- embeddings


def word2vec_vectors(args: DataArguments, tokenizer, texts: list[str], embedding_dim: int, seed: int):
    """Word2vec CBOW vectors of the vocabulary's words, trained on `texts` and cached by their content;
    or those of the file given with --word2vec."""
    from gensim.models import KeyedVectors, Word2Vec

    if args.word2vec is not None:
        return read_word2vec(args.word2vec, args.trust_pickle)
    from datasets import config as datasets_config

    vocab = tokenizer.convert_ids_to_tokens(range(len(tokenizer)))
    digest = hashlib.sha256(f"{embedding_dim}:{args.min_count}:{args.word2vec_epochs}:{seed}".encode())
    digest.update("\n".join(sorted(vocab)).encode())
    for text in texts:
        digest.update(hashlib.sha256(text.encode()).digest())
    # word2vec binary format: reading it runs no code, unlike a gensim pickle
    cache = Path(datasets_config.HF_DATASETS_CACHE) / "msmn_word2vec" / f"{digest.hexdigest()[:20]}.bin"
    if cache.is_file():
        try:
            vectors = KeyedVectors.load_word2vec_format(str(cache), binary=True)
            logger.info("word2vec: vectors read from the cache %s", cache)
            return vectors
        except UNREADABLE_WORD2VEC:
            logger.warning("word2vec: the cache %s is damaged; training the vectors again", cache)
    logger.info("word2vec: %d passes over %d texts", args.word2vec_epochs, len(texts))
    sentences = [split_words(text, tokenizer) for text in texts]  # as the saved tokenizer splits them
    model = Word2Vec(sentences, vector_size=embedding_dim, window=5, min_count=args.min_count, sg=0,
                     epochs=args.word2vec_epochs, seed=seed, workers=1)
    kept = [word for word in vocab if word in model.wv.key_to_index]  # no word outside the vocabulary is cached
    vectors = KeyedVectors(embedding_dim)
    if kept:
        vectors.add_vectors(kept, model.wv[kept])
        for word in kept:
            vectors.set_vecattr(word, "count", model.wv.get_vecattr(word, "count"))
    write_atomically(cache, lambda file: vectors.save_word2vec_format(file.name, binary=True))  # gensim opens the path
    return vectors


def read_word2vec(path: Path, trust_pickle: bool):
    """Vectors of a word2vec text (.txt, .vec) or binary (.bin) file; a gensim model (.model, .kv) only
    with `trust_pickle`, since gensim stores those as pickles."""
    from gensim.models import KeyedVectors, Word2Vec

    if not path.is_file():
        raise InputError(f"--word2vec {path}: no such file (a word2vec text file .txt/.vec or binary file .bin).")
    if path.suffix in (".txt", ".vec", ".bin"):
        try:
            return KeyedVectors.load_word2vec_format(str(path), binary=path.suffix == ".bin")
        except UNREADABLE_WORD2VEC as error:
            raise InputError(f"--word2vec {path}: not a readable word2vec {'binary' if path.suffix == '.bin' else 'text'} "
                             f"file ({type(error).__name__}); check the file, or save the vectors with gensim's "
                             "save_word2vec_format.") from None
    if not trust_pickle:
        raise InputError(
            f"--word2vec {path} is not a word2vec text (.txt, .vec) or binary (.bin) file: it is read as a pickled "
            "gensim model. Loading it runs pickle, which can execute arbitrary code. If you trust the file, run again "
            "with --trust_pickle, or save its vectors with gensim's save_word2vec_format and pass that file."
        )
    loaded = Word2Vec.load(str(path)) if path.suffix == ".model" else KeyedVectors.load(str(path))
    return getattr(loaded, "wv", loaded)


def embedding_matrix(vectors, vocab: list[str], embedding_dim: int, seed: int) -> torch.Tensor:
    """Rows in tokenizer order: the word's vector, else N(0, 1) (unknown words, [UNK])."""
    if vectors.vector_size != embedding_dim:
        raise InputError(f"word2vec vectors have size {vectors.vector_size}; the config's embedding_dim is {embedding_dim}.")
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
    """BCE averaged over two dropout passes plus α·symmetric KL (the paper's training loss), in one
    forward pass over the doubled batch, so the synonym vectors are computed once per step for both
    passes. With `sampled_negative_codes`, each training step scores the batch's gold codes and that
    many random others: its cost no longer grows with the size of the code set. With
    `extra_negative_codes`, each step also scores that many codes drawn from
    `extra_negative_term_ids` ((E, M, term_length): codes outside the label set), negative for every note."""

    def __init__(self, *args, extra_negative_term_ids: torch.Tensor | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        self.extra_negative_term_ids = extra_negative_term_ids

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        alpha, kl_form = self.args.rdrop_alpha, self.args.rdrop_kl
        if model.training and self.args.sampled_negative_codes > 0:
            inputs["code_indices"] = sampled_codes(inputs["labels"], self.args.sampled_negative_codes)
            inputs["labels"] = inputs["labels"][:, inputs["code_indices"]]
        if model.training and self.args.extra_negative_codes > 0:
            drawn = torch.randperm(len(self.extra_negative_term_ids))[: self.args.extra_negative_codes]
            inputs["extra_code_term_ids"] = self.extra_negative_term_ids[drawn].flatten(0, 1).to(inputs["labels"].device)
            negatives = inputs["labels"].new_zeros(len(inputs["labels"]), len(drawn))
            inputs["labels"] = torch.cat([inputs["labels"], negatives], dim=1)
        if not model.training or alpha == 0:
            return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
        labels = inputs.pop("labels")
        codes = {name: inputs.pop(name) for name in ("code_indices", "extra_code_term_ids") if name in inputs}
        doubled = {name: torch.cat([value, value]) for name, value in inputs.items()}
        first, second = model(**doubled, **codes).logits.chunk(2)
        bce = (F.binary_cross_entropy_with_logits(first, labels) + F.binary_cross_entropy_with_logits(second, labels)) / 2
        loss = bce + alpha * rdrop_kl(first, second, kl_form)
        return (loss, {"logits": first}) if return_outputs else loss

    def _get_eval_sampler(self, eval_dataset):
        """Evaluation in dataset order, which `test_report` relies on to pair each prediction with its
        note's gold codes. (transformers 5 groups evaluation batches by length too when
        `train_sampling_strategy="group_by_length"`, returning predictions out of order.)"""
        return SequentialSampler(eval_dataset) if self.args.world_size <= 1 else None  # None: sharded in order


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
    p, q = torch.sigmoid(first), torch.sigmoid(second)
    log_p, log_q = F.logsigmoid(first), F.logsigmoid(second)
    log_not_p, log_not_q = F.logsigmoid(-first), F.logsigmoid(-second)
    kl_pq = p * (log_p - log_q) + (1 - p) * (log_not_p - log_not_q)
    kl_qp = q * (log_q - log_p) + (1 - q) * (log_not_q - log_not_p)
    return ((kl_pq + kl_qp) / 2).mean()


def probabilities_and_labels(prediction) -> tuple[np.ndarray, np.ndarray]:
    """(sigmoid probabilities, boolean labels) of a `trainer.predict` output or an `EvalPrediction`."""
    probabilities = torch.sigmoid(torch.from_numpy(np.asarray(prediction.predictions, dtype=np.float32))).numpy()
    return probabilities, np.asarray(prediction.label_ids) > 0.5


def evaluation_metrics(eval_prediction) -> dict[str, float]:
    """Dev metrics of one epoch, micro/macro F1 at the threshold tuned on that same dev set."""
    probabilities, labels = probabilities_and_labels(eval_prediction)
    return icd_metrics(probabilities, labels, tune_threshold(probabilities, labels))


# ----------------------------------------------------------------------------- arguments and main


def read_preset(name: str) -> dict:
    path = PRESETS / f"{name}.json"
    if not path.is_file():
        known = sorted(preset.stem for preset in PRESETS.glob("*.json"))
        raise InputError(f"--preset {name!r} is unknown; choose one of {known}, or write {path}.")
    return json.loads(path.read_text(encoding="utf-8"))


def chosen_preset(given: dict) -> dict:
    """The settings of --preset; without a preset and without data arguments, the default preset's."""
    preset = given.get("preset")
    if preset is None and not {"dataset", "train_file", "data_dir"} & set(given):
        preset = DEFAULT_PRESET
    settings = read_preset(preset) if preset else {}
    known = {argument.name for arguments in (DataArguments, MSMNTrainingArguments) for argument in fields(arguments)}
    unknown = sorted(set(settings) - known)
    if unknown:
        raise InputError(f"preset {preset}: {unknown} are not arguments of train.py (python train.py --help lists them).")
    return settings


def parse_arguments(argv: list[str]) -> tuple[DataArguments, MSMNTrainingArguments]:
    """The preset's settings, then the given ones, from the command line or a JSON/YAML file; the
    config overrides add up (the preset's first)."""
    parser = HfArgumentParser((DataArguments, MSMNTrainingArguments), prog="train.py")
    if {"-h", "--help"} & set(argv):
        print(short_help())
        sys.exit(0)
    if "--help-trainer" in argv:
        parser.print_help()
        sys.exit(0)
    from_file = len(argv) == 1 and argv[0].endswith((".json", ".yaml", ".yml"))
    if from_file:
        import yaml  # JSON is YAML

        given = yaml.safe_load(Path(argv[0]).read_text(encoding="utf-8")) or {}
    else:  # what decides the preset and the overrides, read before the rest
        choices = argparse.ArgumentParser(add_help=False)
        for name in ("preset", "dataset", "train_file", "data_dir", "config_overrides"):
            choices.add_argument(f"--{name}", default=argparse.SUPPRESS)
        given = vars(choices.parse_known_args(argv)[0])
    settings = chosen_preset(given)
    overrides = ",".join(filter(None, [settings.get("config_overrides"), given.get("config_overrides")])) or None
    try:
        if from_file:
            return parser.parse_dict({**settings, **given, "config_overrides": overrides})
        parser.set_defaults(**settings)  # the command line wins over the preset, also with a default value
        data_args, training_args, unknown = parser.parse_args_into_dataclasses(argv, return_remaining_strings=True)
    except InputError:  # an argument's own check: its message names it
        raise
    except ValueError as error:  # e.g. a key that is no argument, in the file
        raise InputError(f"{argv[0]}: {error}") from None
    if unknown:
        raise InputError(f"unknown arguments {unknown}; python train.py --help lists them.")
    data_args.config_overrides = overrides
    return data_args, training_args


MSMN_TRAINING_ARGUMENTS = ["rdrop_alpha", "rdrop_kl", "sampled_negative_codes", "extra_negative_codes",
                           "overwrite_output_dir"]


def short_help() -> str:
    """--help: train.py's own arguments and the Trainer defaults it changes; --help-trainer lists the Trainer's."""
    parser = HfArgumentParser(DataArguments, prog="train.py", description=__doc__.split("\n\n")[0],
                              usage="python train.py [--preset NAME] [arguments] | python train.py FILE.json")
    own = parser.add_argument_group("training (train.py's own)")
    names = {argument.name: argument for argument in fields(MSMNTrainingArguments)}
    for name in MSMN_TRAINING_ARGUMENTS:
        kind = {"action": "store_true"} if isinstance(names[name].default, bool) else {"metavar": name.upper()}
        own.add_argument(f"--{name}", default=names[name].default, help=names[name].metadata["help"] + " (default: %(default)s)",
                         **kind)
    changed = ", ".join(f"--{argument.name} {argument.default}" for argument in fields(MSMNTrainingArguments)
                        if argument.name not in MSMN_TRAINING_ARGUMENTS
                        and argument.default != getattr(TrainingArguments, argument.name, argument.default))
    trainer = (f"The Trainer's own arguments (transformers.TrainingArguments: --output_dir, --seed, --num_train_epochs, "
               f"...) are accepted too; train.py's defaults for them: {changed}. python train.py --help-trainer lists them all.")
    return parser.format_help() + "\n" + textwrap.fill(trainer, width=100) + "\n"


def check_output_dir(output_dir: str, overwrite: bool, resuming: bool, is_main_process: bool) -> None:
    """An --output_dir that holds files is refused, unless --overwrite_output_dir (its checkpoint-* folders then
    go) or --resume_from_checkpoint."""
    folder = Path(output_dir)
    if resuming or not folder.is_dir() or not any(folder.iterdir()):
        return
    if not overwrite:
        raise InputError(f"--output_dir {folder}: holds files already (an earlier run?). Give another --output_dir, or "
                         "--overwrite_output_dir to replace what is there.")
    if is_main_process:
        for checkpoint in folder.glob("checkpoint-*"):
            shutil.rmtree(checkpoint)


def model_config(overrides: str | None, **settings) -> MSMNConfig:
    """MSMNConfig from `settings` and the `name=value,...` overrides (typed as the config's fields), validated."""
    try:
        typed = MSMNConfig()
        if overrides:
            typed.update_from_string(overrides)
        names = [item.split("=")[0] for item in overrides.split(",")] if overrides else []
        return MSMNConfig(**settings, **{name: getattr(typed, name) for name in names})
    except (ValueError, TypeError) as error:
        raise InputError(f"--config_overrides {overrides!r}: {error}") from None


def setup(argv: list[str]) -> tuple[DataArguments, MSMNTrainingArguments]:
    """The arguments, checked against the machine and the launcher; logging and the seed set."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size > 1 and not torch.cuda.is_available():
        # Without it, transformers sets up no process group on CPU and each process trains alone.
        os.environ.setdefault("ACCELERATE_USE_CPU", "true")
    data_args, training_args = parse_arguments(argv)
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
    check_output_dir(training_args.output_dir, training_args.overwrite_output_dir,
                     training_args.resume_from_checkpoint is not None, training_args.process_index == 0)
    logging.basicConfig(level=logging.INFO if training_args.should_log else logging.WARNING)
    logging.getLogger("gensim").setLevel(logging.WARNING)
    set_seed(training_args.seed)
    return data_args, training_args


def load_data(data_args: DataArguments, training_args: MSMNTrainingArguments, settings: MSMNConfig):
    """The dataset's splits, cut to --max_*_samples; without dev, no epoch selection."""
    data = datasets_scripts.load(data_args.dataset, num_synonyms=settings.num_synonyms, **data_args.dataset_options())
    data.limit(data_args.max_train_samples, data_args.max_eval_samples)
    if "validation" not in data.splits:
        training_args.eval_strategy, training_args.load_best_model_at_end = "no", False
    selection = training_args.metric_for_best_model or ""
    if selection.startswith("precision_at_") and int(selection.rsplit("_", 1)[1]) >= len(data.codes):
        logger.warning("%s cannot tell models apart with %d codes: selecting the best epoch by micro_auc", selection, len(data.codes))
        training_args.metric_for_best_model = "micro_auc"
    return data


def candidates(data_args: DataArguments, training_args: MSMNTrainingArguments, settings: MSMNConfig, data):
    """(code → terms of --candidate_codes, the code system's name, the candidates outside the label set:
    where extra negatives come from)."""
    candidate_terms, code_system = candidate_code_terms(data_args.candidate_codes, settings.num_synonyms)
    extra_negative_codes = sorted(set(candidate_terms) - set(data.codes))
    if training_args.extra_negative_codes and not extra_negative_codes:
        raise InputError(f"--extra_negative_codes draws codes of --candidate_codes outside the {len(data.codes)} "
                         "label codes, and there are none: add --candidate_codes icd10cm.")
    if (training_args.extra_negative_codes or candidate_terms) and settings.score_function == "linear":
        raise InputError("--candidate_codes, --extra_negative_codes: score_function=linear has weights per label code, "
                         "so it cannot score other codes; choose reference, biaffine or dot.")
    if candidate_terms and "validation" not in data.splits:
        raise InputError("--candidate_codes: the ranking's operating points are chosen on dev, and this dataset has no "
                         "validation split; give --validation_file.")
    return candidate_terms, code_system, extra_negative_codes


def candidate_ranker(trainer, data, candidate_terms: dict, code_system: str, term_seed: int | None):
    """The ranker of the label set and the candidates, its operating points chosen on dev (`build_ranker`)."""
    train_counts = Counter(code for codes in data.splits["train"]["gold_codes"] for code in codes)
    reference_texts = data.unlabelled_texts or list(data.splits["train"]["text"])
    logger.info("candidates: choosing on dev how to rank the %d label codes and the %s codes, %d in all (MSMN scores "
                "every candidate for each dev note once)", len(data.codes), code_system,
                len(set(candidate_terms) | set(data.codes)))
    ranker, _ = build_ranker(trainer.model, trainer.processing_class, candidate_terms, train_counts, reference_texts,
                             list(data.splits["validation"]["text"]), list(data.splits["validation"]["gold_codes"]),
                             code_system, term_seed, trainer.args.per_device_eval_batch_size)
    for name, point in ranker.operating_points.items():
        logger.info("candidates: operating point %s: λ %s, β %s, shortlist %s; dev %s", name, point.term_match_weight,
                    point.prior_weight, point.shortlist_size, point.dev)
    return ranker


def build_model(data_args: DataArguments, training_args: MSMNTrainingArguments, settings: MSMNConfig, data,
                candidate_terms):
    """(tokenizer, model with word2vec embeddings): the vocabulary from the training notes and the code
    terms (the candidates' too), each code's M terms, the config."""
    candidate_term_list = [term for terms in candidate_terms.values() for term in terms]
    term_words = [word for code in data.codes for term in data.code_terms[code] for word in split_words(term)]
    term_words += [word for term in candidate_term_list for word in split_words(term)]
    train_texts = data.splits["train"]["text"]
    vocab = build_vocabulary(train_texts, data_args.min_count, term_words, min_texts=data_args.min_notes)
    tokenizer = build_tokenizer(vocab, model_max_length=settings.max_note_tokens)
    term_ids, terms = build_code_term_ids(tokenizer, data.codes, data.code_terms, settings.num_synonyms,
                                          settings.term_length, data_args.term_seed_or_none())
    config = model_config(
        data_args.config_overrides, vocab_size=len(vocab), pad_token_id=tokenizer.pad_token_id,
        id2label=dict(enumerate(data.codes)), code_terms=terms,
        code_descriptions=[data.code_terms[code][0] for code in data.codes],
        training_note_words=note_word_counts(tokenizer, train_texts),
    )
    model = MSMNForSequenceClassification(config, code_term_ids=term_ids)
    word2vec_texts = list(train_texts) + (data.unlabelled_texts if data_args.word2vec_unlabelled_texts else [])
    if data_args.word2vec_epochs is None:
        data_args.word2vec_epochs = 10 if len(word2vec_texts) >= SMALL_WORD2VEC_CORPUS else 100
    # each candidate term a sentence: its words get vectors, also those no note holds
    word2vec_texts += candidate_term_list
    vectors = word2vec_vectors(data_args, tokenizer, word2vec_texts, config.embedding_dim, training_args.seed)
    model.set_word_embeddings(embedding_matrix(vectors, vocab, config.embedding_dim, training_args.seed))
    return tokenizer, model


def note_word_counts(tokenizer, texts) -> dict[str, int]:
    """The 1st percentile and the median of the training notes' words: the pipeline flags a note shorter than
    99% of them."""
    counts = [len(ids) for ids in tokenizer(list(texts), add_special_tokens=False)["input_ids"]]
    return {"p1": int(np.percentile(counts, 1)), "median": int(np.median(counts))}


def encode_splits(data, tokenizer, config: MSMNConfig):
    """Token ids and multi-hot labels (notes × codes) of every split."""

    def encode(batch):
        encoded = tokenizer(batch["text"], truncation=True, max_length=config.max_note_tokens)
        encoded["labels"] = np.zeros((len(batch["labels"]), len(data.codes)), dtype=np.float32)
        for row, document_codes in enumerate(batch["labels"]):
            encoded["labels"][row, [config.label2id[code] for code in document_codes]] = 1.0
        return encoded

    return data.splits.map(encode, batched=True, remove_columns=data.splits["train"].column_names)


def evaluate(trainer, encoded, data) -> tuple[dict, dict]:
    """(test report, dev metrics), both at the threshold tuned on dev (stored in the config)."""
    results, dev_results = {}, {}
    if "validation" in encoded:  # every process predicts its share; the Trainer gathers them
        probabilities, labels = probabilities_and_labels(trainer.predict(encoded["validation"]))
        trainer.model.config.threshold = min(max(tune_threshold(probabilities, labels), 1e-6), 1 - 1e-6)
        dev_results = icd_metrics(probabilities, labels, trainer.model.config.threshold)
    if "test" in encoded:
        probabilities, labels = probabilities_and_labels(trainer.predict(encoded["test"]))
        train_codes = {code for document in data.splits["train"]["labels"] for code in document}
        results = test_report(probabilities, labels, data.splits["test"]["gold_codes"], data.codes, train_codes,
                              trainer.model.config.threshold)
    return results, dev_results


def main(argv: list[str] | None = None) -> dict[str, float]:
    data_args, training_args = setup(sys.argv[1:] if argv is None else argv)
    push_to_hub, training_args.push_to_hub = training_args.push_to_hub, False  # pushed once, at the end
    settings = model_config(data_args.config_overrides)  # checked before the data are built
    data = load_data(data_args, training_args, settings)
    candidate_terms, code_system, extra_negative_codes = candidates(data_args, training_args, settings, data)
    tokenizer, model = build_model(data_args, training_args, settings, data, candidate_terms)
    config = model.config
    extra_negative_term_ids = None  # (E, M, term_length): the codes extra negatives are drawn from
    if training_args.extra_negative_codes:
        extra_ids = build_code_term_ids(tokenizer, extra_negative_codes, candidate_terms, config.num_synonyms,
                                        config.term_length, data_args.term_seed_or_none())[0]
        extra_negative_term_ids = torch.tensor(extra_ids).view(len(extra_negative_codes), config.num_synonyms, -1)
    encoded = encode_splits(data, tokenizer, config)
    trainer = RDropTrainer(
        model=model,
        args=training_args,
        train_dataset=encoded["train"],
        eval_dataset=encoded.get("validation"),
        data_collator=note_collator(tokenizer),
        processing_class=tokenizer,
        compute_metrics=evaluation_metrics,
        extra_negative_term_ids=extra_negative_term_ids,
    )
    trainer.train(resume_from_checkpoint=training_args.resume_from_checkpoint)
    results, dev_results = evaluate(trainer, encoded, data)
    if trainer.is_world_process_zero():
        ranker = candidate_ranker(trainer, data, candidate_terms, code_system, data_args.term_seed_or_none()) if (
            candidate_terms) else None
        save_checkpoint(trainer, results, dev_results, data.card, data_args.min_notes, push_to_hub, ranker)
    return results


def save_checkpoint(trainer, results, dev_results, card, min_notes, push_to_hub, ranker=None):
    folder = Path(trainer.args.output_dir)
    # through the pipeline: the folder also gets the pipeline's code and its entry in the config
    ICDCodingPipeline(model=trainer.model, tokenizer=trainer.processing_class).save_pretrained(folder)
    if ranker is not None:
        ranker.save_pretrained(folder)
    (folder / "training_args.json").write_text(trainer.args.to_json_string(), encoding="utf-8")
    (folder / "test_results.json").write_text(json.dumps(results, indent=2))
    (folder / "dev_results.json").write_text(json.dumps(dev_results, indent=2))
    repo = trainer.args.hub_model_id or folder.name
    model_card(trainer.model.config, results, card, repo, min_notes).save(folder / "README.md")
    if results:
        print("\nTest set (threshold tuned on dev):\n" + metric_table(results))
    print(f"Saved MSMN ({trainer.model.config.num_labels} codes) to {folder}")
    if push_to_hub:
        from huggingface_hub import HfApi

        print(upload_summary(folder, repo, trainer.args.hub_private_repo, trainer.model.config.vocab_size, min_notes))
        api = HfApi(token=trainer.args.hub_token)
        api.create_repo(repo, private=trainer.args.hub_private_repo, exist_ok=True)
        api.upload_folder(repo_id=repo, folder_path=folder, ignore_patterns=HUB_IGNORED,
                          commit_message="MSMN checkpoint trained with msmn/train.py")
        print(f"Pushed {folder} to https://huggingface.co/{repo}")


def upload_summary(folder: Path, repo: str, private: bool | None, vocab_size: int, min_notes: int) -> str:
    """What --push_to_hub uploads, said before it uploads: each file, who can see it, what the vocabulary holds."""
    names = sorted(path.relative_to(folder).as_posix() for path in folder.rglob("*") if path.is_file())
    names = [name for name in names if not any(fnmatch(name, pattern) for pattern in HUB_IGNORED)]
    visibility = "private" if private else "public unless your account makes new repositories private"
    lines = [f"Uploading {len(names)} files of {folder} to https://huggingface.co/{repo} ({visibility}):"]
    lines += [f"  {name} ({(folder / name).stat().st_size:,} bytes)" for name in names]
    lines.append(f"tokenizer.json lists the {vocab_size:,} words of the vocabulary: the words of the code terms, and "
                 f"each word of the training notes that at least {min_notes} of them hold (--min_notes).")
    return "\n".join(lines)


if __name__ == "__main__":
    try:
        main()
    except InputError as error:  # bad input: the message names the file or argument at fault and the fix
        sys.exit(f"error: {error}")
