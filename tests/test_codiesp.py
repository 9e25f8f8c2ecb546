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
from msmn.evaluation.metrics import mean_average_precision

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
