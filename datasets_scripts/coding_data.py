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

from .files import InputError

logger = logging.getLogger(__name__)

COLUMNS = ("id", "text", "labels", "gold_codes")


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
        """Checks the shape above, and represents a code without terms by its code string."""
        if "train" not in self.splits:
            raise InputError(f"{self.card.name}: there is no train split.")
        label_set = set(self.codes)
        for name, split in self.splits.items():
            missing = [column for column in COLUMNS if column not in split.column_names]
            if missing:
                raise InputError(f"{self.card.name}, {name} split: no column {missing}; every dataset has {COLUMNS}.")
            if len(split) == 0:
                raise InputError(f"{self.card.name}: the {name} split is empty; it needs at least one document.")
            unknown = {code for labels in split["labels"] for code in labels} - label_set
            if unknown:
                raise InputError(
                    f"{self.card.name}, {name} split: labels {sorted(unknown)[:5]} are not in the label set; "
                    "add their terms to the code terms (they define the label set) or drop them from the labels."
                )
        without_terms = [code for code in self.codes if not self.code_terms.get(code)]
        if without_terms:
            logger.warning("%d codes have no terms; they are represented by their code string (e.g. %s)",
                           len(without_terms), without_terms[:3])
        self.code_terms = {code: self.code_terms.get(code) or [code] for code in self.codes}

    def limit(self, train: int | None = None, evaluation: int | None = None) -> None:
        """Keeps the first `train` training documents and the first `evaluation` dev and test documents."""
        for name, limit in (("train", train), ("validation", evaluation), ("test", evaluation)):
            if name in self.splits and limit is not None:
                self.splits[name] = self.splits[name].select(range(min(limit, len(self.splits[name]))))
