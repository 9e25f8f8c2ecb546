"""MSMNForSequenceClassification: round trip, switches, new codes, eval cache and bad inputs."""

import ast
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import CODE_TERMS, CODES, NOTES, make_model
from transformers import AutoModel, AutoModelForSequenceClassification, AutoTokenizer

from modeling_msmn import MSMNForSequenceClassification, build_code_term_ids


def encode(tokenizer, notes=NOTES):
    return tokenizer(notes, padding=True, truncation=True, return_tensors="pt")


FRESH_PROCESS_SCRIPT = """
import json, sys, torch
from transformers import AutoModel, AutoModelForSequenceClassification, AutoTokenizer
folder, notes = sys.argv[1], json.loads(sys.argv[2])
tokenizer = AutoTokenizer.from_pretrained(folder, trust_remote_code=True)
model = AutoModelForSequenceClassification.from_pretrained(folder, trust_remote_code=True).eval()
base = AutoModel.from_pretrained(folder, trust_remote_code=True).eval()
inputs = tokenizer(notes, padding=True, return_tensors="pt")
with torch.no_grad():
    logits = model(**inputs).logits
    representations = base(**inputs).code_representations
assert not any(name.startswith("modeling_msmn") for name in sys.modules), "used the installed package"
print(json.dumps({"logits": logits.double().tolist(), "representations_sum": float(representations.double().sum()),
                  "module": type(model).__module__, "embedding": model.get_input_embeddings().weight[:3].tolist()}))
"""


def test_save_and_load_in_fresh_process(tokenizer, tmp_path):
    model = make_model(tokenizer).eval()
    vectors = torch.randn(len(tokenizer), 6)
    model.set_word_embeddings(vectors)
    model.save_pretrained(tmp_path)
    tokenizer.save_pretrained(tmp_path)
    files = sorted(os.listdir(tmp_path))
    assert "model.safetensors" in files and "configuration_msmn.py" in files and "modeling_msmn.py" in files
    assert not [f for f in files if f.endswith((".bin", ".pt", ".pth", ".pkl"))]

    environment = {**os.environ, "PYTHONPATH": ""}
    result = subprocess.run(
        [sys.executable, "-c", FRESH_PROCESS_SCRIPT, str(tmp_path), json.dumps(NOTES)],
        capture_output=True, text=True, cwd=tmp_path.parent, env=environment, check=True,
    )
    loaded = json.loads(result.stdout.strip().splitlines()[-1])
    assert loaded["module"].startswith("transformers_modules.")
    with torch.no_grad():
        inputs = encode(tokenizer)
        expected = model(**inputs).logits.double()
        expected_representations = model.msmn(**inputs).code_representations.double().sum()
    assert torch.equal(torch.tensor(loaded["logits"], dtype=torch.float64), expected)
    assert loaded["representations_sum"] == pytest.approx(float(expected_representations), rel=1e-12)
    expected_rows = vectors[:3].clone()
    expected_rows[tokenizer.pad_token_id] = 0
    assert torch.equal(torch.tensor(loaded["embedding"]), expected_rows)


def test_auto_classes_load_locally_without_remote_code(tokenizer, tmp_path):
    model = make_model(tokenizer).eval()
    model.save_pretrained(tmp_path)
    loaded = AutoModelForSequenceClassification.from_pretrained(tmp_path).eval()
    assert type(loaded) is type(model)
    base = AutoModel.from_pretrained(tmp_path)
    assert torch.equal(base.code_term_ids, model.msmn.code_term_ids)
    with torch.no_grad():
        assert torch.equal(loaded(**encode(tokenizer)).logits, model(**encode(tokenizer)).logits)


def test_embedding_survives_post_init_defaults(tokenizer):
    """transformers 5 re-initialises modules in post_init; our init must be the reference's."""
    model = make_model(tokenizer)
    embedding = model.get_input_embeddings().weight
    assert torch.all(embedding[tokenizer.pad_token_id] == 0)
    assert 0.7 < embedding.std().item() < 1.3  # N(0, 1), not HF's N(0, 0.02)
    lstm = model.msmn.encoder.lstm.forward_layers[0]
    bound = 1 / lstm.hidden_size**0.5
    assert lstm.weight_ih_l0.abs().max() <= bound and lstm.bias_hh_l0.abs().max() > 0  # PyTorch default
    note_projection = model.msmn.attention.note_projection.weight
    xavier_bound = (6 / (2 * note_projection.shape[0])) ** 0.5
    assert note_projection.abs().max() <= xavier_bound and note_projection.abs().max() > 0.9 * xavier_bound


def reference_logits(model, outputs, score_function):
    v, q = outputs.code_representations, outputs.code_vectors
    if score_function == "reference":
        w = q @ model.code_weight.weight.T + model.code_weight.bias
        s = q @ model.code_bias.weight[0] + model.code_bias.bias
        return (v * w).sum(-1) + s
    if score_function == "biaffine":
        return torch.stack([torch.stack([v[b, c] @ model.code_weight.weight @ q[c] for c in range(len(q))]) for b in range(len(v))])
    if score_function == "dot":
        return (v * q).sum(-1)
    return (v * model.per_code_classifier.weight).sum(-1) + model.per_code_classifier.bias


@pytest.mark.parametrize("score_function", ["reference", "biaffine", "dot", "linear"])
def test_score_functions(tokenizer, score_function):
    model = make_model(tokenizer, score_function=score_function).eval()
    inputs = encode(tokenizer)
    with torch.no_grad():
        outputs = model.msmn(**inputs)
        logits = model(**inputs).logits
    torch.testing.assert_close(logits, reference_logits(model, outputs, score_function))
    parameter_names = {name.split(".")[0] for name, _ in model.named_parameters()} - {"msmn"}
    assert parameter_names == {
        "reference": {"code_weight", "code_bias"}, "biaffine": {"code_weight"}, "dot": set(), "linear": {"per_code_classifier"}
    }[score_function]
    assert model.code_weight.bias is None if score_function == "biaffine" else True


def test_score_on_hand_computed_numbers(tokenizer):
    model = make_model(tokenizer, score_function="reference", hidden_size=4, num_synonyms=2)
    v = torch.tensor([[[1.0, 2.0, 0.0, -1.0]] * 4])
    q = torch.tensor([[0.5, 0.0, 1.0, 2.0]] * 4)
    with torch.no_grad():
        model.code_weight.weight.copy_(torch.eye(4) * 2)
        model.code_weight.bias.copy_(torch.tensor([1.0, 0.0, 0.0, 0.0]))
        model.code_bias.weight.copy_(torch.tensor([[1.0, 1.0, 1.0, 1.0]]))
        model.code_bias.bias.fill_(-3.0)
    # w = 2q + b_w = (2, 0, 2, 4): vᵀw = 2 − 4 = −2; s = 1ᵀq − 3 = 0.5; logit = −1.5
    assert model.score(v, q).tolist() == [[-1.5] * 4]


def test_mask_synonym_padding(tokenizer):
    """Reference pools over padding too (value 0 when R = d) up to the longest term; the switch pools
    over real tokens only."""
    pooled = {}
    for masked in (False, True):
        model = make_model(tokenizer, rnn_dim=16, mask_synonym_padding=masked).eval()
        lengths = (model.msmn.code_term_ids != tokenizer.pad_token_id).sum(1).clamp(min=1)
        term_ids = model.msmn.code_term_ids[:, : int(lengths.max())]  # padding up to the longest term
        with torch.no_grad():
            states = model.msmn.encoder(term_ids, lengths)
            pooled[masked] = model.msmn.encode_codes().synonym_vectors.reshape(len(term_ids), -1)
        is_real = torch.arange(term_ids.shape[1]) < lengths[:, None]
        expected = states.masked_fill(~is_real[..., None], float("-inf")).amax(1) if masked else states.amax(1)
        torch.testing.assert_close(pooled[masked], expected)
    shorter_than_longest = lengths < lengths.max()
    assert torch.all(pooled[False][shorter_than_longest] >= 0) and torch.any(pooled[True][shorter_than_longest] < 0)


def test_new_code_scored_from_its_terms(tokenizer):
    model = make_model(tokenizer).eval()
    inputs = encode(tokenizer)
    with torch.no_grad():
        before = model(**inputs).logits
    new_terms = {**CODE_TERMS, "Z99.9": ["productive cough with fever", "cough"]}
    new_codes = [*CODES, "Z99.9"]
    term_ids, terms = build_code_term_ids(tokenizer, new_codes, new_terms, 4, term_length=8)
    model.set_codes(new_codes, term_ids, terms)
    with torch.no_grad():
        after = model(**inputs).logits
    assert after.shape == (len(NOTES), 5) and model.config.label2id["Z99.9"] == 4
    torch.testing.assert_close(after[:, :4], before)
    # the new code's logit is what a model built with that code from the start computes
    rebuilt = make_model(tokenizer, seed=1)
    rebuilt.set_codes(new_codes, term_ids, terms)
    rebuilt.load_state_dict(model.state_dict())
    with torch.no_grad():
        torch.testing.assert_close(rebuilt.eval()(**inputs).logits, after)
    assert not torch.allclose(after[:, 4], after[:, 0])
    with pytest.raises(ValueError, match="per code"):
        make_model(tokenizer, score_function="linear").set_codes(new_codes, term_ids)


def test_eval_caches_synonyms_until_weights_change(tokenizer, monkeypatch):
    model = make_model(tokenizer).eval()
    calls = []
    original = type(model.msmn).encode_codes
    monkeypatch.setattr(type(model.msmn), "encode_codes", lambda self: calls.append(1) or original(self))
    inputs = encode(tokenizer)
    with torch.no_grad():
        first = model(**inputs).logits
        model(**inputs)
    assert len(calls) == 1
    with torch.no_grad():
        model.msmn.encoder.lstm.forward_layers[0].weight_hh_l0.mul_(1.5)  # weights change in place
        changed = model(**inputs).logits
    assert len(calls) == 2 and not torch.allclose(changed, first)
    model.load_state_dict(make_model(tokenizer, seed=3).state_dict())
    with torch.no_grad():
        model(**inputs)
    assert len(calls) == 3
    model.train()
    assert model.msmn._code_encoding_cache is None
    model(**inputs)  # training recomputes every step, with gradients
    model(**inputs)
    assert len(calls) == 5


def test_training_step_reaches_synonym_encoder(tokenizer):
    model = make_model(tokenizer).train()
    labels = torch.zeros(len(NOTES), len(CODES))
    labels[0, CODES.index("I21.4")] = 1
    output = model(**encode(tokenizer), labels=labels)
    expected = torch.nn.functional.binary_cross_entropy_with_logits(output.logits, labels)
    torch.testing.assert_close(output.loss, expected)
    output.loss.backward()
    assert model.msmn.attention.synonym_projection.weight.grad.abs().sum() > 0
    term_rows = model.msmn.code_term_ids.unique()
    assert model.get_input_embeddings().weight.grad[term_rows].abs().sum() > 0


def test_chunked_model_equals_unchunked(tokenizer):
    model = make_model(tokenizer).eval()
    inputs = encode(tokenizer)
    with torch.no_grad():
        expected = model(**inputs).logits
        model.msmn.attention.memory_budget_bytes = 1
        torch.testing.assert_close(model(**inputs).logits, expected)


def test_bad_inputs(tokenizer):
    model = make_model(tokenizer).eval()
    inputs = encode(tokenizer)
    with pytest.raises(ValueError, match="outside the vocabulary"):
        model(input_ids=torch.tensor([[1, len(tokenizer)]]))
    with pytest.raises(ValueError, match="outside the vocabulary"):
        model(input_ids=torch.tensor([[-1, 2]]))
    with pytest.raises(ValueError, match=r"labels have shape \(4, 3\)"):
        model(**inputs, labels=torch.zeros(4, 3))
    with pytest.raises(ValueError, match="batch"):
        model(input_ids=torch.zeros(0, 5, dtype=torch.long))
    with pytest.raises(ValueError, match="right-padded"):
        model(input_ids=torch.tensor([[0, 5, 6]]), attention_mask=torch.tensor([[0, 1, 1]]))
    with pytest.raises(ValueError, match="attention_mask has shape"):
        model(input_ids=torch.tensor([[5, 6]]), attention_mask=torch.tensor([[1, 1, 0]]))


def test_empty_and_unknown_notes_give_finite_scores(tokenizer):
    model = make_model(tokenizer).eval()
    with torch.no_grad():
        empty = model(**tokenizer(["", "zzzz qqqq"], padding=True, return_tensors="pt")).logits
        no_tokens = model(input_ids=torch.zeros(2, 0, dtype=torch.long)).logits
    assert torch.isfinite(empty).all() and torch.isfinite(no_tokens).all()


def test_config_mismatch_with_weights_is_an_error(tokenizer, tmp_path):
    make_model(tokenizer).save_pretrained(tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    config["rnn_dim"] = 8
    (tmp_path / "config.json").write_text(json.dumps(config))
    with pytest.raises(RuntimeError, match="ignore_mismatched_sizes"):
        AutoModelForSequenceClassification.from_pretrained(tmp_path)


def test_term_ids_live_in_the_weights_not_the_config(tokenizer, tmp_path):
    model = make_model(tokenizer).eval()
    model.save_pretrained(tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    assert "code_term_ids" not in config
    assert set(config["auto_map"]) == {"AutoConfig", "AutoModel", "AutoModelForSequenceClassification"}
    # loaded through AutoModel and saved again, the folder still names all three Auto classes
    AutoModel.from_pretrained(tmp_path).save_pretrained(tmp_path / "again")
    assert json.loads((tmp_path / "again" / "config.json").read_text())["auto_map"] == config["auto_map"]
    loaded = AutoModelForSequenceClassification.from_pretrained(tmp_path)
    assert torch.equal(loaded.msmn.code_term_ids, model.msmn.code_term_ids)


def test_new_model_needs_term_ids_that_fit_its_config(tokenizer):
    model = make_model(tokenizer)
    config, term_ids = model.config, model.msmn.code_term_ids
    with pytest.raises(ValueError, match="has no code terms.*code_term_ids=build_code_term_ids"):
        type(model)(config)(**encode(tokenizer))
    with pytest.raises(ValueError, match=r"shape \(15, 8\), expected .* \(16, 8\)"):
        type(model)(config, code_term_ids=term_ids[:-1])
    with pytest.raises(ValueError, match="outside the vocabulary"):
        type(model)(config, code_term_ids=term_ids + len(tokenizer))


def test_folder_saved_by_an_earlier_version_still_loads():
    # saved when the config still listed the term ids (tests/data/README.md)
    folder = Path(__file__).parent / "data" / "checkpoint_2026_11"
    expected = json.loads((folder / "expected_logits.json").read_text())
    model = MSMNForSequenceClassification.from_pretrained(folder).eval()
    tokenizer = AutoTokenizer.from_pretrained(folder)
    assert not hasattr(model.config, "code_term_ids")
    with torch.no_grad():
        logits = model(**tokenizer(expected["notes"], padding=True, return_tensors="pt")).logits
    assert torch.allclose(logits, torch.tensor(expected["logits"]), atol=1e-5)


def test_model_folder_stands_alone():
    # modeling_msmn/ ships to the Hub as remote code: it may import torch, transformers, tokenizers,
    # safetensors (both required by transformers), numpy, the standard library and its own modules, nothing
    # of this repository's other folders
    allowed = {"torch", "transformers", "tokenizers", "safetensors", "numpy", *sys.stdlib_module_names}
    for path in sorted((Path(__file__).parents[1] / "modeling_msmn").glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and node.level > 0:
                continue
            names = [alias.name for alias in node.names] if isinstance(node, ast.Import) else (
                [node.module] if isinstance(node, ast.ImportFrom) else [])
            for name in names:
                assert name.split(".")[0] in allowed, f"{path.name} imports {name}"
