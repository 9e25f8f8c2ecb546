"""The datasets MSMN trains on, one module each, behind one call:

    import datasets_scripts
    data = datasets_scripts.load("codiesp", config="codiesp-d-50")
    data.splits["train"][0]   # {"id", "text", "labels": ["R50.9", ...], "gold_codes": [...], ...}
    data.codes                # the label set, in the model's label order
    data.code_terms           # code → [description, synonym, ...]
    data.card                 # name, Hub id, licence, citation: what a model card says of the data

Every dataset returns the same `CodingData` (see `coding_data.py`). A new dataset is one module here
with a `load(...) -> CodingData` function, and one entry in `DATASETS`.
"""

import functools
import inspect

from . import codiesp, mdace, mimic_edin, mimic_iii, own_notes
from .coding_data import CodingData, DataCard
from .errors import InputError

DATASETS = {
    "codiesp": codiesp.load,  # ships with the package (CC BY 4.0)
    "mimic3": mimic_iii.load,  # your own MIMIC-III v1.4 files, CAML's splits
    "mimic4": mimic_edin.load,  # your own MIMIC-IV and MIMIC-IV-Note files, Edin et al.'s splits (ICD-10, ICD-9)
    "mimic3-clean": functools.partial(mimic_edin.load, config="mimic3-clean"),  # MIMIC-III, Edin et al.'s splits
    "mdace": mdace.load,  # MDACE's code evidence (shipped) on your MIMIC-III notes
    "files": own_notes.load,  # your own notes as JSON lines
}


def load(name: str, num_synonyms: int | None = None, **options) -> CodingData:
    """The dataset `name` built with `options` (each dataset's `load` lists its own). `num_synonyms`
    (M, the terms per code the model takes) goes to the datasets that complete their code terms up to M."""
    if name not in DATASETS:
        raise InputError(f"--dataset {name!r} is unknown; choose one of {sorted(DATASETS)}.")
    loader = DATASETS[name]
    accepted = inspect.signature(loader).parameters
    unknown = sorted(set(options) - set(accepted))
    if unknown:
        raise InputError(
            f"--dataset {name} takes no option {', '.join(unknown)}; its options are {', '.join(accepted)}."
        )
    if num_synonyms is not None and "num_synonyms" in accepted:
        options["num_synonyms"] = num_synonyms
    return loader(**options)


__all__ = ["DATASETS", "CodingData", "DataCard", "InputError", "load"]
