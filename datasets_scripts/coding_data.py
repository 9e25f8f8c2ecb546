"""The one shape every dataset takes: `CodingData`, what `datasets_scripts.load(name, ...)` returns.

- `splits`: a `DatasetDict` with "train" and, where the dataset has them, "validation" and "test";
  each example has `id` (string), `text`, `labels` (its codes in the label set, as code strings)
  and `gold_codes` (all its codes, also those outside the label set: MAP counts every one).
- `codes`: the label set, in the model's label order.
- `code_terms`: code → [description, synonym, ...] for every code of the label set.
- `card`: what the dataset says about itself on a model card (name, Hub id, licence, citation).
- `unlabelled_texts`: more texts of the same kind without codes, for word2vec only.
"""

import logging
from dataclasses import dataclass, field

import datasets
from datasets import DatasetDict

from .errors import InputError

logger = logging.getLogger(__name__)

COLUMNS = ("id", "text", "labels", "gold_codes")
# The split of each name the sources' split lists use: their dev split is "dev" (CodiEsp, CAML) or
# "val" (Edin et al., MDACE).
SPLIT_OF = {"train": datasets.Split.TRAIN, "dev": datasets.Split.VALIDATION, "val": datasets.Split.VALIDATION,
            "test": datasets.Split.TEST}


def coding_features(**columns) -> datasets.Features:
    """A builder's features: the common columns above, then the dataset's own `columns`."""
    return datasets.Features({
        "id": datasets.Value("string"),
        "text": datasets.Value("string"),
        "labels": datasets.List(datasets.Value("string")),
        "gold_codes": datasets.List(datasets.Value("string")),
        **columns,
    })


@dataclass
class DataCard:
    """The dataset's entry on a model card. `license` is a Hub licence id: the weights trained on the
    data follow it; `usage_note` says what the data's terms ask of whoever shares the weights."""

    name: str
    dataset_id: str
    description: str
    license: str
    language: str = "en"
    citation: str | None = None
    usage_note: str = ""


@dataclass
class CodingData:
    splits: DatasetDict
    codes: list[str]
    code_terms: dict[str, list[str]]
    card: DataCard
    unlabelled_texts: list[str] = field(default_factory=list)

    def __post_init__(self):
        """Checks the shape above, drops training notes without text, warns of what looks wrong (with counts,
        never text), and represents a code without terms by its code string."""
        if "train" not in self.splits:
            raise InputError(f"{self.card.name}: there is no train split.")
        for name, split in self.splits.items():
            self.check_split(name, split)
        self.drop_empty_training_notes()
        self.warn_of_repeated_ids()
        terms = {code: [term for term in self.code_terms.get(code) or [] if term.strip()] for code in self.codes}
        without_terms = [code for code in self.codes if not terms[code]]
        if without_terms:
            logger.warning("%d of %d codes have no terms; each is matched by its code string alone (e.g. %s). Give "
                           "them at least a description in the code terms.", len(without_terms), len(self.codes),
                           without_terms[:3])
        self.code_terms = {code: terms[code] or [code] for code in self.codes}

    def check_split(self, name: str, split: datasets.Dataset) -> None:
        missing = [column for column in COLUMNS if column not in split.column_names]
        if missing:
            raise InputError(f"{self.card.name}, {name} split: no column {missing}; every dataset has {COLUMNS}.")
        if len(split) == 0:
            raise InputError(f"{self.card.name}: the {name} split is empty; it needs at least one document.")
        labels = split["labels"]
        unknown = {code for codes in labels for code in codes} - set(self.codes)
        if unknown:
            raise InputError(
                f"{self.card.name}, {name} split: labels {sorted(unknown)[:5]} are not in the label set; "
                "add their terms to the code terms (they define the label set) or drop them from the labels."
            )
        if not any(labels):
            message = f"{self.card.name}: no document of the {name} split has a code of the label set"
            if name == "train":
                raise InputError(message + "; there is nothing to learn. Check the labels of the training file.")
            logger.warning("%s: its metrics (and a threshold tuned on it) mean nothing.", message)
        if name == "train":  # its notes without text are dropped (drop_empty_training_notes)
            return
        empty = sum(not text.strip() for text in split["text"])
        if empty:
            logger.warning("%s: %d of %d documents of the %s split have no text; they are kept and scored.",
                           self.card.name, empty, len(split), name)

    def drop_empty_training_notes(self) -> None:
        train = self.splits["train"]
        kept = [index for index, text in enumerate(train["text"]) if text.strip()]
        if len(kept) < len(train):
            if not kept:
                raise InputError(f"{self.card.name}: every document of the train split is empty (no text).")
            logger.warning("%s: dropped %d of %d training documents that have no text (empty or only spaces).",
                           self.card.name, len(train) - len(kept), len(train))
            self.splits["train"] = train.select(kept)

    def warn_of_repeated_ids(self) -> None:
        """Counts ids that repeat within a split, and ids shared by two splits (the same note twice?)."""
        ids = {name: split["id"] for name, split in self.splits.items()}
        for name, split_ids in ids.items():
            repeated = len(split_ids) - len(set(split_ids))
            if repeated:
                logger.warning("%s: %d documents of the %s split repeat an id of that split.",
                               self.card.name, repeated, name)
        names = list(ids)
        for position, first in enumerate(names):
            for second in names[position + 1:]:
                shared = len(set(ids[first]) & set(ids[second]))
                if shared:
                    logger.warning("%s: %d ids are in both the %s and the %s split; if they are the same notes, "
                                   "the %s metrics are inflated.", self.card.name, shared, first, second, second)

    def limit(self, train: int | None = None, evaluation: int | None = None) -> None:
        """Keeps the first `train` training documents and the first `evaluation` dev and test documents."""
        for name, limit in (("train", train), ("validation", evaluation), ("test", evaluation)):
            if name in self.splits and limit is not None:
                self.splits[name] = self.splits[name].select(range(min(limit, len(self.splits[name]))))
