"""MDACE: the shipped annotations joined to a MIMIC-shaped NOTEEVENTS fixture, and MDACE's four
evidence measures on hand-made cases."""

import csv
import gzip
import logging

import pytest

import datasets_scripts
from datasets_scripts import InputError
from datasets_scripts.mdace import note_documents, note_spans, read_charts, spans_from_mdace, spans_to_mdace
from datasets_scripts.mdace import split_of_admissions
from msmn.evaluation.metrics import evidence_keys, evidence_scores, trim_span


def note_text(note_id: int, length: int) -> str:
    """Invented text, different at every position (so that a wrong offset shows)."""
    return "".join(chr(97 + (note_id * 31 + i * 7) % 26) if i % 9 else " " for i in range(length))


def write_notes(folder, shorten=None, drop=None):
    """A NOTEEVENTS.csv.gz with every note MDACE annotates (invented text, long enough for its spans)."""
    rows = []
    for chart in read_charts("icd9"):
        for note in chart["notes"]:
            if note["note_id"] == drop:
                continue
            length = max([span["end"] for span in note["annotations"]] + [1]) + 20
            length = length - 25 if note["note_id"] == shorten else length
            rows.append((note["note_id"], 1, chart["hadm_id"], note["category"], note_text(note["note_id"], length)))
    folder.mkdir(exist_ok=True)
    with gzip.open(folder / "NOTEEVENTS.csv.gz", "wt", newline="", encoding="utf-8") as file:
        writer = csv.writer(file)
        writer.writerow(["ROW_ID", "SUBJECT_ID", "HADM_ID", "CATEGORY", "TEXT"])
        writer.writerows(rows)
    return rows


def test_annotations_join_the_notes(tmp_path):
    rows = write_notes(tmp_path / "mimic")
    data = datasets_scripts.load("mdace", config="mdace-icd9", data_dir=str(tmp_path / "mimic"), cache_dir=str(tmp_path / "c"))
    assert {name: len(split) for name, split in data.splits.items()} == {"train": 181, "validation": 60, "test": 61}
    texts = {row[0]: row[4] for row in rows}
    charts = {chart["hadm_id"]: chart for chart in read_charts("icd9")}
    example = data.splits["test"][0]
    notes = [note for note in charts[example["hadm_id"]]["notes"] if note["category"] == "Discharge summary"]
    assert example["text"] == "\t".join(texts[note["note_id"]] for note in notes)
    gold = [(span["code"], texts[note["note_id"]][span["begin"]:span["end"]]) for note in notes for span in note["annotations"]]
    assert [(span["code"], example["text"][span["begin"]:span["end"]]) for span in example["evidence"]] == gold
    assert example["labels"] == list(dict.fromkeys(code for code, _ in gold))
    assert set(data.codes) == {code for split in data.splits.values() for labels in split["labels"] for code in labels}
    assert data.code_terms["401.9"] == ["Unspecified essential hypertension"]
    assert split_of_admissions()[example["hadm_id"]] == "test"


def test_bad_notes_are_named_never_shown(tmp_path):
    chart = read_charts("icd9")[0]
    note_id = chart["notes"][0]["note_id"]
    write_notes(tmp_path / "short", shorten=note_id)
    with pytest.raises(InputError, match=rf"span \[\d+, \d+\) of note ROW_ID {note_id} \(admission {chart['hadm_id']}\) "
                                         "lies outside that note's") as error:
        datasets_scripts.load("mdace", data_dir=str(tmp_path / "short"), cache_dir=str(tmp_path / "c"))
    assert note_text(note_id, 30)[:20] not in str(error.value)
    write_notes(tmp_path / "missing", drop=note_id)
    with pytest.raises(InputError, match=rf"1 notes that MDACE annotates are missing \(ROW_ID \[{note_id}\]\)"):
        datasets_scripts.load("mdace", data_dir=str(tmp_path / "missing"), cache_dir=str(tmp_path / "c"))


def test_span_trimming_and_tokens():
    text = "A), HTN (B 12 mg; 250 pills/day\n"
    assert trim_span(text, 1, 9) == (4, 7)  # ")", ",", " " off the left; " ", "(" off the right
    assert trim_span(text, 8, 10) == (8, 10)  # "(" stays on the left
    keys = evidence_keys(text, [(1, 9, "401.9"), (11, 32, "E11")])
    assert keys["exact_span"] == {(4, 7, "401.9"), (11, 31, "E11")}
    assert keys["span_text"] == {("htn", "401.9"), ("12 mg; 250 pills/day", "E11")}
    # all-digit tokens above 10 are dropped: "12" and "250"
    assert keys["token_text"] == {("htn", "401.9"), ("mg", "E11"), ("pills", "E11"), ("day", "E11")}
    assert keys["exact_token"] == {(4, "401.9"), (14, "E11"), (22, "E11"), (28, "E11")}
    assert evidence_keys("a 7 b", [(0, 5, "X")])["token_text"] == {("a", "X"), ("7", "X"), ("b", "X")}


def test_evidence_scores_by_hand():
    text = "chest pain and high blood pressure"
    gold = [(0, 10, "R07.9"), (15, 34, "I10")]
    predicted = [(0, 10, "R07.9"), (20, 34, "I10"), (15, 19, "R07.9")]
    scores = evidence_scores([(text, predicted, gold), (text, [], [(0, 5, "R07.9")])])
    # exact spans: 1 of 3 predicted right; gold 2 + 1 = 3
    assert scores["exact_span_precision"] == pytest.approx(1 / 3) and scores["exact_span_recall"] == pytest.approx(1 / 3)
    # exact tokens: predicted {0,6 R07.9; 20,26 I10; 15 R07.9}, gold {0,6 R07.9; 15,20,26 I10} + {0 R07.9}
    assert scores["exact_token_precision"] == pytest.approx(4 / 5) and scores["exact_token_recall"] == pytest.approx(4 / 6)
    f1 = 2 * (4 / 5) * (4 / 6) / (4 / 5 + 4 / 6)
    assert scores["exact_token_f1"] == pytest.approx(f1, abs=1e-5)
    # token text: chest, pain (R07.9), blood, pressure (I10) right; high under R07.9 wrong; gold 5 + 1 (per document)
    assert scores["token_text_recall"] == pytest.approx(4 / 6)
    assert evidence_scores([(text, [], gold)])["exact_span_f1"] == 0.0


COUNTS = ("num_predicted", "num_actual", "true_positives", "false_positives", "false_negatives")


def test_a_span_that_trimming_empties_counts_as_mdace_counts_it():
    text = "HTN , CHF"
    scores = evidence_scores([(text, [(3, 6, "I10"), (0, 3, "I10")], [(0, 3, "I10")])])
    # " , " trims to the empty span (6, 6): one more predicted exact span and span text, no token
    assert [scores[f"exact_span_{count}"] for count in COUNTS] == [2, 1, 1, 1, 0]
    assert [scores[f"span_text_{count}"] for count in COUNTS] == [2, 1, 1, 1, 0]
    assert [scores[f"exact_token_{count}"] for count in COUNTS] == [1, 1, 1, 0, 0]
    assert scores["exact_span_precision"] == pytest.approx(0.5) and scores["exact_token_f1"] == pytest.approx(1, abs=1e-5)


TWO_NOTES = {  # an admission of two notes joined with a tab: "chest pain\tchest pain, HTN"
    "hadm_id": 7, "text": "chest pain\tchest pain, HTN",
    "notes": [{"note_id": 1, "category": "Discharge summary", "description": "Report", "begin": 0, "end": 10},
              {"note_id": 2, "category": "Discharge summary", "description": "Addendum", "begin": 11, "end": 26}],
    "evidence": [{"code": "R07.9", "begin": 0, "end": 10}],  # gold evidence in the first note only
}


def test_evidence_is_scored_note_by_note_as_mdace_does():
    predicted = [(0, 10, "R07.9"), (11, 21, "R07.9"), (6, 16, "R07.9")]
    documents = note_documents(TWO_NOTES, predicted)
    # only the note with gold evidence is scored; the span across the tab keeps its part in the first note
    assert documents == [("chest pain", [(0, 10, "R07.9"), (6, 10, "R07.9")], [(0, 10, "R07.9")])]
    assert note_spans(TWO_NOTES, predicted)[2] == [(0, 10, "R07.9"), (0, 5, "R07.9")]
    scores = evidence_scores(documents)
    assert [scores[f"span_text_{count}"] for count in COUNTS] == [2, 1, 1, 1, 0]


def test_mdace_form_predictions_to_spans_and_back(tmp_path, caplog):
    write_notes(tmp_path / "mimic")
    data = datasets_scripts.load("mdace", data_dir=str(tmp_path / "mimic"), cache_dir=str(tmp_path / "c"))
    example = max(data.splits["test"], key=lambda example: len(example["notes"]))  # two discharge notes
    assert len(example["notes"]) == 2
    assert [example["text"][note["begin"]:note["end"]] for note in example["notes"]] == example["text"].split("\t")
    gold = [(span["begin"], span["end"], span["code"]) for span in example["evidence"]]
    admission = spans_to_mdace(example, gold)
    charts = {chart["hadm_id"]: chart for chart in read_charts("icd9")}
    released = [(note["note_id"], [(span["begin"], span["end"], span["code"], span["code_system"])
                                   for span in note["annotations"]])
                for note in charts[example["hadm_id"]]["notes"] if note["category"] == "Discharge summary"]
    assert [(note["note_id"], [(a["begin"], a["end"], a["code"], a["code_system"]) for a in note["annotations"]])
            for note in admission["notes"]] == released  # MDACE's own per-note form, offsets and code systems
    assert spans_from_mdace(example, admission) == gold
    other = {"note_id": -1, "annotations": [{"begin": 0, "end": 3, "code": "401.9"}]}
    with caplog.at_level(logging.WARNING):
        assert spans_from_mdace(example, {**admission, "notes": admission["notes"] + [other]}) == gold
    assert "1 predicted spans lie in notes outside this example's categories" in caplog.text
    length = example["notes"][0]["end"] - example["notes"][0]["begin"]
    outside = {"notes": [{"note_id": example["notes"][0]["note_id"],
                          "annotations": [{"begin": length - 2, "end": length + 5, "code": "401.9"}]}]}
    with pytest.raises(InputError, match=f"the predicted span \\[{length - 2}, {length + 5}\\) lies outside"):
        spans_from_mdace(example, outside)


def test_evidence_of_a_model_scored_on_mdace(tmp_path):
    # evidence_scores_of (what benchmarks/evidence.py --mdace reports), end to end, with a small random
    # model that knows three MDACE codes
    import torch

    from msmn.evaluation.evidence import evidence_scores_of
    from modeling_msmn import ICDCodingPipeline, MSMNConfig, MSMNForSequenceClassification, build_code_term_ids
    from modeling_msmn import build_tokenizer, build_vocabulary

    write_notes(tmp_path / "mimic")
    terms = {"401.9": ["Unspecified essential hypertension"], "428.0": ["Congestive heart failure, unspecified"],
             "250.00": ["Diabetes mellitus without mention of complication"]}
    tokenizer = build_tokenizer(build_vocabulary(t for values in terms.values() for t in values))
    codes = sorted(terms)
    term_ids, selected = build_code_term_ids(tokenizer, codes, terms, 2, term_length=8)
    config = MSMNConfig(vocab_size=len(tokenizer), id2label=dict(enumerate(codes)), embedding_dim=6, rnn_dim=8,
                        hidden_size=8, num_synonyms=2, term_length=8, code_terms=selected)
    torch.manual_seed(0)
    coder = ICDCodingPipeline(model=MSMNForSequenceClassification(config, code_term_ids=term_ids).eval(),
                              tokenizer=tokenizer, device="cpu")
    data = datasets_scripts.load("mdace", data_dir=str(tmp_path / "mimic"))
    scores = evidence_scores_of(coder, data.splits["test"], num_evidence=2)
    measures = ("exact_span", "span_text", "exact_token", "token_text")
    assert set(scores) == {f"{m}_{p}" for m in measures for p in ("precision", "recall", "f1", *COUNTS)}
    assert all(0 <= scores[f"{m}_{p}"] <= 1 for m in measures for p in ("precision", "recall", "f1"))
    # the gold evidence of codes the model does not know is missed: recall stays within the known codes' share
    gold = [evidence_keys(e["text"], [(s["begin"], s["end"], s["code"]) for s in e["evidence"]])["exact_token"]
            for e in data.splits["test"]]
    known_share = sum(len({key for key in keys if key[1] in terms}) for keys in gold) / sum(map(len, gold))
    assert 0 < known_share < 0.5 and scores["exact_token_recall"] <= known_share
