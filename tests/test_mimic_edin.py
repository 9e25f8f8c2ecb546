"""MIMIC-IV (ICD-10, ICD-9) and MIMIC-III clean on small MIMIC-shaped fixtures (made here; no MIMIC
data in the repo). The hadm_ids are real entries of Edin et al.'s public split lists; every note and
code assignment is invented."""

import csv
import gzip

import pytest

import datasets_scripts
from datasets_scripts import InputError
from datasets_scripts.mimic_edin import format_code

TRAIN = [20000024, 20000034, 20000094, 20000147, 20000343, 20000588, 20000694, 20001305, 20001363, 20001395,
         20001461, 20001494, 20001699, 20001720]  # train in mimiciv_icd10_split
VAL, TEST = [20000351, 20001811], [20000239, 20000254]
UNLISTED = 29999999  # in no split list, but it has a discharge note: it counts for the 10-admission filter
ICD9_TRAIN = [20000019, 20000041, 20000057, 20000235, 20000347, 20000502, 20000602, 20000629, 20000691, 20000808]
ICD9_VAL, ICD9_TEST = [20001002], [20000102]
LISTED = TRAIN + VAL + TEST
NO_NOTE = TRAIN[0]  # listed, coded, but without a discharge note: not in the data, not counted by the filter
ONLY_RARE = TRAIN[1]  # its one code is too rare: the admission is dropped


def write_csv(path, header, rows):
    path.parent.mkdir(parents=True, exist_ok=True)
    with gzip.open(path, "wt", newline="", encoding="utf-8") as file:
        writer = csv.writer(file)
        writer.writerow(header)
        writer.writerows(rows)


def fixture_rows():
    """(diagnoses, procedures) rows: (subject_id, hadm_id, seq_num, icd_code, icd_version)."""
    diagnoses, procedures = [], []
    with_notes = [h for h in LISTED if h not in (NO_NOTE, ONLY_RARE)] + [UNLISTED]  # 18 admissions
    for number, hadm_id in enumerate(with_notes):
        diagnoses.append((1, hadm_id, 1, "I10", 10))  # 3 characters: no dot
        if number < 10:
            diagnoses.append((1, hadm_id, 2, "E1165", 10))  # 10 admissions, one of them unlisted: kept
        if number < 9:
            diagnoses.append((1, hadm_id, 3, "J189", 10))  # 9 with a note (+ the one without): dropped
            procedures.append((1, hadm_id, 1, "02HV33Z", 10))  # 9: dropped
        if number < 10:
            procedures.append((1, hadm_id, 2, "0DTJ4ZZ", 10))  # 10: kept
    diagnoses += [(1, NO_NOTE, 1, "J189", 10), (1, NO_NOTE, 2, "I10", 10), (1, ONLY_RARE, 1, "K359", 10),
                  (1, TRAIN[2], 4, "I10", 10),  # a duplicate
                  (1, TRAIN[3], 5, "", 10),  # an empty code
                  (1, TRAIN[4], 6, "4019", 9)]  # another version: not in the ICD-10 data
    for hadm_id in ICD9_TRAIN + ICD9_VAL + ICD9_TEST:
        diagnoses.append((2, hadm_id, 1, "4019", 9))
        procedures.append((2, hadm_id, 1, "0040", 9))  # leading zero kept: 00.40
    return diagnoses, procedures


@pytest.fixture
def mimic4_dirs(tmp_path):
    hosp, note = tmp_path / "mimiciv", tmp_path / "mimic-iv-note"
    diagnoses, procedures = fixture_rows()
    write_csv(hosp / "hosp" / "diagnoses_icd.csv.gz", ["subject_id", "hadm_id", "seq_num", "icd_code", "icd_version"], diagnoses)
    write_csv(hosp / "hosp" / "procedures_icd.csv.gz", ["subject_id", "hadm_id", "seq_num", "chartdate", "icd_code", "icd_version"],
              [(s, h, n, "2150-01-01", c, v) for s, h, n, c, v in procedures])
    write_csv(hosp / "hosp" / "d_icd_diagnoses.csv.gz", ["icd_code", "icd_version", "long_title"],
              [("I10", 10, "Essential (primary) hypertension"), ("E1165", 10, "Type 2 diabetes mellitus with hyperglycemia"),
               ("J189", 10, "Pneumonia, unspecified organism"), ("4019", 9, "Unspecified essential hypertension")])
    write_csv(hosp / "hosp" / "d_icd_procedures.csv.gz", ["icd_code", "icd_version", "long_title"],
              [("0DTJ4ZZ", 10, "Resection of Appendix, Percutaneous Endoscopic Approach"),
               ("0040", 9, "Procedure on single vessel")])
    notes = [(f"n{h}", 1, h, "DS", 1, "", "", f"Discharge note of {h}.") for h in LISTED + [UNLISTED] if h != NO_NOTE]
    notes.append((f"n{TEST[0]}-2", 1, TEST[0], "DS", 2, "", "", "Addendum, \"quoted\",\nsecond line."))
    notes += [(f"n{h}", 2, h, "DS", 1, "", "", f"ICD-9 note {h}.") for h in ICD9_TRAIN + ICD9_VAL + ICD9_TEST]
    write_csv(note / "note" / "discharge.csv.gz",
              ["note_id", "subject_id", "hadm_id", "note_type", "note_seq", "charttime", "storetime", "text"], notes)
    return hosp, note


def load(config, hosp, note, tmp_path, **options):
    return datasets_scripts.load("mimic4", config=config, data_dir=str(hosp), note_dir=str(note),
                                 cache_dir=str(tmp_path / "cache"), **options)


@pytest.mark.parametrize("code,version,is_diagnosis,formatted", [
    ("I10", 10, True, "I10"), ("E1165", 10, True, "E11.65"), ("e11.65", 10, True, "E11.65"),
    ("0DTJ4ZZ", 10, False, "0DTJ4ZZ"), ("4019", 9, True, "401.9"), ("E8497", 9, True, "E849.7"),
    ("0040", 9, False, "00.40"), ("17", 9, False, "17."),
])
def test_code_format(code, version, is_diagnosis, formatted):
    assert format_code(code, version, is_diagnosis) == formatted


def test_mimic4_icd10_recipe(mimic4_dirs, tmp_path, caplog):
    with caplog.at_level("WARNING"):
        data = load("mimic4-icd10", *mimic4_dirs, tmp_path)
    assert data.codes == ["0DTJ4ZZ", "E11.65", "I10"]  # J18.9 (9 admissions with a note) and 02HV33Z (9) dropped
    kept = [h for h in TRAIN if h not in (NO_NOTE, ONLY_RARE)]
    with_notes = [h for h in LISTED if h not in (NO_NOTE, ONLY_RARE)] + [UNLISTED]
    expected = {h: (["0DTJ4ZZ"] if with_notes.index(h) < 10 else []) + ["I10"] +
                   (["E11.65"] if with_notes.index(h) < 10 else []) for h in with_notes}
    train = data.splits["train"]
    assert train["hadm_id"] == kept and train["id"] == [str(h) for h in kept]
    assert train["labels"] == [expected[h] for h in kept] == train["gold_codes"]
    assert data.splits["validation"]["hadm_id"] == VAL and data.splits["test"]["hadm_id"] == TEST
    assert data.splits["test"]["text"][0] == f"Discharge note of {TEST[0]}.\tAddendum, \"quoted\",\nsecond line."
    assert "89,087 train, 13,376 val, 19,800 test listed admissions have no discharge note or no kept code" in caplog.text
    assert data.code_terms["I10"][0] == "Essential (primary) hypertension"
    assert len(data.code_terms["I10"]) > 1  # and ICD-10-CM's inclusion terms
    assert data.code_terms["0DTJ4ZZ"] == ["Resection of Appendix, Percutaneous Endoscopic Approach"]
    assert data.card.name == "MIMIC-IV" and "PhysioNet" in data.card.usage_note


def test_mimic4_icd9(mimic4_dirs, tmp_path):
    data = load("mimic4-icd9", *mimic4_dirs, tmp_path)
    assert data.codes == ["00.40", "401.9"]
    assert data.splits["train"]["hadm_id"] == ICD9_TRAIN
    assert data.splits["train"]["labels"][0] == ["00.40", "401.9"]  # procedures, then diagnoses
    assert data.code_terms["00.40"] == ["Procedure on single vessel"]


def test_mimic3_clean(tmp_path):
    train, val, test = [100001, 100003, 100007, 100009, 100010, 100011, 100012, 100018, 100019, 100020], [100034], [100006]
    folder = tmp_path / "mimic3"
    admissions = train + val + test
    write_csv(folder / "NOTEEVENTS.csv.gz", ["ROW_ID", "SUBJECT_ID", "HADM_ID", "CATEGORY", "TEXT"],
              [(i, 1, h, "Discharge summary", f"Summary {h}.") for i, h in enumerate(admissions)]
              + [(99, 1, train[0], "Nursing", "Not a summary.")])
    write_csv(folder / "DIAGNOSES_ICD.csv.gz", ["ROW_ID", "SUBJECT_ID", "HADM_ID", "SEQ_NUM", "ICD9_CODE"],
              [(i, 1, h, 1, "4019") for i, h in enumerate(admissions)] + [(50, 1, train[0], 2, "4280")])
    write_csv(folder / "PROCEDURES_ICD.csv.gz", ["ROW_ID", "SUBJECT_ID", "HADM_ID", "SEQ_NUM", "ICD9_CODE"],
              [(i, 1, h, 1, "0151") for i, h in enumerate(admissions)])
    write_csv(folder / "D_ICD_DIAGNOSES.csv.gz", ["ROW_ID", "ICD9_CODE", "SHORT_TITLE", "LONG_TITLE"],
              [(1, "4019", "Hypertension NOS", "Unspecified essential hypertension")])
    write_csv(folder / "D_ICD_PROCEDURES.csv.gz", ["ROW_ID", "ICD9_CODE", "SHORT_TITLE", "LONG_TITLE"],
              [(1, "0151", "Excise cereb meninges", "Other excision of lesion of cerebral meninges")])
    data = datasets_scripts.load("mimic3-clean", data_dir=str(folder), cache_dir=str(tmp_path / "cache"))
    assert data.codes == ["01.51", "401.9"]  # 428.0 occurs once: dropped; 01.51 keeps its leading zero
    assert data.splits["train"]["hadm_id"] == train and data.splits["train"]["text"][0] == "Summary 100001."
    assert data.splits["train"]["labels"][0] == ["01.51", "401.9"]
    assert data.code_terms["401.9"] == ["Unspecified essential hypertension"]


def test_bad_inputs(mimic4_dirs, tmp_path):
    hosp, note = mimic4_dirs
    with pytest.raises(InputError, match="note_dir at your MIMIC-IV-Note folder"):
        load("mimic4-icd10", hosp, hosp, tmp_path)
    write_csv(hosp / "hosp" / "diagnoses_icd.csv.gz", ["subject_id", "hadm_id", "seq_num", "icd_code", "icd_version"],
              [(1, TRAIN[2], 1, "I10", 10), (1, TRAIN[2], 2, "I10", "ten")])
    with pytest.raises(InputError, match="diagnoses_icd.csv.gz, line 3: icd_version is 'ten', expected 9 or 10"):
        load("mimic4-icd10", hosp, note, tmp_path)
    write_csv(hosp / "hosp" / "diagnoses_icd.csv.gz", ["subject_id", "hadm_id", "seq_num", "icd_code", "icd_version"],
              [(1, TRAIN[2], 1, "I10", 10), (1, "2x", 2, "I10", 10)])
    with pytest.raises(InputError, match="diagnoses_icd.csv.gz, line 3: hadm_id is not a number; the file is damaged "
                                         "or is not MIMIC-IV's"):
        load("mimic4-icd10", hosp, note, tmp_path)
    write_csv(hosp / "hosp" / "diagnoses_icd.csv.gz", ["subject_id", "icd_code", "icd_version"], [(1, "I10", 10)])
    with pytest.raises(InputError, match=r"the header lacks the columns \['hadm_id'\].*the right MIMIC-IV file"):
        load("mimic4-icd10", hosp, note, tmp_path)
    write_csv(hosp / "hosp" / "diagnoses_icd.csv.gz", ["subject_id", "hadm_id", "seq_num", "icd_code", "icd_version"],
              [(1, TRAIN[2], 1, "I10", 10)])
    with pytest.raises(InputError, match="none of the 13,378 admissions of the val split has both a discharge note"):
        load("mimic4-icd10", hosp, note, tmp_path)
    with pytest.raises(InputError, match=r"--dataset mimic4 takes no option language"):
        datasets_scripts.load("mimic4", language="en")


def test_umls_synonyms_for_icd10_codes(mimic4_dirs, tmp_path):
    # --mrconso: the authors' UMLS recipe over ICD10CM and ICD10PCS (MRCONSO-shaped fixture, invented CUIs)
    def line(cui, source, code, string):
        return f"{cui}|ENG|P|L1|PF|S1|Y|A1||||{source}|PT|{code}|{string}|0|N||\n"

    mrconso = tmp_path / "MRCONSO.RRF"
    mrconso.write_text(line("C1", "ICD10CM", "I10", "Essential (primary) hypertension")
                       + line("C1", "MSH", "D1", "Hypertension, Essential")
                       + line("C2", "ICD10PCS", "0DTJ4ZZ", "Resection of Appendix, Perc Endo Approach")
                       + line("C2", "SNOMEDCT_US", "S2", "Laparoscopic appendectomy")
                       + line("C3", "ICD9CM", "401.9", "Unspecified essential hypertension"), encoding="utf-8")
    data = load("mimic4-icd10", *mimic4_dirs, tmp_path, mrconso=str(mrconso))
    assert data.code_terms["I10"][0] == "Essential (primary) hypertension"  # the d_icd title first
    assert "hypertension, essential" in data.code_terms["I10"]
    assert "laparoscopic appendectomy" in data.code_terms["0DTJ4ZZ"]
    # no UMLS row: its title, and (as the authors' recipe does) the title lower-cased among the synonyms
    assert data.code_terms["E11.65"] == ["Type 2 diabetes mellitus with hyperglycemia",
                                         "type 2 diabetes mellitus with hyperglycemia"]
