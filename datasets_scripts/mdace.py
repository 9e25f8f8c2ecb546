"""MDACE (Cheng et al., ACL 2023): the note spans professional coders based each code on, in 302
MIMIC-III inpatient admissions, joined to the text of your own MIMIC-III NOTEEVENTS.

The annotations ship with this package (`data/mdace/`, MIT, no note text); the notes come from
your credentialed MIMIC-III v1.4 (`data_dir`), joined by note id (NOTEEVENTS' ROW_ID).

    import datasets_scripts
    data = datasets_scripts.load("mdace", config="mdace-icd9", data_dir="/path/to/mimic-iii-1.4")
    data.splits["test"][0]["evidence"]   # [{"code", "code_system", "begin", "end", "note_id"}, ...]

Configs: `mdace-icd9` (ICD-9-CM and ICD-9 procedure codes, as MIMIC-III is coded) and
`mdace-icd10` (the coders' ICD-10-CM and ICD-10-PCS originals). `categories`: the note categories
kept (default: discharge summaries, on which MDACE's published evidence results are measured).
Splits: MDACE's evidence-task lists (181 / 60 / 61 admissions).

Each example is an admission: `id` (its hadm_id), `hadm_id`, `text` (its kept notes, joined with a
tab in NOTEEVENTS order, as `mimic3-*` join them), `labels` and `gold_codes` (the codes with
evidence in those notes, in order of first evidence), and `evidence`: each annotated span, with
`begin`/`end` as character offsets into `text` (`text[begin:end]` is the span) and its `note_id`;
`notes`: where each note lies in `text` (`note_id`, `category`, `description`, `begin`, `end`).
Every span is checked against your note's text; a span outside it, or an annotated note missing
from your NOTEEVENTS, stops the build with the note's id (never its text). Code terms: MDACE's own
description of each code.

MDACE's scorer compares evidence note by note, and only on notes with gold evidence:
`note_documents(example, spans)` turns spans of the joined text (the pipeline's evidence) into those
per-note documents for `msmn.evaluation.metrics.evidence_scores`. Predictions in MDACE's own per-note
JSON form come in with `spans_from_mdace` and go out (for MDACE's `evaluate-predictions.py`) with
`spans_to_mdace`.
"""

import gzip
import json
import logging
import re
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import datasets

from .coding_data import CodingData, DataCard, SPLIT_OF, coding_features
from .errors import InputError
from .files import find_input, read_csv_rows
from .local_files import LocalFilesBuilder, LocalFilesConfig
from .mimic_iii import admission_id

logger = logging.getLogger(__name__)

SPLITS = ("train", "val", "test")  # the names of its split lists
CITATION = ("Cheng, H., Jafari, R., Russell, A., Klopfer, R., Lu, E., Striner, B., Gormley, M. MDACE: MIMIC "
            "Documents Annotated with Code Evidence. ACL 2023.")


def shipped(name: str) -> bytes:
    return (resources.files("datasets_scripts") / "data" / "mdace" / name).read_bytes()


def read_charts(system: str) -> list[dict]:
    """MDACE's annotated admissions ("icd9" or "icd10"), as released: {hadm_id, notes: [{note_id, category,
    annotations: [{begin, end, code, code_system, description, type}]}]}."""
    return [json.loads(line) for line in gzip.decompress(shipped(f"inpatient_{system}.jsonl.gz")).decode().splitlines()]


def split_of_admissions() -> dict[int, str]:
    return {int(line): split for split in SPLITS for line in shipped(f"MDace-ev-{split}.csv").decode().split()}


@dataclass
class MdaceConfig(LocalFilesConfig):
    system: str = "icd9"
    categories: tuple[str, ...] = ("Discharge summary",)


class Mdace(LocalFilesBuilder):
    VERSION = datasets.Version("1.1.0")  # 1.1: the notes' positions in the joined text
    BUILDER_CONFIG_CLASS = MdaceConfig
    BUILDER_CONFIGS = [
        MdaceConfig(name="mdace-icd9", system="icd9", description="MDACE evidence, ICD-9 codes"),
        MdaceConfig(name="mdace-icd10", system="icd10", description="MDACE evidence, ICD-10 codes"),
    ]
    DEFAULT_CONFIG_NAME = "mdace-icd9"

    def __init__(self, *args, **kwargs):
        if "categories" in kwargs:  # a list from a command line; the config holds a tuple
            kwargs["categories"] = tuple(kwargs["categories"])
        super().__init__(*args, **kwargs)

    def find_inputs(self, folder: Path | None) -> dict[str, Path]:
        if folder is None:
            raise InputError("MDACE needs data_dir: your MIMIC-III v1.4 folder (its NOTEEVENTS holds the notes' text).")
        return {"notes": find_input(folder, "NOTEEVENTS.csv")}

    def _info(self):
        return datasets.DatasetInfo(
            description=__doc__,
            features=coding_features(hadm_id=datasets.Value("int64"), evidence=datasets.List({
                "code": datasets.Value("string"), "code_system": datasets.Value("string"),
                "begin": datasets.Value("int32"), "end": datasets.Value("int32"), "note_id": datasets.Value("int64"),
            }), notes=datasets.List({
                "note_id": datasets.Value("int64"), "category": datasets.Value("string"),
                "description": datasets.Value("string"), "begin": datasets.Value("int32"), "end": datasets.Value("int32"),
            })),
            homepage="https://github.com/3mcloud/MDACE",
            license="MIT (the annotations); PhysioNet Credentialed Health Data License 1.5.0 (the notes)",
            citation=CITATION,
        )

    def note_texts(self, note_ids: set[int]) -> dict[int, str]:
        """ROW_ID → TEXT of the wanted notes, in NOTEEVENTS order."""
        texts = {}
        for line, row in read_csv_rows(self.input_paths["notes"], ["ROW_ID", "TEXT"], progress=True):
            note_id = admission_id(row["ROW_ID"], self.input_paths["notes"], line, "ROW_ID")
            if note_id in note_ids:
                texts[note_id] = row["TEXT"]
        missing = sorted(note_ids - set(texts))
        if missing:
            raise InputError(
                f"{self.input_paths['notes']}: {len(missing)} notes that MDACE annotates are missing (ROW_ID {missing[:5]}); "
                "MDACE needs the complete MIMIC-III v1.4 NOTEEVENTS."
            )
        return texts

    def _split_generators(self, dl_manager):
        charts = read_charts(self.config.system)
        kept_notes = {chart["hadm_id"]: [note for note in chart["notes"] if note["category"] in self.config.categories]
                      for chart in charts}
        texts = self.note_texts({note["note_id"] for notes in kept_notes.values() for note in notes})
        order = {note_id: position for position, note_id in enumerate(texts)}  # NOTEEVENTS order
        examples = {split: [] for split in SPLITS}
        assigned = split_of_admissions()
        for hadm_id, notes in kept_notes.items():
            example = self.admission(hadm_id, sorted(notes, key=lambda note: order[note["note_id"]]), texts)
            if example["evidence"] and hadm_id in assigned:
                examples[assigned[hadm_id]].append(example)
        return [datasets.SplitGenerator(name=SPLIT_OF[split], gen_kwargs={"examples": sorted(examples[split], key=lambda e: e["hadm_id"])})
                for split in SPLITS]

    def admission(self, hadm_id: int, notes: list[dict], texts: dict[int, str]) -> dict:
        """One example: the notes joined with a tab, each span moved to its offset in the joined text."""
        pieces, evidence, positions, start = [], [], [], 0
        for note in notes:
            text = texts[note["note_id"]]
            for span in note["annotations"]:
                if not 0 <= span["begin"] < span["end"] <= len(text):
                    raise InputError(
                        f"{self.input_paths['notes']}: MDACE's span [{span['begin']}, {span['end']}) of note ROW_ID {note['note_id']} "
                        f"(admission {hadm_id}) lies outside that note's {len(text)} characters; MDACE needs the notes "
                        "of MIMIC-III v1.4, unmodified."
                    )
                evidence.append({"code": span["code"], "code_system": span["code_system"], "note_id": note["note_id"],
                                 "begin": start + span["begin"], "end": start + span["end"]})
            pieces.append(text)
            positions.append({"note_id": note["note_id"], "category": note["category"],
                              "description": note.get("description") or "", "begin": start, "end": start + len(text)})
            start += len(text) + 1  # the tab
        codes = list(dict.fromkeys(span["code"] for span in evidence))
        return {"id": str(hadm_id), "hadm_id": hadm_id, "text": "\t".join(pieces), "labels": codes,
                "gold_codes": codes, "evidence": evidence, "notes": positions}

    def _generate_examples(self, examples):
        for example in examples:
            yield example["hadm_id"], example


def load(config: str = "mdace-icd9", data_dir: str | None = None, categories: tuple[str, ...] = ("Discharge summary",),
         cache_dir: str | None = None) -> CodingData:
    """MDACE's evidence splits joined to your NOTEEVENTS (built once, then read from the cache)."""
    builder = Mdace(config_name=config, data_dir=data_dir, categories=categories, cache_dir=cache_dir)
    builder.download_and_prepare()
    descriptions = {span["code"]: span["description"] for chart in read_charts(builder.config.system)
                    for note in chart["notes"] for span in note["annotations"]}
    splits = builder.as_dataset()
    codes = sorted({code for split in splits.values() for labels in split["labels"] for code in labels})
    return CodingData(
        splits=splits, codes=codes, code_terms={code: [descriptions[code]] for code in codes},
        card=DataCard(name="MDACE", dataset_id="physionet/mimiciii", license="other", citation=CITATION,
                      description=f"MDACE code evidence on MIMIC-III notes ({', '.join(builder.config.categories)}), "
                                  f"config {config}",
                      usage_note="The notes are MIMIC-III's: PhysioNet Credentialed Health Data Use Agreement."),
    )


# --- evidence note by note, as MDACE scores it ------------------------------------------------------------


def note_spans(example: dict, spans) -> dict[int, list[tuple[int, int, str]]]:
    """note_id → the spans (begin, end, code) of the joined text that fall in that note, in the note's own
    offsets; a span across two notes is cut in two, an empty span stays where it is."""
    by_note = {}
    for begin, end, code in spans:
        for note in example["notes"]:
            clipped_begin, clipped_end = max(begin, note["begin"]), min(end, note["end"])
            if clipped_begin < clipped_end or (begin == end and note["begin"] <= begin <= note["end"]):
                by_note.setdefault(note["note_id"], []).append(
                    (clipped_begin - note["begin"], clipped_end - note["begin"], code))
    return by_note


def note_documents(example: dict, predicted) -> list[tuple[str, list, list]]:
    """(note text, predicted spans, gold spans) for each note of the admission with gold evidence, in the
    note's offsets: what MDACE's scorer compares (predictions on notes without gold evidence do not count).
    `predicted`: spans (begin, end, code) of the joined text, e.g. the pipeline's evidence."""
    gold = note_spans(example, [(span["begin"], span["end"], span["code"]) for span in example["evidence"]])
    predicted_by_note = note_spans(example, predicted)
    texts = {note["note_id"]: example["text"][note["begin"] : note["end"]] for note in example["notes"]}
    return [(texts[note_id], predicted_by_note.get(note_id, []), spans) for note_id, spans in gold.items()]


def spans_from_mdace(example: dict, admission: dict) -> list[tuple[int, int, str]]:
    """The spans (begin, end, code) of the joined text from per-note predictions in MDACE's JSON form
    ({"hadm_id", "notes": [{"note_id", "annotations": [{"begin", "end", "code", ...}]}]}); notes that
    the example does not hold (another category) are left out, with a count in the log."""
    positions = {note["note_id"]: note for note in example["notes"]}
    spans, left_out = [], 0
    for note in admission.get("notes", []):
        position = positions.get(note.get("note_id"))
        if position is None:
            left_out += len(note.get("annotations", []))
            continue
        for span in note.get("annotations", []):
            if not 0 <= span["begin"] <= span["end"] <= position["end"] - position["begin"]:
                raise InputError(f"admission {example['hadm_id']}, note {note['note_id']}: the predicted span "
                                 f"[{span['begin']}, {span['end']}) lies outside the note's "
                                 f"{position['end'] - position['begin']} characters.")
            spans.append((position["begin"] + span["begin"], position["begin"] + span["end"], span["code"]))
    if left_out:
        logger.warning("admission %s: %d predicted spans lie in notes outside this example's categories; left out.",
                       example["hadm_id"], left_out)
    return spans


def spans_to_mdace(example: dict, spans, system: str = "icd9") -> dict:
    """Spans (begin, end, code) of the joined text as one admission in MDACE's JSON form, for MDACE's
    evaluate-predictions.py (after its inject-note-text.py adds the notes' text)."""
    by_note = note_spans(example, spans)
    return {"hadm_id": example["hadm_id"], "comment": "", "notes": [
        {"note_id": note["note_id"], "category": note["category"], "description": note["description"],
         "annotations": [{"begin": begin, "end": end, "code": code, "code_system": code_system(code, system)}
                         for begin, end, code in by_note.get(note["note_id"], [])]}
        for note in example["notes"]
    ]}


def code_system(code: str, system: str) -> str:
    """MDACE's name of the code's system: ICD-9 procedures have two digits before the dot, ICD-10-PCS
    codes seven characters and no dot."""
    if system == "icd9":
        return "ICD-9-PCS" if re.fullmatch(r"\d{2}(\.\d*)?", code) else "ICD-9-CM"
    return "ICD-10-PCS" if len(code) == 7 and "." not in code else "ICD-10-CM"
