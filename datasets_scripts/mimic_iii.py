"""MIMIC-III v1.4 → the standard ICD-coding splits (CAML's, as the MSMN authors used them).

Your own MIMIC-III files are read from `data_dir` (NOTEEVENTS, DIAGNOSES_ICD, PROCEDURES_ICD,
.csv or .csv.gz); nothing of MIMIC-III ships with this package. The public CAML split lists
(hadm_ids only, MIT licence) do, in `data/caml_splits/`.

    import datasets_scripts
    data = datasets_scripts.load("mimic3", config="mimic3-50", data_dir="/path/to/mimic-iii-1.4",
                                 code_terms="synonyms.json")  # made by python -m datasets_scripts.code_synonyms

Each example: `id` (the admission's HADM_ID), `hadm_id`, `subject_id`, `text` (every discharge
summary of the admission, reports and addenda, joined with a tab in file order), `labels` and
`gold_codes` (its ICD-9 codes in the config's code set, CAML-formatted). The split sizes are checked against
the paper's table; a mismatch (another MIMIC version, missing rows) stops the build with the
difference unless `check_split_sizes=False`.
"""

from collections import defaultdict
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import datasets

from .coding_data import CodingData, DataCard
from .files import InputError, find_input, fingerprint, read_code_terms, read_csv_rows

SPLITS = {"train": datasets.Split.TRAIN, "dev": datasets.Split.VALIDATION, "test": datasets.Split.TEST}
EXPECTED_SIZES = {  # documents per split and codes in the label set (the paper's data table)
    "full": {"train": 47_719, "dev": 1_631, "test": 3_372, "codes": 8_929},
    "50": {"train": 8_066, "dev": 1_573, "test": 1_729, "codes": 50},
}
INPUT_FILES = ("NOTEEVENTS.csv", "DIAGNOSES_ICD.csv", "PROCEDURES_ICD.csv")
DISCHARGE_SUMMARY = "Discharge summary"


def format_icd9_code(code: str, is_diagnosis: bool) -> str:
    """CAML's code format: diagnoses get a dot after 3 characters (4 for E-codes) when longer;
    procedures always get a dot after 2 characters ("17" → "17.")."""
    code = code.replace(".", "").strip()
    if not is_diagnosis:
        return f"{code[:2]}.{code[2:]}"
    split_at = 4 if code.startswith("E") else 3
    return f"{code[:split_at]}.{code[split_at:]}" if len(code) > split_at else code


def caml_file(name: str) -> str:
    return (resources.files("datasets_scripts") / "data" / "caml_splits" / name).read_text(encoding="utf-8")


def split_hadm_ids(setting: str) -> dict[str, list[int]]:
    return {split: [int(line) for line in caml_file(f"{split}_{setting}_hadm_ids.csv").split()] for split in SPLITS}


def top50_codes() -> list[str]:
    return caml_file("top50_codes.txt").split()


@dataclass
class MimicIIIConfig(datasets.BuilderConfig):
    """setting: "full" or "50"; check_split_sizes: compare with the paper's sizes;
    input_fingerprint: set from data_dir's files, so a changed input file gets a new cache."""

    setting: str = "full"
    check_split_sizes: bool = True
    input_fingerprint: str | None = None


class MimicIII(datasets.GeneratorBasedBuilder):
    BUILDER_CONFIG_CLASS = MimicIIIConfig
    BUILDER_CONFIGS = [
        MimicIIIConfig(name="mimic3-full", setting="full", description="all 8,929 codes of the CAML splits"),
        MimicIIIConfig(name="mimic3-50", setting="50", description="the 50 most frequent codes (CAML)"),
    ]
    DEFAULT_CONFIG_NAME = "mimic3-50"

    def __init__(self, *args, data_dir: str | None = None, **kwargs):
        if data_dir is None:
            raise InputError(
                "MimicIII needs data_dir: the folder with your MIMIC-III v1.4 NOTEEVENTS, DIAGNOSES_ICD and "
                "PROCEDURES_ICD files (.csv or .csv.gz)."
            )
        folder = Path(data_dir).expanduser()
        self.input_paths = {name: find_input(folder, name) for name in INPUT_FILES}
        self._codes_by_admissions = {}  # hadm_id set → its admissions' codes, read once per builder
        kwargs["input_fingerprint"] = fingerprint(list(self.input_paths.values()))
        super().__init__(*args, data_dir=str(folder), **kwargs)

    def _admission_codes(self, hadm_ids: frozenset[int]) -> dict[int, list[str]]:
        """The CAML-formatted diagnosis and procedure codes of each listed admission, in file order.
        Read once: the full setting needs them for its code list (`_info`) and for its labels."""
        if hadm_ids in self._codes_by_admissions:
            return self._codes_by_admissions[hadm_ids]
        codes = defaultdict(list)
        for name, is_diagnosis in (("DIAGNOSES_ICD.csv", True), ("PROCEDURES_ICD.csv", False)):
            for _, row in read_csv_rows(self.input_paths[name], ["HADM_ID", "ICD9_CODE"]):
                if row["ICD9_CODE"] and row["HADM_ID"] and int(row["HADM_ID"]) in hadm_ids:
                    code = format_icd9_code(row["ICD9_CODE"], is_diagnosis)
                    if code not in codes[int(row["HADM_ID"])]:
                        codes[int(row["HADM_ID"])].append(code)
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
            features=datasets.Features(
                {
                    "id": datasets.Value("string"),
                    "hadm_id": datasets.Value("int64"),
                    "subject_id": datasets.Value("int64"),
                    "text": datasets.Value("string"),
                    "labels": datasets.List(datasets.Value("string")),
                    "gold_codes": datasets.List(datasets.Value("string")),
                }
            ),
            homepage="https://physionet.org/content/mimiciii/1.4/",
            license="PhysioNet Credentialed Health Data License 1.5.0 (the data); CAML split lists: MIT",
        )

    def _discharge_summaries(self, hadm_ids: set[int]) -> dict[int, tuple[int, list[str]]]:
        """hadm_id → (subject_id, texts of its discharge summaries in file order), streaming NOTEEVENTS."""
        notes = {}
        rows = read_csv_rows(self.input_paths["NOTEEVENTS.csv"], ["SUBJECT_ID", "HADM_ID", "CATEGORY", "TEXT"], progress=True)
        for _, row in rows:
            if row["CATEGORY"] != DISCHARGE_SUMMARY or not row["HADM_ID"]:
                continue
            hadm_id = int(row["HADM_ID"])
            if hadm_id in hadm_ids:
                notes.setdefault(hadm_id, (int(row["SUBJECT_ID"]), []))[1].append(row["TEXT"])
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
        if self.config.check_split_sizes:
            self._check_sizes(examples, split_ids)
        return [
            datasets.SplitGenerator(name=split_name, gen_kwargs={"examples": examples[split]})
            for split, split_name in SPLITS.items()
        ]

    def _check_sizes(self, examples, split_ids):
        expected = EXPECTED_SIZES[self.config.setting]
        found = {split: len(examples[split]) for split in SPLITS} | {"codes": len(self.codes)}
        differences = [f"{key}: {found[key]:,} (expected {expected[key]:,})" for key in expected if found[key] != expected[key]]
        if differences:
            without_notes = sum(len(ids) - len(examples[split]) for split, ids in split_ids.items())
            raise InputError(
                f"{self.config.name}: the splits built from {self.config.data_dir} differ from the paper's: "
                f"{'; '.join(differences)}. {without_notes:,} listed admissions have no discharge summary in "
                f"{self.input_paths['NOTEEVENTS.csv'].name}. Use the complete, unmodified MIMIC-III v1.4 files, "
                "or pass check_split_sizes=False to build these splits anyway."
            )

    def _generate_examples(self, examples):
        for example in examples:
            yield example["hadm_id"], {"id": str(example["hadm_id"]), **example, "gold_codes": example["labels"]}


def load(
    config: str = "mimic3-50",
    data_dir: str | None = None,
    code_terms: str | None = None,
    check_split_sizes: bool = True,
    cache_dir: str | None = None,
) -> CodingData:
    """The train/validation/test splits built from your MIMIC-III files (once, then read from the
    cache), with the code terms of `code_terms` (made by `python -m datasets_scripts.code_synonyms`)."""
    if data_dir is None or code_terms is None:
        raise InputError(
            "MIMIC-III needs --data_dir (your MIMIC-III v1.4 folder) and --code_terms (made by "
            "python -m datasets_scripts.code_synonyms --mimic-dir ... [--mrconso MRCONSO.RRF] --output FILE)."
        )
    builder = MimicIII(config_name=config, data_dir=data_dir, check_split_sizes=check_split_sizes, cache_dir=cache_dir)
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
