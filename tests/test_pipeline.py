"""The icd-coding pipeline: planted codes and their evidence, exact offsets, edge cases, remote loading."""

import json
import logging
import sys

import numpy as np
import pytest
import torch
from conftest import CODES, NOTES, make_model
from synthetic_corpus import ROOT, SIGNALS, run, synthetic_notes
from transformers import AutoModelForSequenceClassification, AutoTokenizer, BertConfig, BertForSequenceClassification, pipeline

from modeling_msmn import split_words
from modeling_msmn.pipeline_msmn import evidence_spans

UNUSUAL_NOTE = (
    "  İstanbul\u00a0hastası:\tACUTE\u2028myocardial  infarction — ΣΊΣΥΦΟΣ naïve ﬁbrosis 🫀 fever\r\n"
    "e\u0301dema 39.5°C 肺炎 pneumonia\u3000type 2 diabetes"
)


@pytest.fixture(scope="module")
def coder(synthetic_checkpoint):
    folder, _ = synthetic_checkpoint
    return pipeline("icd-coding", model=str(folder), trust_remote_code=True, device="cpu")


def rounded(predictions):
    """The predictions with probabilities and weights to 5 decimals (batch padding changes the last bits)."""
    return json.loads(json.dumps(predictions), parse_float=lambda value: round(float(value), 5))


def test_evidence_spans_grow_around_peaks():
    weights = np.array([0.01, 0.30, 0.20, 0.02, 0.40, 0.05, 0.02])
    assert evidence_spans(weights, num_spans=3, max_span_tokens=5) == [(4, 4), (1, 2), (5, 5)]
    assert evidence_spans(weights, num_spans=2, max_span_tokens=1) == [(4, 4), (1, 1)]
    assert evidence_spans(np.array([]), num_spans=3, max_span_tokens=5) == []


def test_finds_planted_codes_and_their_evidence(coder):
    notes = synthetic_notes(60, seed=3)  # the checkpoint's test split
    outputs = coder([note["text"] for note in notes], batch_size=16)
    found = hits = 0
    for note, predictions in zip(notes, outputs):
        codes = [prediction["code"] for prediction in predictions]
        assert [p["probability"] for p in predictions] == sorted((p["probability"] for p in predictions), reverse=True)
        found += set(note["labels"]) <= set(codes)
        for prediction in predictions:
            assert all(note["text"][e["start"] : e["end"]] == e["text"] for e in prediction["evidence"])
            if prediction["code"] in note["labels"]:
                top_span = split_words(prediction["evidence"][0]["text"])
                hits += any(word in top_span for word in SIGNALS[prediction["code"]][1])
            terms, _ = SIGNALS[prediction["code"]]
            assert prediction["description"] == terms[0] and prediction["synonym"] in terms
    assert found >= 0.9 * len(notes)
    # Attention is not a perfect explanation: in this checkpoint one code (I10) is predicted right
    # without its attention landing on its words (77 of 87 correct codes have them in the top span).
    correct = sum(p["code"] in note["labels"] for note, predictions in zip(notes, outputs) for p in predictions)
    assert hits >= 0.8 * correct, (hits, correct)


def test_top_k_threshold_and_evidence_parameters(coder):
    note = synthetic_notes(1, seed=5)[0]["text"]
    assert len(coder(note, top_k=5)) == 5 and len(coder(note, top_k=99)) == len(SIGNALS)
    assert len(coder(note, threshold=0.999999)) <= len(coder(note, threshold=1e-6)) == len(SIGNALS)
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
    assert rounded(coder(cut, top_k=2)) == rounded(outputs[3])
    # one at a time gives what batches gave
    assert [rounded(coder(note, top_k=2)) for note in notes] == rounded(outputs)


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
    assert predictions == json.loads(json.dumps(coder(note)))
    # the stock pipeline gives every code's sigmoid probability under the code's name
    model = AutoModelForSequenceClassification.from_pretrained(folder).eval()
    tokenizer = AutoTokenizer.from_pretrained(folder)
    with torch.no_grad():
        probabilities = torch.sigmoid(model(**tokenizer(note, return_tensors="pt")).logits)[0]
    assert sorted(score["label"] for score in scores) == sorted(SIGNALS)
    for score in scores:
        assert score["score"] == pytest.approx(float(probabilities[model.config.label2id[score["label"]]]), abs=1e-6)


def test_folder_saved_without_the_pipeline_still_codes_with_the_package(tokenizer, tmp_path):
    # a folder from before the pipeline existed: no pipeline_msmn.py, no custom_pipelines in its config
    model = make_model(tokenizer).eval()
    model.save_pretrained(tmp_path)
    tokenizer.save_pretrained(tmp_path)
    assert json.loads((tmp_path / "config.json").read_text())["custom_pipelines"]["icd-coding"]["impl"] == (
        "pipeline_msmn.ICDCodingPipeline")
    (tmp_path / "pipeline_msmn.py").unlink()
    config = json.loads((tmp_path / "config.json").read_text())
    del config["custom_pipelines"]
    (tmp_path / "config.json").write_text(json.dumps(config))
    coder = pipeline("icd-coding", model=str(tmp_path), device="cpu")  # the registered task of `import modeling_msmn`
    expected = pipeline("icd-coding", model=model, tokenizer=tokenizer, device="cpu")
    assert rounded(coder(NOTES[:3], top_k=2)) == rounded(expected(NOTES[:3], top_k=2))
