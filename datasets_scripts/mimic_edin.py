"""MIMIC-IV (ICD-10 and ICD-9) and MIMIC-III clean → the splits of Edin et al. (SIGIR 2023).

Your own files are read from `data_dir`; nothing of MIMIC ships with this package. The split lists
(hadm_ids only, Apache-2.0) do, in `data/edin_splits/`.

    import datasets_scripts
    data = datasets_scripts.load("mimic4", config="mimic4-icd10", data_dir="/path/to/mimiciv/2.2",
                                 note_dir="/path/to/mimic-iv-note/2.2")
    data = datasets_scripts.load("mimic4", config="mimic3-clean", data_dir="/path/to/mimic-iii-1.4")

`mimic4-icd10` and `mimic4-icd9` read MIMIC-IV's `hosp/diagnoses_icd`, `hosp/procedures_icd` (and
their `d_icd_*` titles) under `data_dir`, and MIMIC-IV-Note's `note/discharge` under `note_dir`
(default: `data_dir`); `mimic3-clean` reads MIMIC-III v1.4's NOTEEVENTS (discharge summaries),
DIAGNOSES_ICD and PROCEDURES_ICD (and D_ICD_*). Each file as .csv or .csv.gz.

Edin et al.'s recipe: the discharge notes of each admission (joined with a tab in file order);
its codes of the config's ICD version, dotted per system (ICD-10-CM after the third character,
"I10" without a dot; ICD-10-PCS without a dot; ICD-9 as in MIMIC-III, procedure codes with their
leading zeros), duplicates and empty codes dropped; within the version, the diagnosis codes and the
procedure codes that occur in at least 10 admissions with a discharge note (each counted
separately); target = procedures + diagnoses; admissions left without codes are dropped; the split
lists assign train/validation/test. The label set is every code kept, sorted. Split sizes are
reported against the lists', never enforced; a split without any document stops the build.

Each example: `id` (the hadm_id), `hadm_id`, `subject_id`, `text`, `labels` and `gold_codes`.
Code terms: the `d_icd_*` long titles, with UMLS synonyms when `mrconso` is given (the authors'
recipe, over ICD9CM, or ICD10CM and ICD10PCS), else ICD-10-CM's inclusion terms for ICD-10-CM
diagnoses; or your own file (`code_terms`).
"""

import csv
import gzip
import io
import logging
from collections import Counter, defaultdict
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import datasets

from .coding_data import CodingData, DataCard, SPLIT_OF, coding_features
from .errors import InputError
from .files import find_input, read_code_terms, read_csv_rows
from .local_files import LocalFilesBuilder, LocalFilesConfig
from .icd_codes import format_icd9_code
from .mimic_iii import DISCHARGE_SUMMARY, admission_id
from .synonyms.icd10cm import open_icd10cm_synonyms
from .synonyms.umls import umls_synonyms

logger = logging.getLogger(__name__)

SPLITS = ("train", "val", "test")  # the names of its split lists
MIN_CODE_COUNT = 10
# MIMIC-IV: (hosp/ or note/ file, its columns); MIMIC-III: the same roles, its own names
MIMIC4_FILES = {"diagnoses": ("hosp/diagnoses_icd.csv", ("hadm_id", "icd_code", "icd_version")),
                "procedures": ("hosp/procedures_icd.csv", ("hadm_id", "icd_code", "icd_version")),
                "notes": ("note/discharge.csv", ("subject_id", "hadm_id", "text")),
                "diagnosis_titles": ("hosp/d_icd_diagnoses.csv", ("icd_code", "icd_version", "long_title")),
                "procedure_titles": ("hosp/d_icd_procedures.csv", ("icd_code", "icd_version", "long_title"))}
MIMIC3_FILES = {"diagnoses": ("DIAGNOSES_ICD.csv", ("HADM_ID", "ICD9_CODE")),
                "procedures": ("PROCEDURES_ICD.csv", ("HADM_ID", "ICD9_CODE")),
                "notes": ("NOTEEVENTS.csv", ("SUBJECT_ID", "HADM_ID", "CATEGORY", "TEXT")),
                "diagnosis_titles": ("D_ICD_DIAGNOSES.csv", ("ICD9_CODE", "LONG_TITLE")),
                "procedure_titles": ("D_ICD_PROCEDURES.csv", ("ICD9_CODE", "LONG_TITLE"))}


def format_code(code: str, version: int, is_diagnosis: bool) -> str:
    code = code.replace(".", "").strip().upper()
    if version == 9:
        return format_icd9_code(code, is_diagnosis)
    return f"{code[:3]}.{code[3:]}" if is_diagnosis and len(code) > 3 else code


def split_lists(file_name: str) -> dict[int, str]:
    """hadm_id → "train", "val" or "test", from a shipped `hadm_id,split` list."""
    data = (resources.files("datasets_scripts") / "data" / "edin_splits" / file_name).read_bytes()
    rows = csv.DictReader(io.TextIOWrapper(io.BytesIO(gzip.decompress(data)), encoding="utf-8"))
    return {int(row["hadm_id"]): row["split"] for row in rows}


@dataclass
class MimicEdinConfig(LocalFilesConfig):
    """source: "mimic4" or "mimic3"; icd_version: 9 or 10; split_file: the shipped split list."""

    source: str = "mimic4"
    icd_version: int = 10
    split_file: str = "mimiciv_icd10_split.csv.gz"


class MimicEdin(LocalFilesBuilder):
    BUILDER_CONFIG_CLASS = MimicEdinConfig
    BUILDER_CONFIGS = [
        MimicEdinConfig(name="mimic4-icd10", source="mimic4", icd_version=10, split_file="mimiciv_icd10_split.csv.gz",
                        description="MIMIC-IV discharge notes, ICD-10-CM and ICD-10-PCS codes"),
        MimicEdinConfig(name="mimic4-icd9", source="mimic4", icd_version=9, split_file="mimiciv_icd9_split.csv.gz",
                        description="MIMIC-IV discharge notes, ICD-9-CM codes"),
        MimicEdinConfig(name="mimic3-clean", source="mimic3", icd_version=9, split_file="mimiciii_clean_split.csv.gz",
                        description="MIMIC-III discharge summaries, ICD-9-CM codes, Edin et al.'s cleaned splits"),
    ]
    DEFAULT_CONFIG_NAME = "mimic4-icd10"

    def __init__(self, *args, note_dir: str | None = None, **kwargs):
        self.config_name = kwargs.get("config_name", self.DEFAULT_CONFIG_NAME)
        self.source = next((config.source for config in self.BUILDER_CONFIGS if config.name == self.config_name), None)
        if self.source is None:
            raise InputError(f"config {self.config_name!r} is unknown; choose one of "
                             f"{[c.name for c in self.BUILDER_CONFIGS]}.")
        self.source_name = "MIMIC-IV" if self.source == "mimic4" else "MIMIC-III"  # in the messages about its files
        self.files = MIMIC4_FILES if self.source == "mimic4" else MIMIC3_FILES
        self.note_dir = None if note_dir is None else Path(note_dir).expanduser()
        super().__init__(*args, **kwargs)

    def find_inputs(self, folder: Path | None) -> dict[str, Path]:
        if folder is None:
            raise InputError(f"{self.config_name} needs data_dir: your "
                             f"{'MIMIC-IV' if self.source == 'mimic4' else 'MIMIC-III v1.4'} folder.")
        fix = ("Point data_dir at your MIMIC-IV folder (with hosp/) and note_dir at your MIMIC-IV-Note folder (with "
               "note/), as downloaded from PhysioNet." if self.source == "mimic4" else
               "Point data_dir at the folder holding your MIMIC-III v1.4 CSV files (as downloaded from PhysioNet).")
        return {role: find_input((self.note_dir or folder if role == "notes" else folder) / Path(relative).parent,
                                 Path(relative).name, fix)
                for role, (relative, _) in self.files.items()}

    def rows(self, role: str, progress: bool = False):
        path, columns = self.input_paths[role], self.files[role][1]
        for line, row in read_csv_rows(path, columns, progress=progress, dataset=self.source_name):
            yield path, line, row

    def version_codes(self, role: str) -> dict[int, list[str]]:
        """hadm_id → its codes of this config's ICD version in `role` ("diagnoses", "procedures"), in file order."""
        version, is_diagnosis = self.config.icd_version, role == "diagnoses"
        codes, empty = defaultdict(list), 0
        for path, line, row in self.rows(role):
            if self.config.source == "mimic4":
                code, row_version = row["icd_code"], row["icd_version"]
                hadm_id = admission_id(row["hadm_id"], path, line, "hadm_id", self.source_name)
                if row_version not in ("9", "10"):
                    raise InputError(f"{path}, line {line}: icd_version is {row_version!r}, expected 9 or 10.")
                if int(row_version) != version:
                    continue
            else:
                code, hadm_id = row["ICD9_CODE"], admission_id(row["HADM_ID"], path, line, "HADM_ID", self.source_name)
            if not code.strip() or hadm_id is None:
                empty += 1
                continue
            code = format_code(code, version, is_diagnosis)
            if code not in codes[hadm_id]:
                codes[hadm_id].append(code)
        if empty:
            logger.info("%s: %d rows without a code or an admission were dropped", self.input_paths[role].name, empty)
        return codes

    def discharge_notes(self, hadm_ids: set[int] | None) -> tuple[set[int], dict[int, tuple[int, list[str]]]]:
        """(every hadm_id with a discharge note, hadm_id → (subject_id, texts) for those in `hadm_ids`)."""
        with_note, notes = set(), {}
        for path, line, row in self.rows("notes", progress=True):
            if self.config.source == "mimic3":
                if row["CATEGORY"] != DISCHARGE_SUMMARY:
                    continue
                row = {"hadm_id": row["HADM_ID"], "subject_id": row["SUBJECT_ID"], "text": row["TEXT"]}
            hadm_id = admission_id(row["hadm_id"], path, line, "hadm_id", self.source_name)
            if hadm_id is None:
                continue
            with_note.add(hadm_id)
            if hadm_ids is None or hadm_id in hadm_ids:
                subject_id = admission_id(row["subject_id"], path, line, "subject_id", self.source_name)
                notes.setdefault(hadm_id, (subject_id, []))[1].append(row["text"])
        return with_note, notes

    def _info(self):
        return datasets.DatasetInfo(
            description=__doc__,
            features=coding_features(hadm_id=datasets.Value("int64"), subject_id=datasets.Value("int64")),
            homepage="https://physionet.org/content/mimiciv/",
            license="PhysioNet Credentialed Health Data License 1.5.0 (the data); split lists: Apache-2.0",
        )

    def _split_generators(self, dl_manager):
        assigned = split_lists(self.config.split_file)
        with_note, notes = self.discharge_notes(set(assigned))
        targets = self.targets(with_note)
        examples = {split: [] for split in SPLITS}
        for hadm_id, split in assigned.items():
            if hadm_id in notes and targets.get(hadm_id):
                subject_id, texts = notes[hadm_id]
                examples[split].append({"id": str(hadm_id), "hadm_id": hadm_id, "subject_id": subject_id,
                                        "text": "\t".join(texts), "labels": targets[hadm_id],
                                        "gold_codes": targets[hadm_id]})
        self.report_sizes(examples, assigned)
        return [datasets.SplitGenerator(name=SPLIT_OF[split], gen_kwargs={"examples": examples[split]})
                for split in SPLITS]

    def targets(self, with_note: set[int]) -> dict[int, list[str]]:
        """hadm_id → procedure codes then diagnosis codes, each kept when it occurs in at least
        MIN_CODE_COUNT admissions with a discharge note."""
        by_role = {role: self.version_codes(role) for role in ("procedures", "diagnoses")}
        kept = {}
        for role, codes in by_role.items():
            counts = Counter(code for hadm_id, admission in codes.items() if hadm_id in with_note for code in admission)
            kept[role] = {code for code, count in counts.items() if count >= MIN_CODE_COUNT}
        admissions = set(by_role["procedures"]) | set(by_role["diagnoses"])
        return {hadm_id: [code for role in ("procedures", "diagnoses") for code in by_role[role].get(hadm_id, [])
                          if code in kept[role]]
                for hadm_id in admissions}

    def report_sizes(self, examples, assigned):
        listed = Counter(assigned.values())
        for split, found in examples.items():
            if not found:
                raise InputError(
                    f"{self.config.name}: none of the {listed[split]:,} admissions of the {split} split has both a "
                    f"discharge note in {self.input_paths['notes']} and a code; are these the right files, whole?"
                )
        missing = {split: listed[split] - len(examples[split]) for split in SPLITS if listed[split] != len(examples[split])}
        if missing:
            logger.warning(
                "%s: %s listed admissions have no discharge note or no kept code in your files (Edin et al.'s "
                "lists: %s); another MIMIC version, or a subset of it.", self.config.name,
                ", ".join(f"{count:,} {split}" for split, count in missing.items()),
                " / ".join(f"{listed[split]:,}" for split in SPLITS))

    def _generate_examples(self, examples):
        for example in examples:
            yield example["hadm_id"], example

    def code_titles(self) -> dict[str, str]:
        """code → long title, for this config's version, from the d_icd tables."""
        titles = {}
        for role, is_diagnosis in (("diagnosis_titles", True), ("procedure_titles", False)):
            for _, _, row in self.rows(role):
                if self.config.source == "mimic4":
                    if row["icd_version"] != str(self.config.icd_version):
                        continue
                    code, title = row["icd_code"], row["long_title"]
                else:
                    code, title = row["ICD9_CODE"], row["LONG_TITLE"]
                titles[format_code(code, self.config.icd_version, is_diagnosis)] = title
        return titles


def code_terms_of(builder: MimicEdin, codes: list[str], num_synonyms: int, mrconso: str | None) -> dict[str, list[str]]:
    """code → [long title, synonyms…]: with `mrconso`, the authors' UMLS recipe over the config's
    vocabularies (ICD9CM; ICD10CM and ICD10PCS); else open sources, ICD-10-CM's inclusion terms for
    ICD-10-CM diagnoses."""
    titles = builder.code_titles()
    if mrconso is not None:
        sources = ("ICD9CM",) if builder.config.icd_version == 9 else ("ICD10CM", "ICD10PCS")
        return umls_synonyms(codes, titles, Path(mrconso), sources=sources)
    icd10cm = {}
    if builder.config.icd_version == 10:  # diagnoses: dotted, or 3 characters (ICD-10-PCS codes have 7)
        diagnoses = [code for code in codes if "." in code or len(code) == 3]
        icd10cm = open_icd10cm_synonyms(diagnoses, min_synonyms=num_synonyms - 1)[0]
    return {code: list(dict.fromkeys(term for term in [titles.get(code), *icd10cm.get(code, [])] if term))
            for code in codes}


def load(
    config: str = "mimic4-icd10",
    data_dir: str | None = None,
    note_dir: str | None = None,
    code_terms: str | None = None,
    mrconso: str | None = None,
    num_synonyms: int = 4,
    cache_dir: str | None = None,
) -> CodingData:
    """Edin et al.'s splits built from your files (once, then read from the cache), with code terms:
    your own `code_terms` file; or the d_icd titles with UMLS synonyms (`mrconso`: your MRCONSO.RRF);
    or, without either, open terms (the titles and ICD-10-CM inclusion terms; `num_synonyms`: M, for
    the parent fill)."""
    builder = MimicEdin(config_name=config, data_dir=data_dir, note_dir=note_dir, cache_dir=cache_dir)
    builder.download_and_prepare()
    splits = builder.as_dataset()
    codes = sorted({code for split in splits.values() for labels in split["labels"] for code in labels})
    terms = read_code_terms(Path(code_terms)) if code_terms else code_terms_of(builder, codes, num_synonyms, mrconso)
    mimic = "MIMIC-IV" if builder.config.source == "mimic4" else "MIMIC-III"
    return CodingData(
        splits=splits,
        codes=codes,
        code_terms=terms,
        card=DataCard(
            name=mimic, dataset_id="physionet/mimiciv" if mimic == "MIMIC-IV" else "physionet/mimiciii",
            license="other", description=f"{mimic} discharge notes, Edin et al.'s splits, config {config}",
            citation="Edin, J. et al. Automated Medical Coding on MIMIC-III and MIMIC-IV: A Critical Review and "
                     "Replicability Study. SIGIR 2023.",
            usage_note=f"Trained on {mimic}: these weights are derived from credentialed data and fall under the "
                       "PhysioNet Credentialed Health Data Use Agreement; share them only with credentialed users.",
        ),
    )
