"""The MIMIC-III builder on a small MIMIC-shaped fixture (made here; no MIMIC data in the repo).

The hadm_ids are real entries of the public CAML split lists; every note and code is invented.
"""

import csv
import gzip
import json
import shutil
from pathlib import Path

import pytest

import datasets_scripts
from datasets_scripts import InputError
from datasets_scripts.icd_codes import format_icd9_code
from datasets_scripts.mimic_iii import MimicIII, split_hadm_ids

TRAIN_A, TRAIN_B = 100006, 100029  # in train_50 and train_full
TRAIN_FULL_ONLY = 100001  # in train_full, not in train_50
DEV, TEST = 100011, 100091
TRAIN_NO_SUMMARY = 100165  # listed (dev); its only note is a nursing note
UNLISTED = 999999

NOTE_HEADER = ["ROW_ID", "SUBJECT_ID", "HADM_ID", "CHARTDATE", "CHARTTIME", "STORETIME", "CATEGORY", "DESCRIPTION", "CGID", "ISERROR", "TEXT"]
REPORT_A = 'Admission Date:  [**2151-7-16**]\nChief Complaint: "chest pain", dyspnea\n\nHTN, CHF.'
ADDENDUM_A = "Addendum:\nPatient also has diabetes, on insulin."
NOTES = [  # (subject, hadm, category, text), in file order
    (1, TRAIN_A, "Discharge summary", REPORT_A),
    (1, TRAIN_A, "Nursing", "Nursing note: not a discharge summary."),
    (2, TRAIN_B, "Discharge summary", "Sepsis, urinary tract infection."),
    (3, DEV, "Discharge summary", "Dev note."),
    (1, TRAIN_A, "Discharge summary", ADDENDUM_A),
    (4, TEST, "Discharge summary", "Test note, pneumonia."),
    (5, TRAIN_NO_SUMMARY, "Nursing", "Only nursing."),
    (6, UNLISTED, "Discharge summary", "Not in any split list."),
    (7, "", "Discharge summary", "No admission id."),
    (8, TRAIN_FULL_ONLY, "Discharge summary", "Full-only admission."),
]
DIAGNOSES = [  # (hadm, ICD9_CODE as MIMIC stores it: undotted)
    (TRAIN_A, "4019"), (TRAIN_A, "4280"), (TRAIN_A, "25000"), (TRAIN_A, "E8497"), (TRAIN_A, "4019"),
    (TRAIN_B, "0389"), (TRAIN_B, "5990"), (TRAIN_B, "V5861"), (TRAIN_B, ""),
    (DEV, "486"), (TEST, "486"), (TEST, "E9300"), (UNLISTED, "4019"), (TRAIN_FULL_ONLY, "7840"),
]
PROCEDURES = [(TRAIN_A, "3893"), (TRAIN_A, "17"), (TRAIN_B, "9604"), (TEST, "966")]


def write_csv(path, header, rows, compress=False):
    opener = gzip.open if compress else open
    with opener(path, "wt", newline="", encoding="utf-8") as file:
        writer = csv.writer(file, quoting=csv.QUOTE_MINIMAL)
        writer.writerow(header)
        writer.writerows(rows)


@pytest.fixture
def mimic_dir(tmp_path):
    folder = tmp_path / "mimic"
    folder.mkdir()
    write_csv(folder / "NOTEEVENTS.csv.gz", NOTE_HEADER,
              [[i, s, h, "2151-08-04", "", "", c, "Report", "", "", t] for i, (s, h, c, t) in enumerate(NOTES)], compress=True)
    write_csv(folder / "DIAGNOSES_ICD.csv", ["ROW_ID", "SUBJECT_ID", "HADM_ID", "SEQ_NUM", "ICD9_CODE"],
              [[i, 1, h, i, c] for i, (h, c) in enumerate(DIAGNOSES)])
    write_csv(folder / "PROCEDURES_ICD.csv", ["ROW_ID", "SUBJECT_ID", "HADM_ID", "SEQ_NUM", "ICD9_CODE"],
              [[i, 1, h, i, c] for i, (h, c) in enumerate(PROCEDURES)])
    return folder


@pytest.mark.parametrize(
    "raw,is_diagnosis,formatted",
    [("4019", True, "401.9"), ("25000", True, "250.00"), ("486", True, "486"), ("E8497", True, "E849.7"),
     ("E849", True, "E849"), ("V5861", True, "V58.61"), ("V10", True, "V10"), ("0389", True, "038.9"),
     ("3893", False, "38.93"), ("966", False, "96.6"), ("17", False, "17."), ("9604", False, "96.04"),
     ("401.9", True, "401.9")],
)
def test_code_format(raw, is_diagnosis, formatted):
    assert format_icd9_code(raw, is_diagnosis) == formatted


def load_mimic_iii(data_dir, config, **options):
    """The dataset's splits through the registry (with a one-code terms file: the others fall back to
    their code string), and its label set."""
    code_terms = Path(data_dir).parent / "code_terms.json"
    code_terms.write_text(json.dumps({"401.9": ["Unspecified essential hypertension"]}))
    data = datasets_scripts.load("mimic3", config=config, data_dir=data_dir, code_terms=str(code_terms), **options)
    for split in data.splits.values():
        assert [row["gold_codes"] for row in split] == split["labels"] and split["id"] == list(map(str, split["hadm_id"]))
    return data.splits, data.codes


def as_rows(split):
    return [(row["hadm_id"], row["subject_id"], row["text"], row["labels"]) for row in split]


def in_list_order(rows, setting):
    order = split_hadm_ids(setting)["train"]
    return sorted(rows, key=lambda row: order.index(row[0]))


def test_full_setting(mimic_dir, tmp_path):
    dataset, codes = load_mimic_iii(str(mimic_dir), "mimic3-full", cache_dir=str(tmp_path / "cache"))
    assert as_rows(dataset["train"]) == in_list_order([
        (TRAIN_A, 1, REPORT_A + "\t" + ADDENDUM_A, ["401.9", "428.0", "250.00", "E849.7", "38.93", "17."]),
        (TRAIN_B, 2, "Sepsis, urinary tract infection.", ["038.9", "599.0", "V58.61", "96.04"]),
        (TRAIN_FULL_ONLY, 8, "Full-only admission.", ["784.0"]),
    ], "full")
    assert as_rows(dataset["validation"]) == [(DEV, 3, "Dev note.", ["486"])]
    assert as_rows(dataset["test"]) == [(TEST, 4, "Test note, pneumonia.", ["486", "E930.0", "96.6"])]
    assert codes == sorted(["401.9", "428.0", "250.00", "E849.7", "38.93", "17.", "038.9", "599.0", "V58.61",
                            "96.04", "486", "E930.0", "96.6", "784.0"])


def test_top50_setting_keeps_listed_admissions_and_top50_codes(mimic_dir, tmp_path):
    dataset, codes = load_mimic_iii(str(mimic_dir), "mimic3-50", cache_dir=str(tmp_path / "cache"))
    assert len(codes) == 50
    assert as_rows(dataset["train"]) == in_list_order([
        (TRAIN_A, 1, REPORT_A + "\t" + ADDENDUM_A, ["401.9", "428.0", "250.00", "38.93"]),
        (TRAIN_B, 2, "Sepsis, urinary tract infection.", ["038.9", "599.0", "V58.61", "96.04"]),
    ], "50")
    assert as_rows(dataset["test"]) == [(TEST, 4, "Test note, pneumonia.", ["486", "96.6"])]


def test_split_sizes_are_reported_never_enforced(mimic_dir, tmp_path, caplog):
    # a correct build of other files (here: a fixture) differs from the paper's sizes: a warning, not an error
    with caplog.at_level("WARNING"):
        dataset, _ = load_mimic_iii(str(mimic_dir), "mimic3-50", cache_dir=str(tmp_path / "cache"))
    assert len(dataset["train"]) == 2
    assert "mimic3-50 differs from the paper's data: train 2 (the paper: 8,066)" in caplog.text
    assert "listed admissions have no discharge summary" in caplog.text and "Sepsis" not in caplog.text
    caplog.clear()
    with caplog.at_level("WARNING"):
        load_mimic_iii(str(mimic_dir), "mimic3-full", cache_dir=str(tmp_path / "cache"))
    assert "train 3 (the paper: 47,723)" in caplog.text and "CAML read procedure codes as numbers" in caplog.text


def test_caml_procedure_codes_read_as_integers(mimic_dir, tmp_path, caplog):
    write_csv(mimic_dir / "PROCEDURES_ICD.csv", ["ROW_ID", "SUBJECT_ID", "HADM_ID", "SEQ_NUM", "ICD9_CODE"],
              [[1, 1, TRAIN_A, 1, "0151"], [2, 1, TRAIN_A, 2, "0066"], [3, 1, TRAIN_A, 3, "3893"]])
    with caplog.at_level("WARNING"):
        correct, codes = load_mimic_iii(str(mimic_dir), "mimic3-full", cache_dir=str(tmp_path / "correct"))
    assert "the 2 procedure codes here with a leading zero (01.51)" in caplog.text  # 01.51 and 00.66
    caml, caml_codes = load_mimic_iii(str(mimic_dir), "mimic3-full", caml_procedure_codes=True,
                                      cache_dir=str(tmp_path / "caml"))
    train_a = {row["hadm_id"]: row["labels"] for row in correct["train"]}[TRAIN_A]
    assert train_a[-3:] == ["01.51", "00.66", "38.93"]
    assert {row["hadm_id"]: row["labels"] for row in caml["train"]}[TRAIN_A][-3:] == ["15.1", "66.", "38.93"]
    assert "01.51" in codes and "15.1" in caml_codes and "01.51" not in caml_codes


def test_cache_is_reused_and_follows_input_changes(mimic_dir, tmp_path, monkeypatch):
    cache = str(tmp_path / "cache")
    first, _ = load_mimic_iii(str(mimic_dir), "mimic3-50", cache_dir=cache)
    calls = []
    original = MimicIII._discharge_summaries
    monkeypatch.setattr(MimicIII, "_discharge_summaries", lambda self, ids: calls.append(1) or original(self, ids))
    again, _ = load_mimic_iii(str(mimic_dir), "mimic3-50", cache_dir=cache)
    assert calls == [] and as_rows(again["train"]) == as_rows(first["train"])
    notes = NOTES + [(2, TRAIN_B, "Discharge summary", "A late addendum.")]
    write_csv(mimic_dir / "NOTEEVENTS.csv.gz", NOTE_HEADER,
              [[i, s, h, "", "", "", c, "", "", "", t] for i, (s, h, c, t) in enumerate(notes)], compress=True)
    changed, _ = load_mimic_iii(str(mimic_dir), "mimic3-50", cache_dir=cache)
    assert calls == [1]
    assert {row[0]: row[2] for row in as_rows(changed["train"])}[TRAIN_B] == "Sepsis, urinary tract infection.\tA late addendum."


DIAGNOSES_HEADER = ["ROW_ID", "SUBJECT_ID", "HADM_ID", "SEQ_NUM", "ICD9_CODE"]


def unzip_notes(folder):
    """NOTEEVENTS.csv.gz as a plain NOTEEVENTS.csv; its bytes."""
    whole = gzip.decompress((folder / "NOTEEVENTS.csv.gz").read_bytes())
    (folder / "NOTEEVENTS.csv.gz").unlink()
    (folder / "NOTEEVENTS.csv").write_bytes(whole)
    return whole


def cut_gzip(folder):
    data = (folder / "NOTEEVENTS.csv.gz").read_bytes()
    (folder / "NOTEEVENTS.csv.gz").write_bytes(data[: len(data) // 2])


def cut_inside_a_note(folder):
    whole = unzip_notes(folder)
    (folder / "NOTEEVENTS.csv").write_bytes(whole[: whole.index(b"HTN, CHF")])  # inside a quoted, multi-line note


def latin1_note(folder):
    whole = unzip_notes(folder)
    (folder / "NOTEEVENTS.csv").write_bytes(whole.replace(b"Dev note.", "Dev note \u00e9.".encode("latin-1")))


# each case: what is done to a fresh MIMIC-III folder, and what the error says (never a note's text:
# "chest pain", "Dev note", "No summary" and the reports stand in the notes)
DAMAGES = {
    "missing_table": (lambda folder: (folder / "PROCEDURES_ICD.csv").unlink(),
                      "neither PROCEDURES_ICD.csv nor PROCEDURES_ICD.csv.gz"),
    "missing_column": (lambda folder: write_csv(folder / "DIAGNOSES_ICD.csv", DIAGNOSES_HEADER[:-1], [[1, 1, TRAIN_A, 1]]),
                       r"DIAGNOSES_ICD.csv, line 1: the header lacks the columns \['ICD9_CODE'\]"),
    "short_row": (lambda folder: write_csv(folder / "DIAGNOSES_ICD.csv", DIAGNOSES_HEADER,
                                           [[1, 1, TRAIN_A, 1, "4019"], [2, 1, TRAIN_A, 2]]),
                  "DIAGNOSES_ICD.csv, line 3: 4 fields where the header has 5"),
    "cut_gzip": (cut_gzip, "NOTEEVENTS.csv.gz: the gzip stream is cut short"),
    # the error names the line where the row starts (line 2, the first note), not where the reader stopped
    "cut_inside_a_note": (cut_inside_a_note, r"NOTEEVENTS.csv, line 2: not well-formed CSV .*cut short"),
    "not_utf8": (latin1_note, r"NOTEEVENTS.csv, near line \d+: not UTF-8 text"),
    "no_discharge_summary": (
        lambda folder: write_csv(folder / "NOTEEVENTS.csv.gz", NOTE_HEADER,
                                 [[1, 1, TRAIN_A, "", "", "", "Nursing", "", "", "", "No summary."]], compress=True),
        "NOTEEVENTS.csv.gz: none of the 8,066 admissions of the train split has a discharge summary"),
    # the second row starts on line 6: the first note's text spans lines 2 to 5
    "row_after_a_multiline_note": (
        lambda folder: write_csv(folder / "NOTEEVENTS.csv.gz", NOTE_HEADER,
                                 [[1, 1, TRAIN_A, "", "", "", "Discharge summary", "", "", "", REPORT_A],
                                  [2, 1, TRAIN_A, "", "", "", "Discharge summary", "", "", REPORT_A]], compress=True),
        "NOTEEVENTS.csv.gz, line 6: 10 fields where the header has 11"),
    "damaged_id": (lambda folder: write_csv(folder / "DIAGNOSES_ICD.csv", DIAGNOSES_HEADER,
                                            [[1, 1, TRAIN_A, 1, "4019"], [2, 1, "10x006", 2, "4280"]]),
                   "DIAGNOSES_ICD.csv, line 3: HADM_ID is not a number"),
    "no_folder": (shutil.rmtree, "MIMIC-III v1.4"),
}


@pytest.mark.parametrize("damage", sorted(DAMAGES))
def test_bad_inputs_name_file_line_and_fix(mimic_dir, tmp_path, damage):
    do, message = DAMAGES[damage]
    do(mimic_dir)
    cache = tmp_path / "cache"
    with pytest.raises(InputError, match=message) as error:
        load_mimic_iii(str(mimic_dir), "mimic3-50", cache_dir=str(cache))
    assert not any(text in str(error.value) for text in ("chest pain", "Dev note", "No summary", REPORT_A[:20]))
    assert not list(cache.rglob("*.arrow")), "a failed build left data in the cache"


def test_a_repaired_folder_builds(mimic_dir, tmp_path):
    notes = (mimic_dir / "NOTEEVENTS.csv.gz").read_bytes()
    cut_gzip(mimic_dir)
    with pytest.raises(InputError):
        load_mimic_iii(str(mimic_dir), "mimic3-50", cache_dir=str(tmp_path / "cache"))
    (mimic_dir / "NOTEEVENTS.csv.gz").write_bytes(notes)
    assert len(load_mimic_iii(str(mimic_dir), "mimic3-50", cache_dir=str(tmp_path / "cache"))[0]["train"]) == 2


def test_full_build_reads_the_code_tables_once(mimic_dir, tmp_path, monkeypatch):
    import datasets_scripts.mimic_iii as mimic_iii

    reads = []
    original = mimic_iii.read_csv_rows
    monkeypatch.setattr(mimic_iii, "read_csv_rows", lambda path, *a, **k: reads.append(path.name) or original(path, *a, **k))
    load_mimic_iii(str(mimic_dir), "mimic3-full", cache_dir=str(tmp_path / "cache"))
    assert sorted(reads) == ["DIAGNOSES_ICD.csv", "NOTEEVENTS.csv.gz", "PROCEDURES_ICD.csv"]
