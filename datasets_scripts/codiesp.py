"""CodiEsp (CLEF eHealth 2020): 1,000 clinical case reports coded with ICD-10 by professional coders.

Ships with the package (`data/codiesp/`, CC BY 4.0, see its README) and is its default benchmark:

    import datasets_scripts
    data = datasets_scripts.load("codiesp", config="codiesp-d-50")            # English, the 50 most frequent diagnosis codes
    data = datasets_scripts.load("codiesp", config="codiesp-d", language="es") # Spanish, every diagnosis code
    data = datasets_scripts.load("codiesp", config="codiesp-p", data_dir="/path/to/your/codiesp")  # the original layout

Configs: `codiesp-d-50` (the 50 most frequent train diagnosis codes), `codiesp-d` (every diagnosis
code of the train split, plus `extra_codes`), `codiesp-p` (every procedure code of the train split,
plus `extra_codes`); `language` "en" (the organisers' English machine translation, default) or "es"
(the original). Label sets are read off the train split only: a label set that looked at dev or test
would tell a model which never-trained codes to expect there. Codes absent from the label set stay
in `gold_codes`; a model scores them from their terms (`set_codes`, see
`benchmarks/codiesp_all_codes.py`). Codes are
upper-cased (diagnoses keep ICD-10-CM's dot: "N44.8"; procedures are ICD-10-PCS: "BW03ZZZ").

Each example: `id`, `text`, `labels` (its codes in the label set), `gold_codes` (all its codes of
the task, also those outside the label set, for MAP) and, for "es", `evidence` (the CodiEsp-X rows:
code, text and character spans into the Spanish text). The code terms are open ICD-10-CM terms
(English diagnoses) or the train split's evidence texts (see `codiesp_terms`); the
unlabelled texts, for word2vec, are the English background set less the texts that overlap dev or
test (`background_texts`).
"""

import functools
import gzip
import json
import re
from collections import Counter
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import datasets

from .coding_data import CodingData, DataCard, SPLIT_OF, coding_features
from .errors import InputError
from .files import read_code_terms
from .local_files import LocalFilesBuilder, LocalFilesConfig
from .synonyms import report
from .synonyms.icd10cm import open_icd10cm_synonyms

CITATION = (
    "Miranda-Escalada, A., Gonzalez-Agirre, A., Armengol-Estapé, J., Krallinger, M. Overview of automatic "
    "clinical coding: annotations, guidelines, and solutions for non-English clinical cases at CodiEsp track "
    "of CLEF eHealth 2020. CLEF 2020 Working Notes."
)
# A background text overlaps a dev or test text when at least this share of the 8-word sequences of
# the shorter of the two occur in both (the first boilerplate phrases start below 5%).
OVERLAP_WORDS, OVERLAP_SHARE = 8, 0.05
SPLITS = ("train", "dev", "test")  # the names of its split lists
EVIDENCE_TYPES = {"DIAGNOSTICO": "diagnosis", "PROCEDIMIENTO": "procedure"}
TASK_FIELDS = {"d": "diagnosis_codes", "p": "procedure_codes"}


def normalize_code(code: str) -> str:
    return code.strip().upper()


def _read_tsv(path: Path, columns: int):
    """(line number, fields) of each non-empty line of a CodiEsp TSV file."""
    if not path.is_file():
        raise InputError(f"{path}: no such file; a CodiEsp split folder holds {path.name} (original layout).")
    with open(path, encoding="utf-8") as lines:
        for line_number, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            fields = line.rstrip("\n").split("\t")
            if len(fields) != columns:
                raise InputError(
                    f"{path}, line {line_number}: {len(fields)} tab-separated columns, expected {columns}. "
                    "Is this file from the CodiEsp gold standard, unmodified?"
                )
            yield line_number, fields


def _parse_spans(positions: str, path: Path, line_number: int) -> list[list[int]]:
    try:
        spans = [[int(number) for number in span.split()] for span in positions.split(";")]
    except ValueError:
        spans = []
    if not spans or any(len(span) != 2 or span[0] > span[1] for span in spans):
        raise InputError(f"{path}, line {line_number}: positions must be 'start end' pairs joined by ';'.")
    return spans


def read_original_split(folder: Path, split: str) -> list[dict]:
    """The documents of one split of a CodiEsp folder in the organisers' layout, by id."""
    split_folder = folder / split
    texts_es = {path.stem: path for path in sorted((split_folder / "text_files").glob("*.txt"))}
    if not texts_es:
        raise InputError(f"{split_folder / 'text_files'}: no .txt files; is {folder} a CodiEsp folder?")
    records = {}
    for doc_id, path in texts_es.items():
        english = split_folder / "text_files_en" / path.name
        if not english.is_file():
            raise InputError(f"{english}: missing; every Spanish text needs its English translation.")
        records[doc_id] = {
            "id": doc_id,
            "text_es": path.read_text(encoding="utf-8"),
            "text_en": english.read_text(encoding="utf-8"),
            "diagnosis_codes": [],
            "procedure_codes": [],
            "evidence": [],
        }

    def document(path, line_number, doc_id):
        if doc_id not in records:
            raise InputError(
                f"{path}, line {line_number}: codes for document {doc_id!r}, which has no text in "
                f"{split_folder / 'text_files'}."
            )
        return records[doc_id]

    for letter, field in (("D", "diagnosis_codes"), ("P", "procedure_codes")):
        path = split_folder / f"{split}{letter}.tsv"
        for line_number, (doc_id, code) in _read_tsv(path, 2):
            codes = document(path, line_number, doc_id)[field]
            if normalize_code(code) not in codes:
                codes.append(normalize_code(code))
    path = split_folder / f"{split}X.tsv"
    for line_number, (doc_id, kind, code, text, positions) in _read_tsv(path, 5):
        if kind not in EVIDENCE_TYPES:
            raise InputError(f"{path}, line {line_number}: type {kind!r}, expected DIAGNOSTICO or PROCEDIMIENTO.")
        document(path, line_number, doc_id)["evidence"].append(
            {"type": EVIDENCE_TYPES[kind], "code": normalize_code(code), "text": text,
             "spans": _parse_spans(positions, path, line_number)}
        )
    without_codes = [doc_id for doc_id, record in records.items() if not record["diagnosis_codes"] + record["procedure_codes"]]
    if without_codes:
        raise InputError(
            f"{texts_es[without_codes[0]]}: this text has no code in {split}D.tsv or {split}P.tsv "
            f"({len(without_codes)} such texts); the texts and the code files do not belong together."
        )
    return list(records.values())


def shipped_folder() -> Path:
    return Path(str(resources.files("datasets_scripts") / "data" / "codiesp"))


def read_shipped_split(split: str) -> list[dict]:
    with gzip.open(shipped_folder() / f"{split}.jsonl.gz", "rt", encoding="utf-8") as lines:
        return [json.loads(line) for line in lines]


def word_sequences(text: str) -> set[tuple[str, ...]]:
    words = re.findall(r"\w+", text.lower())
    return {tuple(words[i : i + OVERLAP_WORDS]) for i in range(len(words) - OVERLAP_WORDS + 1)}


def background_texts() -> list[str]:
    """The English texts of CodiEsp's unlabelled background set (2,751), less the 15 that overlap a
    dev or test text (one is a near-copy of a test report): word2vec must not read evaluation text."""
    held_out = [word_sequences(record["text_en"]) for split in ("dev", "test") for record in read_shipped_split(split)]
    documents_by_sequence = {}
    for document, sequences in enumerate(held_out):
        for sequence in sequences:
            documents_by_sequence.setdefault(sequence, []).append(document)
    kept = []
    with gzip.open(shipped_folder() / "background.jsonl.gz", "rt", encoding="utf-8") as lines:
        for line in lines:
            text = json.loads(line)["text_en"]
            sequences = word_sequences(text)
            shared = Counter(document for sequence in sequences for document in documents_by_sequence.get(sequence, ()))
            if all(count < OVERLAP_SHARE * min(len(sequences), len(held_out[document])) for document, count in shared.items()):
                kept.append(text)
    return kept


def read_splits(data_dir: str | None) -> dict[str, list[dict]]:
    if data_dir is None:
        return {split: read_shipped_split(split) for split in SPLITS}
    return {split: read_original_split(Path(data_dir).expanduser(), split) for split in SPLITS}


def label_set(splits: dict[str, list[dict]], task: str, top_k: int | None, extra_codes=()) -> list[str]:
    field = TASK_FIELDS[task]
    if top_k is not None:
        counts = Counter(code for record in splits["train"] for code in record[field])
        return sorted(code for code, _ in sorted(counts.items(), key=lambda item: (-item[1], item[0]))[:top_k])
    codes = {code for record in splits["train"] for code in record[field]}
    return sorted(codes | {normalize_code(code) for code in extra_codes})


@dataclass
class CodiespConfig(LocalFilesConfig):
    task: str = "d"
    top_k: int | None = None
    language: str = "en"
    extra_codes: tuple[str, ...] = ()


class Codiesp(LocalFilesBuilder):
    BUILDER_CONFIG_CLASS = CodiespConfig
    BUILDER_CONFIGS = [
        CodiespConfig(name="codiesp-d-50", task="d", top_k=50, description="the 50 most frequent train diagnosis codes"),
        CodiespConfig(name="codiesp-d", task="d", description="every train diagnosis code (ICD-10-CM)"),
        CodiespConfig(name="codiesp-p", task="p", description="every train procedure code (ICD-10-PCS)"),
    ]
    DEFAULT_CONFIG_NAME = "codiesp-d-50"

    def __init__(self, *args, data_dir: str | None = None, **kwargs):
        if kwargs.get("language", "en") not in ("en", "es"):
            raise ValueError(f"Codiesp: language must be 'en' or 'es', got {kwargs['language']!r}.")
        if "extra_codes" in kwargs:
            kwargs["extra_codes"] = tuple(sorted(normalize_code(code) for code in kwargs["extra_codes"]))
        self.splits = read_splits(data_dir)
        super().__init__(*args, data_dir=data_dir, **kwargs)

    def find_inputs(self, folder: Path | None) -> dict[str, Path]:
        """Every file of your own CodiEsp folder; none for the shipped copy."""
        files = sorted(path for path in folder.rglob("*") if path.is_file()) if folder is not None else []
        return {str(path.relative_to(folder)): path for path in files}

    @functools.cached_property
    def codes(self) -> list[str]:
        """The label set: read off the train split only."""
        return label_set(self.splits, self.config.task, self.config.top_k, self.config.extra_codes)

    def _info(self):
        config = self.config
        evidence = datasets.List({"code": datasets.Value("string"), "text": datasets.Value("string"),
                                  "spans": datasets.List(datasets.List(datasets.Value("int32")))})
        return datasets.DatasetInfo(
            description=__doc__,
            features=coding_features(**({"evidence": evidence} if config.language == "es" else {})),
            homepage="https://doi.org/10.5281/zenodo.3837305",
            license="CC BY 4.0",
            citation=CITATION,
        )

    def _split_generators(self, dl_manager):
        return [
            datasets.SplitGenerator(name=SPLIT_OF[split], gen_kwargs={"records": self.splits[split]})
            for split in SPLITS
        ]

    def _generate_examples(self, records):
        field = TASK_FIELDS[self.config.task]
        evidence_type = "diagnosis" if self.config.task == "d" else "procedure"
        code_set = set(self.codes)
        for record in records:
            example = {
                "id": record["id"],
                "text": record[f"text_{self.config.language}"],
                "labels": [code for code in record[field] if code in code_set],
                "gold_codes": record[field],
            }
            if self.config.language == "es":
                example["evidence"] = [
                    {"code": row["code"], "text": row["text"], "spans": row["spans"]}
                    for row in record["evidence"]
                    if row["type"] == evidence_type
                ]
            yield record["id"], example


def load(
    config: str = "codiesp-d-50",
    language: str = "en",
    data_dir: str | None = None,
    code_terms: str | None = None,
    num_synonyms: int = 4,
    extra_codes: tuple[str, ...] = (),
    cache_dir: str | None = None,
) -> CodingData:
    """CodiEsp's train/validation/test splits (built once, then read from the cache), its label set,
    its code terms (`code_terms`: your own JSON file instead; `num_synonyms`: M, for the parent fill
    of ICD-10-CM terms) and, in English, the background texts for word2vec."""
    builder = Codiesp(config_name=config, language=language, data_dir=data_dir, extra_codes=extra_codes,
                      cache_dir=cache_dir)
    builder.download_and_prepare()
    if code_terms is not None:
        terms = read_code_terms(Path(code_terms))
    else:
        terms = codiesp_terms(builder, num_synonyms)[0]
    description = f"CodiEsp (CLEF eHealth 2020, CC BY 4.0), config {config}, " + (
        "the organisers' English translation" if language == "en" else "the original Spanish")
    return CodingData(
        splits=builder.as_dataset(),
        codes=builder.codes,
        code_terms=terms,
        card=DataCard(name="CodiEsp", dataset_id="bigbio/codiesp", description=description, license="cc-by-4.0",
                      language=language, citation=CITATION),
        unlabelled_texts=background_texts() if language == "en" else [],
    )


def spanish_evidence_terms(codes, train_records: list[dict]) -> dict[str, list[str]]:
    """Each code's evidence texts in the train split's CodiEsp-X rows, most frequent first (ties in
    first-seen order). Train only: dev and test evidence must never reach a model's terms."""
    counts: dict[str, Counter] = {code: Counter() for code in codes}
    for record in train_records:
        for row in record["evidence"]:
            if row["code"] in counts:
                counts[row["code"]][row["text"].strip()] += 1
    return {code: [text for text, _ in counter.most_common()] for code, counter in counts.items()}


def codiesp_terms(builder: Codiesp, num_synonyms: int = 4, seed: int = 0) -> tuple[dict[str, list[str]], dict]:
    """Terms for the codes of a CodiEsp builder's config, and a report.

    English diagnoses: ICD-10-CM entries (with the parent's title for codes with fewer than M−1
    terms; retired codes take their parent's entry). Spanish, and procedures (no open ICD-10-PCS
    titles are at hand): the train split's CodiEsp-X evidence texts of the code, most frequent
    first, then the English terms. Dev and test evidence is never used.
    """
    codes, diagnoses, language = builder.codes, builder.config.task == "d", builder.config.language
    english, fallbacks = open_icd10cm_synonyms(codes, seed, num_synonyms - 1) if diagnoses else ({}, {})
    if language == "en" and diagnoses:
        synonyms = english
    else:
        evidence = spanish_evidence_terms(codes, builder.splits["train"])
        synonyms = {}
        for code in codes:
            terms = evidence[code] + english.get(code, [])
            if not terms and not diagnoses:
                terms = [code]  # a procedure never seen with evidence in train: only its code
            unique = list(dict.fromkeys(terms))
            synonyms[code] = unique
    summary = report(synonyms) | {"codes_from_parent_entry": len(fallbacks)}
    return synonyms, summary
