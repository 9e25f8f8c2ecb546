"""Code synonyms from an MRCONSO-shaped fixture (UMLS is licensed: none of it is in the repo) and
from the open sources, on real ICD-9-CM titles and ICD-10-CM entries."""

import gzip
import json

import pytest

from datasets_scripts.code_synonyms import main
from datasets_scripts.synonyms import clean_term, report, strip_accents
from datasets_scripts.synonyms.icd9 import authors_file_terms, open_icd9_synonyms, read_authors_synonyms
from datasets_scripts.synonyms.icd9 import read_caml_descriptions, read_icd9_titles
from datasets_scripts.synonyms.icd10cm import icd10cm_codes, open_icd10cm_synonyms
from datasets_scripts.synonyms.umls import authors_umls_synonyms, read_mrconso, umls_strings, umls_synonyms
from modeling_msmn.tokenization_msmn import select_code_terms
from datasets_scripts import InputError


def mrconso_line(cui, language, source, code, string, suppress="N"):
    # CUI|LAT|TS|LUI|STT|SUI|ISPREF|AUI|SAUI|SCUI|SDUI|SAB|TTY|CODE|STR|SRL|SUPPRESS|CVF|
    return f"{cui}|{language}|P|L1|PF|S1|Y|A1||||{source}|PT|{code}|{string}|0|{suppress}||\n"


MRCONSO = [
    mrconso_line("C0001", "ENG", "ICD9CM", "428.0", "Congestive heart failure, unspecified"),
    mrconso_line("C0001", "ENG", "MSH", "D006333", "Heart Failure, Congestive"),
    mrconso_line("C0001", "ENG", "SNOMEDCT_US", "42343007", "Congestive heart failure NOS"),
    mrconso_line("C0001", "ENG", "MTH", "", "CHF"),  # 1 word, 3 characters: dropped
    mrconso_line("C0001", "FRE", "MSHFRE", "D006333", "Insuffisance cardiaque congestive"),  # not English
    mrconso_line("C0001", "ENG", "SNOMEDCT_US", "42343007", "Congestive heart failure NOS", suppress="O"),  # duplicate
    mrconso_line("C0002", "ENG", "ICD9CM", "401.9", "Unspecified essential hypertension"),
    mrconso_line("C0002", "ENG", "MSH", "D006973", "Hypertension"),  # 1 word, 12 characters: kept
    mrconso_line("C0002", "ENG", "SNOMEDCT_US", "1201005", "Benign essential hypertension"),
    mrconso_line("C0003", "ENG", "ICD9CM", "17", "Operations on musculoskeletal system"),
    mrconso_line("C0003", "ENG", "MTH", "", "Musculo-skeletal operation"),
    mrconso_line("C0004", "ENG", "ICD9CM", "V58.61", "Long-term (current) use of anticoagulants"),
    mrconso_line("C0004", "ENG", "ICD9CM", "V58.62", "Long-term (current) use of anticoagulants"),  # CUI shared
    mrconso_line("C0005", "ENG", "ICD9CM", "E849.7", "Accident at résidential institution"),
]
DESCRIPTIONS = {
    "428.0": "Congestive heart failure, unspecified",
    "401.9": "Unspecified essential hypertension",
    "17": "Other miscellaneous procedures",
    "V58.61": "Long-term (current) use of anticoagulants",
}


@pytest.fixture
def mrconso(tmp_path):
    path = tmp_path / "MRCONSO.RRF"
    path.write_text("".join(MRCONSO), encoding="utf-8")
    return path


def test_clean_term():
    assert clean_term("Pneumonia NOS, organism-unspecified") == "pneumonia nos, organism unspecified"
    assert clean_term("Heart failure NOS") == "heart failure"
    assert clean_term("NOS  Anemia (chronic)") == "anemia (chronic)"


def test_umls_synonyms_exactly(mrconso):
    codes = ["17.", "401.9", "428.0", "E849.7", "V58.61", "V58.62", "999.9"]
    synonyms = umls_synonyms(codes, DESCRIPTIONS, mrconso, seed=0)
    as_sets = {code: (terms[0] if code in DESCRIPTIONS or code == "17." else None, set(terms[1:]) if code in DESCRIPTIONS or code == "17." else set(terms)) for code, terms in synonyms.items()}
    assert as_sets["428.0"] == ("Congestive heart failure, unspecified", {
        "congestive heart failure, unspecified", "heart failure, congestive", "congestive heart failure nos",
        "congestive heart failure"})
    assert as_sets["401.9"] == ("Unspecified essential hypertension", {
        "unspecified essential hypertension", "hypertension", "benign essential hypertension"})
    # "17." has no entry of its own: the reference looks it up without the dot
    assert as_sets["17."] == ("Other miscellaneous procedures", {
        "other miscellaneous procedures", "operations on musculoskeletal system", "musculo-skeletal operation",
        "musculo skeletal operation"})
    shared = {"long-term (current) use of anticoagulants", "long term (current) use of anticoagulants"}
    assert as_sets["V58.61"] == ("Long-term (current) use of anticoagulants", shared)
    assert synonyms["V58.62"] and set(synonyms["V58.62"]) == shared  # no description: UMLS strings only
    assert set(synonyms["E849.7"]) == {"accident at residential institution"}  # accents stripped
    assert synonyms["999.9"] == []
    assert synonyms == umls_synonyms(codes, DESCRIPTIONS, mrconso, seed=0)  # same inputs, same file
    assert synonyms != umls_synonyms(codes, DESCRIPTIONS, mrconso, seed=1)
    summary = report(synonyms)
    assert summary["codes"] == 7 and summary["codes_without_terms"] == ["999.9"]


def test_mrconso_with_wrong_field_count(tmp_path):
    path = tmp_path / "MRCONSO.RRF"
    path.write_text(MRCONSO[0] + "C0009|ENG|P|only|a few|fields\n", encoding="utf-8")
    with pytest.raises(InputError, match=r"MRCONSO.RRF, line 2: 6 '\|'-separated fields, expected 18"):
        umls_synonyms(["428.0"], DESCRIPTIONS, path)
    with pytest.raises(InputError, match="no such file"):
        umls_synonyms(["428.0"], DESCRIPTIONS, tmp_path / "missing.RRF")


def damaged_mrconso(folder, name):
    """An MRCONSO damaged as `name` says, in `folder`; its path."""
    path = folder / ("MRCONSO.RRF.gz" if name == "gzipped" else "MRCONSO.RRF")
    whole = "".join(MRCONSO).encode("utf-8")
    contents = {
        "field_missing": MRCONSO[0] + MRCONSO[1].replace("|MSH|", "|", 1),  # 17 fields, still '|'-terminated
        "not_utf8": MRCONSO[0] + MRCONSO[-1].replace("résidential", "r\udce9sidential"),
        "empty": "",
        "no_icd9_row": "".join(line for line in MRCONSO if "|ICD9CM|" not in line),
        "cut_gzip": None,
    }
    if name == "gzipped":
        path.write_bytes(gzip.compress(whole))
    elif name == "cut_gzip":
        path = folder / "MRCONSO.RRF.gz"
        path.write_bytes(gzip.compress(whole)[:40])
    else:
        path.write_bytes(contents[name].encode("utf-8", "surrogateescape"))
    return path


@pytest.mark.parametrize("name, message", [
    ("field_missing", r"MRCONSO.RRF, line 2: 17 '\|'-separated fields, expected 18, each followed by '\|'"),
    ("not_utf8", r"MRCONSO.RRF, line 2: not UTF-8 text"),
    ("empty", r"MRCONSO.RRF: holds no row of ICD9CM \(0 lines read\)"),
    ("no_icd9_row", r"MRCONSO.RRF: holds no row of ICD9CM \(8 lines read\)"),
    ("cut_gzip", r"MRCONSO.RRF.gz: the gzip stream is cut short or corrupt"),
])
def test_a_damaged_mrconso_is_named_with_its_line(tmp_path, name, message):
    with pytest.raises(InputError, match=message):
        umls_synonyms(["428.0"], DESCRIPTIONS, damaged_mrconso(tmp_path, name))


def test_a_gzipped_mrconso_reads_as_the_plain_one(tmp_path, mrconso):
    codes = sorted(DESCRIPTIONS)
    assert umls_synonyms(codes, DESCRIPTIONS, damaged_mrconso(tmp_path, "gzipped")) == umls_synonyms(codes, DESCRIPTIONS, mrconso)


def test_open_icd9_titles(tmp_path):
    header = "ROW_ID,ICD9_CODE,SHORT_TITLE,LONG_TITLE\n"
    (tmp_path / "D_ICD_DIAGNOSES.csv").write_text(
        header + '1,41071,"Subendo infarct, initial","Subendocardial infarction, initial episode of care"\n'
        '2,4019,Hypertension NOS,Unspecified essential hypertension\n', encoding="utf-8")
    (tmp_path / "D_ICD_PROCEDURES.csv").write_text(header + "1,3893,Venous cath NEC,\"Venous catheterization, not elsewhere classified\"\n", encoding="utf-8")
    long_titles, short_titles = read_icd9_titles(tmp_path)
    synonyms = open_icd9_synonyms(["410.71", "401.9", "38.93", "V99.9"], long_titles, short_titles)
    assert synonyms["410.71"][0] == "Subendocardial infarction, initial episode of care"
    assert set(synonyms["410.71"][1:]) == {"subendo infarct, initial", "subendocardial infarction, initial episode of care"}
    assert set(synonyms["38.93"][1:]) == {"venous cath nec", "venous catheterization, not elsewhere classified"}
    assert synonyms["V99.9"] == []


def test_every_assignable_icd10cm_code():
    codes = icd10cm_codes()
    assert len(codes) == len(set(codes)) > 90_000
    assert {"A00", "A00.0", "C50.9", "C50.911", "I10", "Z99.89"} <= set(codes)  # C50.9: not billable, used in CodiEsp
    assert not {"A00-A09", "1", "I"} & set(codes)  # no blocks, no chapters


def test_open_icd10cm_real_entries():
    synonyms, fallbacks = open_icd10cm_synonyms(["I21.4", "I10", "I21.41X", "E11.9"])
    assert synonyms["I21.4"][0] == "Non-ST elevation (NSTEMI) myocardial infarction"
    assert set(synonyms["I21.4"][1:]) == {
        "acute subendocardial myocardial infarction", "non-q wave myocardial infarction nos",
        "nontransmural myocardial infarction nos", "type 1 non-st elevation myocardial infarction"}
    assert set(synonyms["I10"][1:]) == {"high blood pressure", "hypertension (arterial) (benign) (essential) (malignant) (primary) (systemic)"}
    assert fallbacks == {"I21.41X": "I21.4"} and set(synonyms["I21.41X"]) == set(synonyms["I21.4"])
    assert synonyms["E11.9"] == ["Type 2 diabetes mellitus without complications"]


def test_command_line_writes_json_report_and_cache(tmp_path, mrconso, capsys, monkeypatch):
    from test_mimic_iii import write_csv, NOTE_HEADER, TRAIN_A
    write_csv(tmp_path / "NOTEEVENTS.csv", NOTE_HEADER, [[1, 1, TRAIN_A, "", "", "", "Discharge summary", "", "", "", "x"]])
    for name in ("DIAGNOSES_ICD.csv", "PROCEDURES_ICD.csv"):
        write_csv(tmp_path / name, ["ROW_ID", "SUBJECT_ID", "HADM_ID", "SEQ_NUM", "ICD9_CODE"], [])
    header = ["ROW_ID", "ICD9_CODE", "SHORT_TITLE", "LONG_TITLE"]
    write_csv(tmp_path / "D_ICD_DIAGNOSES.csv", header, [[1, "4280", "CHF NOS", "Congestive heart failure, unspecified"]])
    write_csv(tmp_path / "D_ICD_PROCEDURES.csv", header, [])
    main(["--mimic-dir", str(tmp_path), "--setting", "50", "--mrconso", str(mrconso), "--output", str(tmp_path / "out.json")])
    synonyms = json.loads((tmp_path / "out.json").read_text())
    assert len(synonyms) == 50 and synonyms["428.0"][0] == "Congestive heart failure, unspecified"
    assert "congestive heart failure nos" in synonyms["428.0"]
    assert json.loads(capsys.readouterr().out)["codes"] == 50
    assert not list(tmp_path.glob("*.partial"))

    import datasets_scripts.synonyms.umls as umls
    reads = []
    original = umls.read_mrconso
    monkeypatch.setattr(umls, "read_mrconso", lambda path, *sources: reads.append(path) or original(path, *sources))
    arguments = ["--mimic-dir", str(tmp_path), "--setting", "50", "--mrconso", str(mrconso), "--output", str(tmp_path / "again.json")]
    main(arguments)
    assert reads == [] and json.loads((tmp_path / "again.json").read_text()) == synonyms  # from the cache
    mrconso.write_text(mrconso.read_text() + mrconso_line("C0001", "ENG", "MTH", "", "Cardiac failure congestive"))
    main(arguments)
    assert reads == [mrconso] and "cardiac failure congestive" in json.loads((tmp_path / "again.json").read_text())["428.0"]
    with pytest.raises(SystemExit, match="missing.RRF: no such file"):
        main(["--mimic-dir", str(tmp_path), "--mrconso", str(tmp_path / "missing.RRF"), "--output", str(tmp_path / "x.json")])
    (tmp_path / "umls" / "META").mkdir(parents=True)
    (tmp_path / "umls" / "META" / "MRCONSO.RRF").write_text(mrconso.read_text())
    (tmp_path / "terms").mkdir()
    for arguments, message in [
        (["--mrconso", str(tmp_path / "umls")], r"umls: a folder; give the MRCONSO.RRF file itself \(.*META/MRCONSO.RRF is there\)"),
        (["--mrconso", str(mrconso), "--output", str(tmp_path / "terms")], r"--output .*terms: a folder; give a file name"),
        (["--mrconso", str(mrconso), "--output", str(tmp_path / "out.json" / "x.json")], r"out.json is a file, not a folder"),
    ]:
        with pytest.raises(SystemExit, match=message):
            main(["--mimic-dir", str(tmp_path), "--output", str(tmp_path / "y.json"), *arguments])
    assert not list(tmp_path.rglob("*.partial")) and not (tmp_path / "y.json").exists()


def authors_match(codes, descriptions, umls_strings):
    """The authors' match.py, read literally: the synonym lists, before their (unseeded) shuffle."""
    icd_dict = {}
    for icd in codes:
        icd_dict[icd] = []
        if icd in descriptions:
            icd_dict[icd] = [descriptions[icd]] + umls_strings(icd)
        elif icd.endswith("."):
            if icd[0:-1] in descriptions:
                icd_dict[icd] = [descriptions[icd[0:-1]]] + umls_strings(icd[0:-1])
        else:
            icd_dict[icd] = umls_strings(icd)
        icd_dict[icd] = set(strip_accents(w).lower() for w in icd_dict[icd])
    return icd_dict


def authors_terms(code, description, synonyms, term_count):
    """The authors' process_label for one code, read literally."""
    tmp_desc = [description]
    if len(synonyms) >= term_count - 1:
        tmp_desc.extend(synonyms[0 : term_count - 1])
    else:
        tmp_desc.extend(synonyms)
        repeat_count = int(term_count / len(tmp_desc)) + 1
        tmp_desc = (tmp_desc * repeat_count)[0:term_count]
    return tmp_desc


def test_authors_umls_synonyms_as_their_match_and_first_term(mrconso):
    """A code with a description; one ending in "." whose undotted code has one; one ending in "." with none
    ("99.": no synonyms at all); one without a description (its UMLS strings, and the code string as first term);
    one with nothing anywhere (only the code string). A CUI's strings (their `icd2str`) are tested above."""
    codes = ["17.", "401.9", "428.0", "E849.7", "V58.61", "V58.62", "99.", "999.9"]
    mrconso.write_text(mrconso.read_text() + mrconso_line("C0006", "ENG", "ICD9CM", "99", "Other nonoperative procedures"))
    synonyms = authors_umls_synonyms(codes, DESCRIPTIONS, mrconso, seed=0)
    code_to_cui, cui_strings = read_mrconso(mrconso)
    expected = authors_match(codes, DESCRIPTIONS, lambda code: umls_strings(code, code_to_cui, cui_strings))
    for code in codes:
        assert synonyms[code][0] == DESCRIPTIONS.get(code, code)
        assert sorted(synonyms[code][1:]) == sorted(expected[code]), code
    assert synonyms["99."] == ["99."] and synonyms["999.9"] == ["999.9"]
    assert umls_synonyms(["99."], DESCRIPTIONS, mrconso)["99."] == ["other nonoperative procedures"]  # the package's
    assert synonyms["17."][0] == "17." and "other miscellaneous procedures" in synonyms["17."]
    assert synonyms["V58.62"][0] == "V58.62" and len(synonyms["V58.62"]) == 3
    assert synonyms == authors_umls_synonyms(codes, DESCRIPTIONS, mrconso, seed=0)


def test_caml_descriptions_are_the_fallback(tmp_path):
    path = tmp_path / "ICD9_descriptions"
    path.write_text("@\tICD9 Hierarchy Root\n780.4\tDizziness  and giddiness\n401.9\tEssential hypertension NOS\n"
                    "780.4\tA second line\n\n", encoding="utf-8")
    caml = read_caml_descriptions(path)
    assert caml["780.4"] == "Dizziness and giddiness"  # split on whitespace, as the authors read it; first line wins
    descriptions = caml | DESCRIPTIONS  # MIMIC-III's titles win
    assert descriptions["401.9"] == "Unspecified essential hypertension"
    path.write_bytes(b"780.4\tDizziness \xe9\n")
    with pytest.raises(InputError, match="not UTF-8"):
        read_caml_descriptions(path)
    with pytest.raises(InputError, match="caml-mimic"):
        read_caml_descriptions(tmp_path / "missing")


@pytest.mark.parametrize("num_synonyms", [1, 4, 8])
def test_authors_synonym_file_gives_their_terms(tmp_path, num_synonyms):
    """Their {code: [strings]} file: the long title (the code string where none), then the file's first M − 1
    in the file's order, filled cyclically, as their process_label; training keeps the order (term seed None)."""
    file_synonyms = {"428.0": ["chf", "heart failure congestive", "cardiac failure", "congestive heart failure",
                               "ccf", "heart failure nos", "failure heart congestive", "chronic chf", "ninth"],
                     "401.9": ["hypertension", "high blood pressure"], "V58.61": []}
    path = tmp_path / "icd_mimic3_random_sort.json"
    path.write_text(json.dumps(file_synonyms))
    codes = ["428.0", "401.9", "V58.61", "999.9"]
    terms = authors_file_terms(codes, DESCRIPTIONS, read_authors_synonyms(path))
    for code in codes:
        expected = authors_terms(code, DESCRIPTIONS.get(code, code), file_synonyms.get(code, []), num_synonyms)
        assert select_code_terms(terms[code], num_synonyms, seed=None) == expected
    path.write_text(json.dumps(["not", "a", "mapping"]))
    with pytest.raises(InputError, match=r"expected a JSON object code → \[strings\]"):
        read_authors_synonyms(path)


def test_authors_recipe_needs_its_sources(tmp_path, mrconso):
    for arguments, message in [
        (["--recipe", "authors", "--mrconso", str(mrconso)], "give --icd9-descriptions"),
        (["--authors-synonyms", str(tmp_path / "a.json")], "give it with --recipe authors and without --mrconso"),
        (["--recipe", "authors", "--icd9-descriptions", str(tmp_path / "d"), "--mrconso", str(mrconso),
          "--authors-synonyms", str(tmp_path / "a.json")], "without --mrconso"),
    ]:
        with pytest.raises(SystemExit, match=message):
            main(["--mimic-dir", str(tmp_path), "--output", str(tmp_path / "y.json"), *arguments])
    assert not (tmp_path / "y.json").exists()
