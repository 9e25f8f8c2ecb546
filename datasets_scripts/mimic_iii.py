"""MIMIC-III v1.4 → the standard ICD-coding splits (CAML's, as the MSMN authors used them).

Your own MIMIC-III files are read from `data_dir` (NOTEEVENTS, DIAGNOSES_ICD, PROCEDURES_ICD,
.csv or .csv.gz); nothing of MIMIC-III ships with this package. The public CAML split lists
(hadm_ids only, MIT licence) do, in `data/caml_splits/`.

    import datasets_scripts
    data = datasets_scripts.load("mimic3", config="mimic3-50", data_dir="/path/to/mimic-iii-1.4",
                                 code_terms="synonyms.json")  # made by python -m datasets_scripts.code_synonyms

Each example: `id` (the admission's HADM_ID), `hadm_id`, `subject_id`, `text` (every discharge
summary of the admission, reports and addenda, joined with a tab in file order), `labels` and
`gold_codes` (its ICD-9 codes in the config's code set, CAML-formatted). The split and code-set
sizes are reported against the paper's (a warning names each difference and its likely reason);
they never stop a build. What does stop it is evidence of damaged input, named with the file, the
line and the fix: a malformed or cut-short file, a field that should be a number, text that is
not UTF-8, or a split none of whose listed admissions has a discharge summary.

Procedure codes keep their leading zeros ("01.51", the correct ICD-9-CM code). CAML, whose label
set the MSMN authors used, read PROCEDURES_ICD with pandas, which parsed the codes as numbers:
"0151" became "15.1" and "0066" became "66.". `caml_procedure_codes=True` reproduces that integer
reading, for the paper's label set; it cannot reproduce CAML's chunk-dependent float reading (pairs
such as "93.9"/"93.90"), so its full code count still differs a little from CAML's 8,929.
"""

import logging
from collections import defaultdict
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import datasets

from .coding_data import CodingData, DataCard, SPLIT_OF, coding_features
from .errors import InputError
from .icd_codes import format_icd9_code
from .files import find_input, read_code_terms, read_csv_rows
from .local_files import LocalFilesBuilder, LocalFilesConfig

logger = logging.getLogger(__name__)

SPLITS = ("train", "dev", "test")  # the names of its split lists
EXPECTED_SIZES = {  # documents per split and codes in the label set (the paper's data table)
    "full": {"train": 47_723, "dev": 1_631, "test": 3_372, "codes": 8_929},
    "50": {"train": 8_066, "dev": 1_573, "test": 1_729, "codes": 50},
}
INPUT_FILES = ("NOTEEVENTS.csv", "DIAGNOSES_ICD.csv", "PROCEDURES_ICD.csv")
DISCHARGE_SUMMARY = "Discharge summary"


def admission_id(value: str, path: Path, line: int, column: str = "HADM_ID", dataset: str = "MIMIC-III") -> int | None:
    """A row's id column as a number (None where empty); anything else is damaged input."""
    if not value:
        return None
    try:
        return int(value)
    except ValueError:
        raise InputError(
            f"{path}, line {line}: {column} is not a number; the file is damaged or is not {dataset}'s. "
            "Download it again."
        ) from None


def caml_file(name: str) -> str:
    return (resources.files("datasets_scripts") / "data" / "caml_splits" / name).read_text(encoding="utf-8")


def split_hadm_ids(setting: str) -> dict[str, list[int]]:
    return {split: [int(line) for line in caml_file(f"{split}_{setting}_hadm_ids.csv").split()] for split in SPLITS}


def top50_codes() -> list[str]:
    return caml_file("top50_codes.txt").split()


@dataclass
class MimicIIIConfig(LocalFilesConfig):
    """setting: "full" or "50"; caml_procedure_codes: procedure codes read as integers, as CAML did."""

    setting: str = "full"
    caml_procedure_codes: bool = False


class MimicIII(LocalFilesBuilder):
    BUILDER_CONFIG_CLASS = MimicIIIConfig
    BUILDER_CONFIGS = [
        MimicIIIConfig(name="mimic3-full", setting="full", description="all 8,929 codes of the CAML splits"),
        MimicIIIConfig(name="mimic3-50", setting="50", description="the 50 most frequent codes (CAML)"),
    ]
    DEFAULT_CONFIG_NAME = "mimic3-50"

    def __init__(self, *args, **kwargs):
        self._codes_by_admissions = {}  # hadm_id set → its admissions' codes, read once per builder
        super().__init__(*args, **kwargs)

    def find_inputs(self, folder: Path | None) -> dict[str, Path]:
        if folder is None:
            raise InputError(
                "MimicIII needs data_dir: the folder with your MIMIC-III v1.4 NOTEEVENTS, DIAGNOSES_ICD and "
                "PROCEDURES_ICD files (.csv or .csv.gz)."
            )
        return {name: find_input(folder, name) for name in INPUT_FILES}

    def _admission_codes(self, hadm_ids: frozenset[int]) -> dict[int, list[str]]:
        """The CAML-formatted diagnosis and procedure codes of each listed admission, in file order.
        Read once: the full setting needs them for its code list (`_info`) and for its labels."""
        if hadm_ids in self._codes_by_admissions:
            return self._codes_by_admissions[hadm_ids]
        codes = defaultdict(list)
        for name, is_diagnosis in (("DIAGNOSES_ICD.csv", True), ("PROCEDURES_ICD.csv", False)):
            path = self.input_paths[name]
            for line, row in read_csv_rows(path, ["HADM_ID", "ICD9_CODE"]):
                hadm_id = admission_id(row["HADM_ID"], path, line)
                if row["ICD9_CODE"] and hadm_id in hadm_ids:
                    code = format_icd9_code(row["ICD9_CODE"], is_diagnosis, self.config.caml_procedure_codes)
                    if code not in codes[hadm_id]:
                        codes[hadm_id].append(code)
        self._codes_by_admissions[hadm_ids] = codes
        return codes

    def _code_list(self) -> list[str]:
        if self.config.setting == "50":
            return sorted(top50_codes())
        hadm_ids = frozenset(hadm_id for ids in split_hadm_ids("full").values() for hadm_id in ids)
        return sorted({code for codes in self._admission_codes(hadm_ids).values() for code in codes})

    def _info(self):
        self.codes = self._code_list()
        return datasets.DatasetInfo(
            description=__doc__,
            features=coding_features(hadm_id=datasets.Value("int64"), subject_id=datasets.Value("int64")),
            homepage="https://physionet.org/content/mimiciii/1.4/",
            license="PhysioNet Credentialed Health Data License 1.5.0 (the data); CAML split lists: MIT",
        )

    def _discharge_summaries(self, hadm_ids: set[int]) -> dict[int, tuple[int, list[str]]]:
        """hadm_id → (subject_id, texts of its discharge summaries in file order), streaming NOTEEVENTS."""
        notes = {}
        path = self.input_paths["NOTEEVENTS.csv"]
        for line, row in read_csv_rows(path, ["SUBJECT_ID", "HADM_ID", "CATEGORY", "TEXT"], progress=True):
            if row["CATEGORY"] != DISCHARGE_SUMMARY:
                continue
            hadm_id = admission_id(row["HADM_ID"], path, line)
            if hadm_id in hadm_ids:
                subject_id = admission_id(row["SUBJECT_ID"], path, line, "SUBJECT_ID")
                notes.setdefault(hadm_id, (subject_id, []))[1].append(row["TEXT"])
        return notes

    def _split_generators(self, dl_manager):
        split_ids = split_hadm_ids(self.config.setting)
        listed = frozenset(hadm_id for ids in split_ids.values() for hadm_id in ids)
        code_set = set(self.codes)
        admission_codes = self._admission_codes(listed)
        notes = self._discharge_summaries(listed)
        examples = {
            split: [
                {
                    "hadm_id": hadm_id,
                    "subject_id": notes[hadm_id][0],
                    "text": "\t".join(notes[hadm_id][1]),
                    "labels": [code for code in admission_codes.get(hadm_id, []) if code in code_set],
                }
                for hadm_id in ids
                if hadm_id in notes
            ]
            for split, ids in split_ids.items()
        }
        self._check_sizes(examples, split_ids)
        return [
            datasets.SplitGenerator(name=SPLIT_OF[split], gen_kwargs={"examples": examples[split]})
            for split in SPLITS
        ]

    def _check_sizes(self, examples, split_ids):
        """Stops on a split without any document (damaged or foreign input); reports, as a warning,
        every other difference from the paper's sizes with its likely reason."""
        notes_file = self.input_paths["NOTEEVENTS.csv"]
        for split, ids in split_ids.items():
            if not examples[split]:
                raise InputError(
                    f"{notes_file}: none of the {len(ids):,} admissions of the {split} split has a discharge "
                    "summary (CATEGORY 'Discharge summary'). Is this the NOTEEVENTS file of MIMIC-III v1.4, whole?"
                )
        expected = EXPECTED_SIZES[self.config.setting]
        found = {split: len(examples[split]) for split in SPLITS} | {"codes": len(self.codes)}
        differences = [f"{key} {found[key]:,} (the paper: {expected[key]:,})" for key in expected if found[key] != expected[key]]
        if differences:
            without_notes = sum(len(ids) - len(examples[split]) for split, ids in split_ids.items())
            reasons = [f"{without_notes:,} listed admissions have no discharge summary in {notes_file.name} "
                       "(another MIMIC-III version, or a subset of it)"] if without_notes else []
            if found["codes"] != expected["codes"] and self.config.setting == "full":
                leading_zero = sum(1 for code in self.codes if len(code) > 2 and code[0] == "0" and code[2] == ".")
                reasons.append(f"CAML read procedure codes as numbers: the {leading_zero:,} procedure codes here with a "
                               "leading zero (01.51) are other codes in CAML's list (15.1), some merged with existing "
                               "ones (caml_procedure_codes=True reproduces that reading)"
                               if not self.config.caml_procedure_codes else
                               "CAML's chunk-dependent float reading of some procedure codes (93.9/93.90)")
            logger.warning("%s differs from the paper's data: %s. Likely reasons: %s.", self.config.name,
                           "; ".join(differences), "; ".join(reasons) or "a MIMIC-III version other than v1.4")

    def _generate_examples(self, examples):
        for example in examples:
            yield example["hadm_id"], {"id": str(example["hadm_id"]), **example, "gold_codes": example["labels"]}


def load(
    config: str = "mimic3-50",
    data_dir: str | None = None,
    code_terms: str | None = None,
    caml_procedure_codes: bool = False,
    cache_dir: str | None = None,
) -> CodingData:
    """The train/validation/test splits built from your MIMIC-III files (once, then read from the
    cache), with the code terms of `code_terms` (made by `python -m datasets_scripts.code_synonyms`);
    `caml_procedure_codes`: procedure codes as CAML read them (see above)."""
    if data_dir is None or code_terms is None:
        raise InputError(
            "MIMIC-III needs --data_dir (your MIMIC-III v1.4 folder) and --code_terms (made by "
            "python -m datasets_scripts.code_synonyms --mimic-dir ... [--mrconso MRCONSO.RRF] --output FILE)."
        )
    builder = MimicIII(config_name=config, data_dir=data_dir, caml_procedure_codes=caml_procedure_codes,
                       cache_dir=cache_dir)
    builder.download_and_prepare()
    return CodingData(
        splits=builder.as_dataset(),
        codes=builder.codes,
        code_terms=read_code_terms(Path(code_terms)),
        card=DataCard(
            name="MIMIC-III", dataset_id="physionet/mimiciii", license="other",
            description=f"MIMIC-III v1.4 discharge summaries, CAML splits, config {config}",
            citation="Johnson, A. E. W. et al. MIMIC-III, a freely accessible critical care database. "
                     "Scientific Data 3, 160035 (2016).",
            usage_note="Trained on MIMIC-III: these weights are derived from credentialed data and fall under the "
                       "PhysioNet Credentialed Health Data Use Agreement; share them only with credentialed users.",
        ),
    )
