"""CodiEsp: the shipped copy, a user's folder in the original layout, terms and MAP."""

import gzip
import json
import re
import shutil
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from datasets_scripts.codiesp import Codiesp, codiesp_terms
import datasets_scripts
from datasets_scripts.codiesp import background_texts, read_shipped_split, shipped_folder, word_sequences
from datasets_scripts import InputError
from modeling_msmn.metrics import mean_average_precision

ORIGINAL = Path(__file__).resolve().parents[2] / "shared" / "data" / "codiesp"
needs_original = pytest.mark.skipif(not ORIGINAL.is_dir(), reason="the original CodiEsp copy (../shared/data/codiesp) is absent")


def tsv_counts(split, letter):
    """Codes per document, counted straight from the organisers' TSV file."""
    counts = Counter()
    for line in (ORIGINAL / split / f"{split}{letter}.tsv").read_text(encoding="utf-8").splitlines():
        if line.strip():
            counts[line.split("\t")[0]] += 1
    return counts


@needs_original
@pytest.mark.parametrize("language", ["en", "es"])
@pytest.mark.parametrize("config_name,letter", [("codiesp-d", "D"), ("codiesp-p", "P")])
def test_shipped_copy_has_every_document_and_code(tmp_path, config_name, letter, language):
    data = datasets_scripts.load("codiesp", config=config_name, language=language, cache_dir=str(tmp_path))
    dataset = data.splits
    for split, name in (("train", "train"), ("dev", "validation"), ("test", "test")):
        rows = dataset[name]
        assert len(rows) == {"train": 500, "dev": 250, "test": 250}[split]
        expected = tsv_counts(split, letter)
        assert {row["id"]: len(row["gold_codes"]) for row in rows if row["gold_codes"]} == dict(expected)
        label_set = set(data.codes)
        assert [[code for code in row["gold_codes"] if code in label_set] for row in rows] == rows["labels"]
        if split == "train":  # the label set is the train split's codes, and nothing from dev or test
            assert sum(len(row["labels"]) for row in rows) == sum(expected.values())
            assert label_set == {code for row in rows for code in row["gold_codes"]}
        else:
            assert sum(len(row["labels"]) for row in rows) < sum(expected.values())
        folder = "text_files_en" if language == "en" else "text_files"
        first = rows[0]
        assert first["text"] == (ORIGINAL / split / folder / f"{first['id']}.txt").read_text(encoding="utf-8")
    if language == "es":
        evidence = dataset["train"][0]["evidence"][0]
        start, end = evidence["spans"][0]
        assert dataset["train"][0]["text"][start:end] in evidence["text"]


def test_top50_label_set(tmp_path):
    data = datasets_scripts.load("codiesp", config="codiesp-d-50", cache_dir=str(tmp_path))
    dataset, codes = data.splits, data.codes
    counts = Counter(code for record in read_shipped_split("train") for code in record["diagnosis_codes"])
    assert len(codes) == 50 and min(counts[code] for code in codes) >= 15
    assert codes == sorted(codes) and {"R52", "R69", "R50.9", "I10"} <= set(codes)
    assert sum(1 for row in dataset["test"] if row["labels"]) == 227
    assert all(code == code.upper() for code in codes)


def test_extra_codes_join_the_label_set(tmp_path):
    data = datasets_scripts.load("codiesp", config="codiesp-d", extra_codes=["z99.89"], cache_dir=str(tmp_path))
    assert "Z99.89" in data.codes and data.code_terms["Z99.89"][0] == "Dependence on other enabling machines and devices"


@pytest.fixture
def user_folder(tmp_path):
    """A small CodiEsp folder in the organisers' layout, from real shipped documents."""
    folder = tmp_path / "codiesp"
    for split in ("train", "dev", "test"):
        records = read_shipped_split(split)[:2]
        for sub, field in (("text_files", "text_es"), ("text_files_en", "text_en")):
            (folder / split / sub).mkdir(parents=True)
            for record in records:
                (folder / split / sub / f"{record['id']}.txt").write_text(record[field], encoding="utf-8")
        diagnoses = [f"{r['id']}\t{c.lower()}" for r in records for c in r["diagnosis_codes"]]
        procedures = [f"{r['id']}\t{c.lower()}" for r in records for c in r["procedure_codes"]]
        evidence = [
            f"{r['id']}\t{'DIAGNOSTICO' if e['type'] == 'diagnosis' else 'PROCEDIMIENTO'}\t{e['code'].lower()}\t{e['text']}\t"
            + ";".join(f"{s} {t}" for s, t in e["spans"])
            for r in records for e in r["evidence"]
        ]
        if split == "train":
            diagnoses[0] = diagnoses[0].upper()  # mixed case
            diagnoses.insert(1, f"{records[0]['id']}\tzz9.99")  # a code no classification knows
            diagnoses.insert(2, "")  # an empty line
        for letter, lines in (("D", diagnoses), ("P", procedures), ("X", evidence)):
            (folder / split / f"{split}{letter}.tsv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return folder


def test_user_folder_is_read_like_the_shipped_copy(user_folder, tmp_path):
    data = datasets_scripts.load("codiesp", config="codiesp-d", language="es", data_dir=str(user_folder),
                                 cache_dir=str(tmp_path / "cache"))
    dataset = data.splits
    shipped = {record["id"]: record for split in ("train", "dev", "test") for record in read_shipped_split(split)}
    names = data.codes
    assert "ZZ9.99" in names
    for split in ("train", "validation", "test"):
        for row in dataset[split]:
            record = shipped[row["id"]]
            expected_codes = list(record["diagnosis_codes"])
            if row["id"] == dataset["train"][0]["id"]:
                expected_codes.insert(1, "ZZ9.99")
            assert row["text"] == record["text_es"]
            assert row["gold_codes"] == expected_codes
            assert row["labels"] == [code for code in expected_codes if code in names]
            if split == "train":  # the label set: the train split's codes
                assert row["labels"] == expected_codes
            assert row["evidence"] == [
                {"code": e["code"], "text": e["text"], "spans": e["spans"]} for e in record["evidence"] if e["type"] == "diagnosis"
            ]


def test_bad_user_folders(user_folder, tmp_path):
    def build():
        return datasets_scripts.load("codiesp", config="codiesp-d", data_dir=str(user_folder),
                                     cache_dir=str(tmp_path / "cache")).splits

    dev_d = user_folder / "dev" / "devD.tsv"
    original = dev_d.read_text(encoding="utf-8")
    dev_d.write_text(original + "S9999-missing-1\tr52\n", encoding="utf-8")
    line = len(original.splitlines()) + 1
    with pytest.raises(InputError, match=rf"devD.tsv, line {line}: codes for document 'S9999-missing-1', which has no text"):
        build()
    dev_d.write_text(original.replace("\t", "\t\t", 1), encoding="utf-8")
    with pytest.raises(InputError, match="devD.tsv, line 1: 3 tab-separated columns, expected 2"):
        build()
    dev_d.write_text(original, encoding="utf-8")

    uncoded = user_folder / "test" / "text_files" / "S0000-uncoded-1.txt"
    uncoded.write_text("Texto sin códigos.", encoding="utf-8")
    shutil.copy(uncoded, user_folder / "test" / "text_files_en" / uncoded.name)
    with pytest.raises(InputError, match="S0000-uncoded-1.txt: this text has no code in testD.tsv or testP.tsv"):
        build()
    uncoded.unlink()
    (user_folder / "test" / "text_files_en" / uncoded.name).unlink()
    assert len(build()["test"]) == 2


def test_spanish_terms_come_from_train_evidence_only():
    terms, summary = codiesp_terms(Codiesp(config_name="codiesp-d-50", language="es"))
    train_evidence = Counter(
        e["text"].strip() for r in read_shipped_split("train") for e in r["evidence"] if e["code"] == "R50.9"
    )
    assert terms["R50.9"][: len(train_evidence)] == [text for text, _ in train_evidence.most_common()]
    dev_only = {e["text"].strip() for r in read_shipped_split("dev") for e in r["evidence"] if e["code"] == "R50.9"} - set(train_evidence)
    assert dev_only and not dev_only & set(terms["R50.9"])
    assert terms["R50.9"][len(train_evidence)] == "Fever, unspecified"  # then the English terms
    assert summary["codes"] == 50 and summary["codes_without_terms"] == []


def test_english_terms_with_parent_fill_and_retired_codes():
    terms, summary = codiesp_terms(Codiesp(config_name="codiesp-d"), num_synonyms=4)
    assert terms["R50.9"][0] == "Fever, unspecified" and "pyrexia nos" in terms["R50.9"]
    assert terms["I10"][0] == "Essential (primary) hypertension" and "hypertensive diseases" in terms["I10"]
    assert summary["codes_from_parent_entry"] > 0 and summary["codes_without_terms"] == []


def test_mean_average_precision_by_hand():
    scores = np.array([[0.9, 0.1, 0.5, 0.3], [0.2, 0.8, 0.7, 0.1], [0.1, 0.2, 0.3, 0.4]])
    # doc 0: gold {0, 3} at ranks 1 and 3 → (1/1 + 2/3) / 2
    # doc 1: gold {2} at rank 2, plus one gold code outside the label set → (1/2) / 2
    # doc 2: no gold code → left out
    value = mean_average_precision(scores, [[0, 3], [2], []], [2, 2, 0])
    assert value == pytest.approx(((1 + 2 / 3) / 2 + 0.5 / 2) / 2)
    assert mean_average_precision(scores[:1], [[0, 3]]) == pytest.approx((1 + 2 / 3) / 2)
    with pytest.raises(ValueError, match="one gold list"):
        mean_average_precision(scores, [[0]])
    for outside in (-1, 4):  # -1 would otherwise rank the last column, 4 fail with numpy's IndexError
        with pytest.raises(ValueError, match=r"a gold index is outside the label set's 0\.\.3"):
            mean_average_precision(scores[:1], [[0, outside]])


def test_mean_average_precision_ranks_as_a_stable_sort_with_nan_last():
    # ranks counted without sorting must equal the positions in a stable argsort of -scores, where
    # ties go to the lower index and NaN (a diverged model's scores) comes last
    rng = np.random.default_rng(0)
    scores = rng.integers(0, 4, size=(300, 12)).astype(float)  # many ties
    scores[rng.random(scores.shape) < 0.15] = np.nan
    scores[rng.random(scores.shape) < 0.05] = -np.inf
    gold = [sorted(set(rng.integers(0, 12, size=rng.integers(1, 5)).tolist())) for _ in scores]
    for document_scores, document_gold in zip(scores, gold):
        ranking = np.argsort(-document_scores, kind="stable")
        ranks = np.sort(np.flatnonzero(np.isin(ranking, document_gold)) + 1)
        expected = (np.arange(1, len(ranks) + 1) / ranks).sum() / len(document_gold)
        assert mean_average_precision(document_scores[None], [document_gold]) == pytest.approx(expected, abs=1e-15)
    assert mean_average_precision(np.array([[np.nan, 1.0, np.nan]]), [[2]]) == pytest.approx(1 / 3)


def test_term_matching_scores_each_code_by_its_closest_term():
    # benchmarks/codiesp_all_codes.py's matcher without training: codes with 1 to 3 terms side by side,
    # so a term scored under its neighbour's code would show; 120 notes, so more than one block of 50
    from codiesp_all_codes import term_match_scores

    codes = ["A", "B", "C", "D"]
    code_terms = {"A": ["femur fracture"], "B": ["eczema of the hand", "appendicitis", "acute appendicitis"],
                  "C": ["renal failure"], "D": ["otitis media", "ear infection"]}
    notes = ["Surgery for acute appendicitis was uneventful.", "Chronic renal failure on dialysis.",
             "No abnormal finding."]
    reference = ["The patient was discharged home.", "Blood pressure was normal."]
    scores = term_match_scores(codes, code_terms, {"dev": notes * 40}, reference, (1, 2))["dev"]
    assert scores.shape == (120, 4)
    np.testing.assert_array_equal(scores, np.tile(scores[:3], (40, 1)))
    assert scores[0].argmax() == 1 and scores[0, 1] > 0 and scores[0, [0, 2, 3]].tolist() == [0, 0, 0]
    assert scores[1].argmax() == 2 and scores[1, [0, 1, 3]].tolist() == [0, 0, 0]
    assert scores[2].tolist() == [0, 0, 0, 0]
    # the closest term counts, not the code's terms together: B's other terms (one matching less well,
    # one with words note 0 lacks; the same IDF for its words) leave its score as if "acute
    # appendicitis" were B's one term
    three_terms, one_term = (term_match_scores(codes, {**code_terms, "B": terms}, {"dev": notes[:1]}, reference, (1, 1))["dev"]
                             for terms in (code_terms["B"], ["acute appendicitis"]))
    assert three_terms[0, 1] > 0 and three_terms[0, 1] == pytest.approx(one_term[0, 1], rel=1e-6)


def test_operating_point_is_the_best_dev_map_among_weights_over_the_unseen_floor():
    from codiesp_all_codes import operating_point

    # (λ, β) -> dev MAP and dev MAP over codes absent from train, as the benchmark's grid gives them
    dev_map = {(0.0, 1.0): 0.30, (48.0, 2.0): 0.35, (96.0, 2.0): 0.33, (64.0, 1.0): 0.32, (96.0, 1.0): 0.33,
               (128.0, 0.0): 0.16}
    dev_unseen_map = {(0.0, 1.0): 0.003, (48.0, 2.0): 0.015, (96.0, 2.0): 0.048, (64.0, 1.0): 0.042,
                      (96.0, 1.0): 0.061, (128.0, 0.0): 0.079}
    assert operating_point(dev_map, dev_unseen_map, 0.03) == (96.0, 1.0)  # tie on dev MAP: the smaller β
    assert operating_point(dev_map, dev_unseen_map, 0.061) == (96.0, 1.0)  # the floor itself counts as reached
    assert operating_point(dev_map, dev_unseen_map, 0.07) == (128.0, 0.0)  # the only one over the floor
    assert operating_point(dev_map, dev_unseen_map, 0.0) == (48.0, 2.0)  # no floor: the best dev MAP
    assert operating_point(dev_map, dev_unseen_map, 0.08) is None


def test_pareto_frontier_keeps_the_weights_no_others_beat_on_both_dev_maps():
    from codiesp_all_codes import pareto_frontier

    # (λ, β) -> dev MAP and dev MAP over codes absent from train; (160, 0) equals (128, 0) on both
    dev_map = {(0.0, 1.0): 0.30, (48.0, 2.0): 0.35, (96.0, 2.0): 0.33, (64.0, 1.0): 0.32, (96.0, 1.0): 0.33,
               (128.0, 0.0): 0.16, (160.0, 0.0): 0.16}
    dev_unseen_map = {(0.0, 1.0): 0.003, (48.0, 2.0): 0.015, (96.0, 2.0): 0.048, (64.0, 1.0): 0.042,
                      (96.0, 1.0): 0.061, (128.0, 0.0): 0.079, (160.0, 0.0): 0.079}
    assert pareto_frontier(dev_map, dev_unseen_map) == [(48.0, 2.0), (96.0, 1.0), (128.0, 0.0)]


def test_unseen_map_filtered_and_its_bootstrap_interval():
    from codiesp_all_codes import bootstrap_interval, ranking_metrics

    # two notes over codes A–E; train has A and B. Note 1: gold A (seen) at rank 1, C (unseen) at rank 3
    # behind D; note 2: gold E (unseen) at rank 2 behind B (not gold)
    scores = np.array([[0.9, 0.1, 0.5, 0.7, 0.0], [0.0, 0.8, 0.1, 0.2, 0.6]], dtype=np.float32)
    records = [{"diagnosis_codes": ["A", "C"]}, {"diagnosis_codes": ["E"]}]
    metrics = ranking_metrics(scores, records, ["A", "B", "C", "D", "E"], {"A", "B"})
    assert metrics["map_unseen_codes"] == pytest.approx((1 / 3 + 1 / 2) / 2)
    assert metrics["map_unseen_codes_filtered"] == pytest.approx((1 / 2 + 1 / 2) / 2)  # A left out: C at rank 2
    # resampling two notes draws both from one note a quarter of the time each: the interval spans them
    assert metrics["map_unseen_codes_95_interval"] == (0.3333, 0.5)
    assert bootstrap_interval(np.full(40, 0.25)) == (0.25, 0.25)


def test_rank_candidates_chooses_both_operating_points_on_dev(tokenizer, monkeypatch):
    # the benchmark's whole ranking on a small untrained model: conftest's 4 codes are the train codes,
    # 10 more are absent from train
    import codiesp_all_codes
    from codiesp_all_codes import rank_candidates, ranking_metrics, score_notes, term_match_scores

    from conftest import CODE_TERMS, make_model

    # each note names an unseen gold code by one word that a non-gold unseen code's term shares (so
    # that their order, and the unseen MAP, varies with MSMN's logits), and paraphrases a train code in
    # words of another unseen code's term (so that term matching ranks that one above it and the prior
    # lifts it back)
    unseen_terms = {"K35.80": ["acute appendicitis"], "N18.6": ["end stage renal disease"], "H66.90": ["otitis media"],
                    "K35.89": ["other appendicitis"], "N28.9": ["renal disorder"], "H65.90": ["otitis, serous"],
                    "R73.9": ["high blood sugar"], "R07.9": ["chest pain, unspecified"], "R05.9": ["cough, unspecified"],
                    "R68.0": ["low body temperature"]}
    mentions = {"K35.80": "appendicitis", "N18.6": "renal", "H66.90": "otitis"}
    paraphrases = {"E11.65": "high sugar levels", "I21.4": "chest pain, troponin raised",
                   "J18.9": "lung infiltrate with cough", "R50.9": "body temperature 39C"}
    codes, code_terms = sorted(CODE_TERMS) + sorted(unseen_terms), {**CODE_TERMS, **unseen_terms}
    notes = [(f"Admitted for {mention}; {paraphrase}.", [unseen_code, seen_code])
             for unseen_code, mention in mentions.items() for seen_code, paraphrase in paraphrases.items()]
    records = [{"text_en": text, "diagnosis_codes": gold} for text, gold in notes]
    splits = {"dev": records[::2], "test": records[1::2]}
    train_counts = {"E11.65": 3, "I21.4": 2, "J18.9": 1, "R50.9": 1}
    reference = ["The patient was discharged home.", "Blood pressure was normal.", "No allergies known."]
    model = make_model(tokenizer).eval()
    results = rank_candidates(model, tokenizer, codes, code_terms, splits, train_counts, reference, batch_size=4)
    # each point's test metrics, from the parts recomputed here: MSMN's logits, the term matching with
    # the n-grams chosen on dev, and the prior
    test_texts = [record["text_en"] for record in splits["test"]]
    (ngrams,) = [int(key[-1]) for key in results if key.startswith("term_matching_ngrams_1_to_")]
    test_match = term_match_scores(codes, code_terms, {"test": test_texts}, reference, (1, ngrams))["test"]
    prior = np.log1p(np.array([train_counts.get(code, 0) for code in codes], dtype=np.float32))
    test_msmn = score_notes(model, tokenizer, test_texts, batch_size=4)

    frontier = results["dev_frontier_of_msmn_plus_term_matching_with_prior"]
    assert [entry["dev_map"] for entry in frontier] == sorted((entry["dev_map"] for entry in frontier), reverse=True)
    for entry in (results["operating_point"], results["operating_point_with_margin"], *frontier):
        lower, upper = entry["dev_map_unseen_codes_95_interval"]
        assert lower <= entry["dev_map_unseen_codes"] <= upper
        test_scores = test_msmn + entry["term_match_weight"] * test_match + entry["prior_weight"] * prior
        assert entry["test"] == ranking_metrics(test_scores, splits["test"], codes, set(train_counts))

    # a floor that a trade-off point reaches on dev's unseen MAP but not on its interval's lower end
    # (just under its rounded figure): the operating point may take that point, the one with the
    # margin may not
    (floor,) = [entry["dev_map_unseen_codes"] - 1e-4 for entry in frontier
                if entry["dev_map_unseen_codes_95_interval"][0] < entry["dev_map_unseen_codes"] - 1e-4][:1]
    monkeypatch.setattr(codiesp_all_codes, "UNSEEN_MAP_FLOOR", floor)
    results = rank_candidates(model, tokenizer, codes, code_terms, splits, train_counts, reference, batch_size=4)
    point, with_margin = results["operating_point"], results["operating_point_with_margin"]
    assert point["dev_map_unseen_codes"] >= floor > point["dev_map_unseen_codes_95_interval"][0]
    assert with_margin["dev_map_unseen_codes_95_interval"][0] >= floor
    assert with_margin["dev_map"] < point["dev_map"]  # the margin costs dev MAP


def test_background_texts_leave_out_those_that_overlap_dev_or_test():
    with gzip.open(shipped_folder() / "background.jsonl.gz", "rt", encoding="utf-8") as lines:
        background = {record["id"]: record["text_en"] for record in map(json.loads, lines)}
    kept = background_texts()
    assert len(kept) == len(background) - 15  # the rule drops 15 (datasets_scripts/data/codiesp/README.md)
    # a near-copy of test S0004-06142006000600014-1, and the largest partial overlaps (test, dev)
    for dropped in ("S0004-06142006000200010-1", "S1130-05582011000200007-1", "S1887-85712013000200013-2"):
        assert background[dropped] not in kept
    test_text = next(r["text_en"] for r in read_shipped_split("test") if r["id"] == "S0004-06142006000600014-1")
    sequences = word_sequences(test_text)
    assert len(sequences & word_sequences(background["S0004-06142006000200010-1"])) > 0.8 * len(sequences)


def test_registry_rejects_unknown_datasets_and_options():
    with pytest.raises(InputError, match=r"--dataset 'mimic' is unknown; choose one of " + re.escape(str(sorted(datasets_scripts.DATASETS)))):
        datasets_scripts.load("mimic")
    with pytest.raises(InputError, match="--dataset files takes no option language; its options are train_file"):
        datasets_scripts.load("files", language="en")
