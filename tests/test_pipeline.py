"""The icd-coding pipeline: planted codes and their evidence, exact offsets, edge cases, remote loading."""

import json
import logging
import sys

import numpy as np
import pytest
import torch
from conftest import CODES, NOTES, make_model
from synthetic_corpus import ROOT, SIGNALS, evidence_hits, run, synthetic_notes
from transformers import AutoModelForSequenceClassification, AutoTokenizer, BertConfig, BertForSequenceClassification, pipeline

from modeling_msmn import ICDCodingPipeline, split_words
from modeling_msmn.pipeline_msmn import evidence_spans

UNUSUAL_NOTE = (
    "  İstanbul\u00a0hastası:\tACUTE\u2028myocardial  infarction — ΣΊΣΥΦΟΣ naïve ﬁbrosis 🫀 fever\r\n"
    "e\u0301dema 39.5°C 肺炎 pneumonia\u3000type 2 diabetes"
)


@pytest.fixture(scope="module")
def coder(synthetic_checkpoint):
    folder, _ = synthetic_checkpoint
    return pipeline("icd-coding", model=str(folder), trust_remote_code=True, device="cpu")


def split_numbers(predictions):
    """(the predictions with each float replaced by a marker, the floats in order)."""
    numbers = []

    def strip(value):
        if isinstance(value, float):
            numbers.append(value)
            return "<float>"
        if isinstance(value, dict):
            return {key: strip(item) for key, item in value.items()}
        if isinstance(value, list):
            return [strip(item) for item in value]
        return value

    return strip(predictions), numbers


def assert_same_predictions(actual, expected):
    """Same codes, synonyms, spans and offsets; probabilities and weights within 1e-5 (batch padding,
    thread count and the CPU's kernels change their last bits, so neither equality nor rounding holds)."""
    actual_structure, actual_numbers = split_numbers(actual)
    expected_structure, expected_numbers = split_numbers(expected)
    assert actual_structure == expected_structure
    np.testing.assert_allclose(actual_numbers, expected_numbers, rtol=0, atol=1e-5)


def test_evidence_spans_grow_around_peaks():
    weights = np.array([0.01, 0.30, 0.20, 0.02, 0.40, 0.05, 0.02])
    assert evidence_spans(weights, num_spans=3, max_span_tokens=5) == [(4, 4), (1, 2), (5, 5)]
    assert evidence_spans(weights, num_spans=2, max_span_tokens=1) == [(4, 4), (1, 1)]
    assert evidence_spans(np.array([]), num_spans=3, max_span_tokens=5) == []


def test_finds_planted_codes_and_their_evidence(coder):
    notes = synthetic_notes(60, seed=3)  # the checkpoint's test split
    outputs = coder([note["text"] for note in notes], batch_size=16)
    found = 0
    for note, predictions in zip(notes, outputs):
        codes = [prediction["code"] for prediction in predictions]
        assert [p["probability"] for p in predictions] == sorted((p["probability"] for p in predictions), reverse=True)
        found += set(note["labels"]) <= set(codes)
        for prediction in predictions:
            assert all(note["text"][e["start"] : e["end"]] == e["text"] for e in prediction["evidence"])
            terms, _ = SIGNALS[prediction["code"]]
            assert prediction["description"] == terms[0] and prediction["synonym"] in terms
    # Margins measured over 5 training seeds x 1 and 2 threads (each trains a different model, far more
    # apart than one model on two CPUs): notes with all their codes found, worst 58 of 60 (bound 54).
    assert found >= 0.9 * len(notes)
    # Each note's codes are its most probable ones: worst 60 of 60, gold-vs-other gap at least 0.10 (bound 57).
    ranked = coder([note["text"] for note in notes], top_k=len(SIGNALS))
    assert sum({p["code"] for p in predictions[: len(note["labels"])]} == set(note["labels"])
               for note, predictions in zip(notes, ranked)) >= 0.95 * len(notes)
    # Attention is not a perfect explanation: the top span of a correct code holds one of its planted words
    # for 71-98% of correct codes (worst seen 0.71, 5.2 times chance), where a span placed at random would
    # for 13-16%.
    hits, correct, chance = evidence_hits(notes, outputs)
    assert hits >= 0.5 * correct and hits >= 3 * chance, (hits, correct, chance)


def test_top_k_threshold_and_evidence_parameters(coder):
    note = synthetic_notes(1, seed=5)[0]["text"]
    assert len(coder(note, top_k=5)) == 5 and len(coder(note, top_k=99)) == len(SIGNALS)
    # A threshold predicts exactly the codes whose probability exceeds it. Checked against the model's own
    # scores, at thresholds between its distinct probabilities and below them all, not at a fixed floor:
    # how close a code's probability comes to 0 depends on the machine (one was below 1e-6 on another CPU).
    probabilities = {p["code"]: p["probability"] for p in coder(note, top_k=99)}
    levels = sorted(set(probabilities.values()))
    thresholds = [(low + high) / 2 for low, high in zip(levels, levels[1:]) if high - low > 1e-6 and low + high < 2]
    thresholds += [levels[0] / 2] if levels[0] > 0 else []
    assert thresholds
    for threshold in thresholds:
        expected = {code for code, probability in probabilities.items() if probability > threshold}
        assert {p["code"] for p in coder(note, threshold=threshold)} == expected, threshold
    predictions = coder(note, top_k=2, num_evidence=1, max_span_tokens=1)
    assert all(len(p["evidence"]) == 1 and len(split_words(p["evidence"][0]["text"])) == 1 for p in predictions)
    with pytest.raises(ValueError, match="threshold is a probability"):
        coder(note, threshold=1.5)
    with pytest.raises(ValueError, match="top_k must be a positive integer"):
        coder(note, top_k=0)
    with pytest.raises(TypeError, match="codes notes given as str, got int"):
        coder(12)


def test_offsets_point_into_the_original_text(tokenizer):
    model = make_model(tokenizer).eval()
    coder = pipeline("icd-coding", model=model, tokenizer=tokenizer, device="cpu")
    predictions = coder(UNUSUAL_NOTE, top_k=len(CODES), num_evidence=50, min_evidence_weight=0.0)
    covered = set()
    for prediction in predictions:
        for span in prediction["evidence"]:
            assert UNUSUAL_NOTE[span["start"] : span["end"]] == span["text"]
            # a span starts and ends on word boundaries: splitting it gives whole tokens of the note
            assert split_words(span["text"])[0] == split_words(UNUSUAL_NOTE[span["start"] :])[0]
            covered |= set(range(span["start"], span["end"]))
    # every token of the note lies in some span (50 spans per code cover this note)
    offsets = tokenizer(UNUSUAL_NOTE, return_offsets_mapping=True)["offset_mapping"]
    assert all(start in covered for start, _ in offsets)
    assert [UNUSUAL_NOTE[s:e].lower() for s, e in offsets[:3]] == ["i̇stanbul", "hastası", "acute"]


def test_same_probabilities_as_the_model(tokenizer):
    model = make_model(tokenizer).eval()
    coder = pipeline("icd-coding", model=model, tokenizer=tokenizer, device="cpu")
    notes = [note for note in NOTES if note]
    with torch.no_grad():
        expected = torch.sigmoid(model(**tokenizer(notes, padding=True, return_tensors="pt")).logits)
    for batch_size in (1, 3):
        for row, predictions in enumerate(coder(notes, top_k=len(CODES), batch_size=batch_size)):
            actual = [next(p["probability"] for p in predictions if p["code"] == code) for code in CODES]
            np.testing.assert_allclose(actual, expected[row].numpy(), rtol=0, atol=1e-6)


def test_empty_unknown_and_mixed_length_notes(tokenizer, caplog):
    model = make_model(tokenizer, max_note_tokens=8).eval()
    coder = pipeline("icd-coding", model=model, tokenizer=tokenizer, device="cpu")
    calls = []
    encode_codes = model.msmn.encode_codes
    model.msmn.encode_codes = lambda: calls.append(1) or encode_codes()
    secret = "Jane Doe fever cough pneumonia antibiotics troponin chest pain resolved today"  # 11 tokens
    notes = ["", "zzxq qqvw 12345", NOTES[0], secret, "fever", "   \n\t "]
    with caplog.at_level(logging.WARNING):
        outputs = coder(notes, top_k=2, batch_size=4)
    assert outputs[0] == outputs[5] == []  # no words, no codes
    assert all(len(predictions) == 2 for predictions in outputs[1:5])  # unknown words are coded like any
    assert calls == [1]  # synonym vectors computed once for all notes
    # the long note is cut at 8 tokens, with a warning that names how much, never the text
    assert "11 tokens; MSMN reads the first 8" in caplog.text and "3 tokens" in caplog.text
    assert "Jane" not in caplog.text and "pneumonia" not in caplog.text
    cut = secret[: secret.index(" pain")]  # its first 8 tokens
    assert_same_predictions(coder(cut, top_k=2), outputs[3])
    # one at a time gives what batches gave
    assert_same_predictions([coder(note, top_k=2) for note in notes], outputs)


def test_no_notes_give_no_predictions(tokenizer):
    coder = pipeline("icd-coding", model=make_model(tokenizer).eval(), tokenizer=tokenizer, device="cpu")
    assert coder([]) == [] and coder([], top_k=2) == []
    with pytest.raises(ValueError, match="top_k must be a positive integer"):
        coder([], top_k=0)


def test_note_info_says_how_much_of_each_note_was_read(tokenizer):
    coder = pipeline("icd-coding", model=make_model(tokenizer, max_note_tokens=4).eval(), tokenizer=tokenizer, device="cpu")
    notes = ["fever and productive cough today", "fever", "... ;;"]
    coded = coder(notes, top_k=2, note_info=True, batch_size=2)
    assert [note["note_words"] for note in coded] == [5, 1, 0]
    assert [note["coded_characters"] for note in coded] == [notes[0].index("today"), len(notes[1]), len(notes[2])]
    assert_same_predictions([note["codes"] for note in coded], coder(notes, top_k=2))


def test_codes_a_dataset_column_as_a_stream(tokenizer):
    from datasets import Dataset
    from transformers.pipelines.pt_utils import KeyDataset

    coder = pipeline("icd-coding", model=make_model(tokenizer).eval(), tokenizer=tokenizer, device="cpu")
    dataset = Dataset.from_list([{"id": str(index), "text": note} for index, note in enumerate(NOTES * 3)])
    streamed = list(coder(KeyDataset(dataset, "text"), batch_size=4, top_k=2))  # one note's codes at a time
    assert_same_predictions(streamed, coder(list(dataset["text"]), top_k=2))


def test_rejects_a_model_that_is_not_msmn(tmp_path):
    bert = BertForSequenceClassification(BertConfig(vocab_size=30, hidden_size=8, num_hidden_layers=1,
                                                    num_attention_heads=2, intermediate_size=8))
    bert.save_pretrained(tmp_path / "bert")
    with pytest.raises(ValueError, match=r"needs an MSMN checkpoint .*model_type 'bert'"):
        pipeline("icd-coding", model=str(tmp_path / "bert"), tokenizer=None, device="cpu")


def test_folder_loads_as_remote_code_in_a_fresh_process(synthetic_checkpoint, coder):
    folder, _ = synthetic_checkpoint
    note = synthetic_notes(1, seed=5)[0]["text"]
    # No import of modeling_msmn: the task and the pipeline class come from the folder.
    script = f"""
import json, sys
sys.path.remove({str(ROOT)!r}) if {str(ROOT)!r} in sys.path else None
from transformers import pipeline
coder = pipeline(model={str(folder)!r}, trust_remote_code=True, device="cpu")
classifier = pipeline("text-classification", model={str(folder)!r}, trust_remote_code=True, top_k=None, device="cpu")
print(json.dumps([type(coder).__module__, coder({note!r}), classifier({note!r})]))
"""
    result = run([sys.executable, "-c", script], folder.parent)
    assert result.returncode == 0, result.stderr[-3000:]
    module, predictions, [scores] = json.loads(result.stdout.strip().splitlines()[-1])
    assert module.startswith("transformers_modules.") and module.endswith("pipeline_msmn")
    assert_same_predictions(predictions, json.loads(json.dumps(coder(note))))  # that process ran on 1 thread
    # the stock pipeline gives every code's sigmoid probability under the code's name
    model = AutoModelForSequenceClassification.from_pretrained(folder).eval()
    tokenizer = AutoTokenizer.from_pretrained(folder)
    with torch.no_grad():
        probabilities = torch.sigmoid(model(**tokenizer(note, return_tensors="pt")).logits)[0]
    assert sorted(score["label"] for score in scores) == sorted(SIGNALS)
    for score in scores:
        assert score["score"] == pytest.approx(float(probabilities[model.config.label2id[score["label"]]]), abs=1e-6)


def test_folder_saved_without_the_pipeline_still_codes_with_the_package(tokenizer, tmp_path):
    # the model's own save_pretrained (not the pipeline's): no pipeline_msmn.py, no custom_pipelines
    model = make_model(tokenizer).eval()
    model.save_pretrained(tmp_path)
    tokenizer.save_pretrained(tmp_path)
    assert "custom_pipelines" not in json.loads((tmp_path / "config.json").read_text())
    assert not (tmp_path / "pipeline_msmn.py").exists()
    coder = pipeline("icd-coding", model=str(tmp_path), device="cpu")  # the registered task of `import modeling_msmn`
    expected = pipeline("icd-coding", model=model, tokenizer=tokenizer, device="cpu")
    assert_same_predictions(coder(NOTES[:3], top_k=2), expected(NOTES[:3], top_k=2))


def test_asked_codes_come_with_their_evidence(tokenizer):
    # codes=[...]: those codes for every note, in that order, whatever their probability (a coder's choice)
    model = make_model(tokenizer).eval()
    coder = pipeline("icd-coding", model=model, tokenizer=tokenizer, device="cpu")
    notes = [note for note in NOTES if note]
    asked = [CODES[2], CODES[0]]
    everything = coder(notes, top_k=len(CODES))
    for predictions, ranked in zip(coder(notes, codes=asked, batch_size=2), everything):
        assert [p["code"] for p in predictions] == asked
        assert_same_predictions(predictions, [next(p for p in ranked if p["code"] == code) for code in asked])
    assert coder("", codes=asked) == []  # a note without words gets no codes
    with pytest.raises(ValueError, match=r"codes must be a list of the model's codes; not among them: \['Z99.9'\]"):
        coder(notes[0], codes=["Z99.9", CODES[0]])


def test_short_notes_and_full_width_text_are_flagged(tokenizer, tmp_path, monkeypatch, caplog):
    model = make_model(tokenizer, training_note_words={"p1": 5, "median": 12}).eval()
    coder = ICDCodingPipeline(model=model, tokenizer=tokenizer, task="icd-coding")
    assert coder("fever", note_info=True)["short_note"] is True  # fewer words than 99% of the training notes
    assert coder("fever and cough with pneumonia today", note_info=True)["short_note"] is False
    unrecorded = ICDCodingPipeline(model=make_model(tokenizer).eval(), tokenizer=tokenizer, task="icd-coding")
    assert unrecorded("fever", note_info=True)["short_note"] is None  # a checkpoint that does not record it
    with caplog.at_level(logging.WARNING):
        coder("\uff26\uff45\uff56\uff45\uff52 and \ufb01brosis")
    assert "holds 6 full-width letters or digits or Latin ligatures" in caplog.text

    from msmn.review import state
    from msmn.coding import cli as msmn_code

    _, warning = state.suggestions(coder, "fever", 0.5, None)
    assert warning.startswith("**A short note** (1 words, fewer than 99% of the notes the model was trained on)")
    coder.save_pretrained(tmp_path / "model")
    monkeypatch.chdir(tmp_path)
    (tmp_path / "notes.jsonl").write_text('{"id": "a", "text": "fever"}\n{"id": "b", "text": "fever and cough with pneumonia"}\n')
    msmn_code.main([str(tmp_path / "model"), "notes.jsonl", "--top-k", "1", "--output", "codes.jsonl", "--html", "report.html"])
    lines = [json.loads(line) for line in (tmp_path / "codes.jsonl").read_text().splitlines()]
    assert [line.get("short_note") for line in lines] == [True, None]
    assert (tmp_path / "report.html").read_text().count('<p class="short">A short note') == 1


def test_top_k_orders_confident_codes_by_logit(tokenizer):
    # logits of 20 and more: their float32 probabilities are all exactly 1.0, their logits still differ
    model = make_model(tokenizer).eval()
    score = model.score
    offsets = torch.tensor([30.0, 25.0, 20.0, 35.0])
    model.score = lambda representations, vectors: score(representations, vectors) + offsets
    coder = pipeline("icd-coding", model=model, tokenizer=tokenizer, device="cpu")
    predictions = coder(NOTES[0], top_k=4)
    assert {p["probability"] for p in predictions} == {1.0}
    assert [p["code"] for p in predictions] == [CODES[3], CODES[0], CODES[1], CODES[2]]
