"""train.py's arguments: the data and model arguments (`DataArguments`), the Trainer's with the paper's
defaults and MSMN's own (`MSMNTrainingArguments`), the presets, and their parsing from the command
line or a JSON/YAML file (the command line wins over the preset)."""

import argparse
import json
import shutil
import sys
import textwrap
from dataclasses import dataclass, field, fields
from pathlib import Path

from transformers import HfArgumentParser, TrainingArguments

import datasets_scripts
from datasets_scripts import InputError
from modeling_msmn import MSMNConfig
from msmn.training.word2vec import SMALL_WORD2VEC_CORPUS

PRESETS = Path(__file__).resolve().parents[2] / "presets"  # presets/ at the top of the repository
DEFAULT_PRESET = "codiesp-d-50"  # without a preset and without data arguments


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
    vocabulary_words: Path | None = field(
        default=None,
        metadata={"help": "with --word2vec: the vocabulary is the words of those vectors that this file lists (a JSON "
                          "list of words, or an object word → count such as the authors' embedding/word_count_dict.json), "
                          "each with its vector, as the authors built theirs; --min_count and --min_notes do not apply"},
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
        if self.vocabulary_words is not None and self.word2vec is None:
            raise InputError("--vocabulary_words keeps the words of --word2vec that it lists: give --word2vec too (the "
                             "authors' word2vec model, with --trust_pickle if it is a gensim model).")

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
    recipe: str = field(
        default="package",
        metadata={"help": "'authors': train as the paper's code did (their AdamW update and weight-decay set, their "
                          "schedule length, accumulation windows carried over epoch ends, the later epoch on a tie, "
                          "their threshold rule; docs/training.md); 'package': the Trainer's own"},
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
        if self.recipe not in ("package", "authors"):
            raise InputError(f"--recipe {self.recipe!r}: choose 'package' or 'authors'.")
        if self.recipe == "authors" and self.greater_is_better is False:
            raise InputError("--recipe authors keeps the epoch with the highest --metric_for_best_model; "
                             "leave out --greater_is_better false, or train with --recipe package.")
        super().__post_init__()


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


MSMN_TRAINING_ARGUMENTS = ["recipe", "rdrop_alpha", "rdrop_kl", "sampled_negative_codes", "extra_negative_codes",
                           "overwrite_output_dir"]


def short_help() -> str:
    """--help: train.py's own arguments and the Trainer defaults it changes; --help-trainer lists the Trainer's."""
    parser = HfArgumentParser(DataArguments, prog="train.py", description="Train MSMN, evaluate it like the paper, and "
                              "save a self-contained checkpoint folder.",
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
