"""Length-bucketed code-term encoding equals padding every term to the longest, in float64."""

import pytest
import torch
from conftest import CODES, NOTES, make_model


def padded_term_vectors(msmn):
    """The formulation the buckets replace: every term padded to the longest one, one encoder call."""
    lengths = (msmn.code_term_ids != msmn.config.pad_token_id).sum(dim=1).clamp(min=1)
    term_ids = msmn.code_term_ids[:, : int(lengths.max())]
    term_states = msmn.encoder(term_ids, lengths)  # (C·M, longest, d)
    if msmn.config.mask_synonym_padding:
        is_padding = torch.arange(term_ids.shape[1]) >= lengths[:, None]
        term_states = term_states.masked_fill(is_padding[..., None], float("-inf"))
    return term_states.max(dim=1).values


def term_ids_of_every_length(tokenizer, num_synonyms, term_length=8, seed=0):
    """Code-major term ids covering lengths 1..term_length: the full length, one-token terms, a code
    whose terms all have the same length, repeated terms, and an empty term (read as one PAD)."""
    generator = torch.Generator().manual_seed(seed)
    words = torch.arange(len(tokenizer))
    words = words[words != tokenizer.pad_token_id]
    lengths = [term_length, 1, 3, 3] + [3] * num_synonyms + [1, 5, 0, 2] + [7, 4, 6, 2]
    rows = []
    for length in lengths[: len(CODES) * num_synonyms]:
        row = torch.full((term_length,), tokenizer.pad_token_id)
        row[:length] = words[torch.randint(len(words), (length,), generator=generator)]
        rows.append(row)
    rows[-1] = rows[0].clone()  # a duplicate of another code's term
    return torch.stack(rows).tolist()


SHAPES = {  # (rnn_dim, hidden_size, num_lstm_layers, mask_synonym_padding)
    "codiesp-d (no projection)": (16, 16, 1, False),
    "mimic-full (projection, 2 layers)": (12, 16, 2, False),
    "mask_synonym_padding": (12, 16, 2, True),
}


@pytest.mark.parametrize("shape", SHAPES)
def test_logits_and_gradients_equal_the_padded_formulation(tokenizer, shape):
    rnn_dim, hidden_size, num_lstm_layers, masked = SHAPES[shape]
    model = make_model(tokenizer, num_synonyms=4, rnn_dim=rnn_dim, hidden_size=hidden_size, num_lstm_layers=num_lstm_layers,
                       mask_synonym_padding=masked, embedding_dropout=0.0, lstm_dropout=0.0, representation_dropout=0.0)
    model.set_codes(CODES, term_ids_of_every_length(tokenizer, num_synonyms=4))
    model.double().train()  # gradients; every dropout is off, so training mode is deterministic
    with torch.no_grad():  # the projection's bias large enough to win the padding max somewhere
        if model.msmn.encoder.output_projection is not None:
            model.msmn.encoder.output_projection.bias.normal_(0, 0.5)
    inputs = tokenizer(NOTES, padding=True, return_tensors="pt")
    labels = torch.zeros(len(NOTES), len(CODES), dtype=torch.float64)
    labels[0, 1] = labels[2, 0] = 1

    def logits_and_gradients():
        model.zero_grad()
        output = model(**inputs, labels=labels)
        output.loss.backward()
        return output.logits.detach(), {name: p.grad.clone() for name, p in model.named_parameters()}

    bucketed_vectors = model.msmn.encode_terms()
    padded_vectors = padded_term_vectors(model.msmn)
    torch.testing.assert_close(bucketed_vectors, padded_vectors, rtol=1e-13, atol=1e-14)
    if not masked:  # the padding max matters: some short term takes a value from the padding output
        lengths = (model.msmn.code_term_ids != tokenizer.pad_token_id).sum(1).clamp(min=1)
        short = lengths < lengths.max()
        with torch.no_grad():
            unpadded = torch.stack([model.msmn.encoder(row[None, :n], n[None]).max(1).values[0]
                                    for row, n in zip(model.msmn.code_term_ids[short], lengths[short])])
        assert not torch.allclose(unpadded, bucketed_vectors[short])

    bucketed_logits, bucketed_gradients = logits_and_gradients()
    model.msmn.encode_terms = lambda term_ids=None: padded_term_vectors(model.msmn)
    padded_logits, padded_gradients = logits_and_gradients()
    torch.testing.assert_close(bucketed_logits, padded_logits, rtol=1e-13, atol=1e-14)
    assert bucketed_gradients.keys() == padded_gradients.keys()
    for name, gradient in padded_gradients.items():
        torch.testing.assert_close(bucketed_gradients[name], gradient, rtol=1e-12, atol=1e-14, msg=name)
        assert gradient.abs().sum() > 0 or name.startswith("msmn.encoder.word_embeddings"), name


@pytest.mark.parametrize("score_function", ["reference", "linear"])
@pytest.mark.parametrize("shape", SHAPES)
def test_some_codes_score_as_within_all_codes(tokenizer, shape, score_function):
    """`code_indices` (a training step's sampled codes) gives those columns of all codes' logits, and the
    gradients of a loss on them, although the longest term (code 0's) is not among them."""
    rnn_dim, hidden_size, num_lstm_layers, masked = SHAPES[shape]
    model = make_model(tokenizer, num_synonyms=4, rnn_dim=rnn_dim, hidden_size=hidden_size, num_lstm_layers=num_lstm_layers,
                       mask_synonym_padding=masked, score_function=score_function, embedding_dropout=0.0,
                       lstm_dropout=0.0, representation_dropout=0.0)
    model.msmn.set_codes(CODES, term_ids_of_every_length(tokenizer, num_synonyms=4))  # same codes: "linear" too
    model.double().train()
    inputs = tokenizer(NOTES, padding=True, return_tensors="pt")
    code_indices = torch.tensor([1, 2])
    labels = torch.zeros(len(NOTES), len(code_indices), dtype=torch.float64)
    labels[0, 1] = labels[2, 0] = 1
    results = []
    for subset in (True, False):
        model.zero_grad()
        if subset:
            logits = model(**inputs, labels=labels, code_indices=code_indices).logits
        else:
            logits = model(**inputs).logits[:, code_indices]
        torch.nn.functional.binary_cross_entropy_with_logits(logits, labels).backward()
        results.append((logits.detach(), {name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None}))
    (some_logits, some_gradients), (all_logits, all_gradients) = results
    torch.testing.assert_close(some_logits, all_logits, rtol=1e-13, atol=1e-14)
    assert some_gradients.keys() == all_gradients.keys()
    for name, gradient in all_gradients.items():
        torch.testing.assert_close(some_gradients[name], gradient, rtol=1e-12, atol=1e-14, msg=name)


@pytest.mark.parametrize("score_function", ["reference", "dot"])
@pytest.mark.parametrize("shape", SHAPES)
def test_extra_codes_score_as_if_added_to_the_code_set(tokenizer, shape, score_function):
    """`extra_code_term_ids` (a training step's negatives from outside the label set) gives the logits
    and gradients that the same codes get once `set_codes` adds them, after the sampled codes."""
    rnn_dim, hidden_size, num_lstm_layers, masked = SHAPES[shape]
    model = make_model(tokenizer, num_synonyms=4, rnn_dim=rnn_dim, hidden_size=hidden_size, num_lstm_layers=num_lstm_layers,
                       mask_synonym_padding=masked, score_function=score_function, embedding_dropout=0.0,
                       lstm_dropout=0.0, representation_dropout=0.0)
    term_ids = term_ids_of_every_length(tokenizer, num_synonyms=4)
    rows = lambda code: term_ids[code * 4:(code + 1) * 4]  # noqa: E731
    # the code set's longest term (code 0's) is neither sampled nor extra: the extra code is pooled to its width
    labelled, extra = [0, 1, 3], 2
    model.double().train()
    inputs = tokenizer(NOTES, padding=True, return_tensors="pt")
    labels = torch.zeros(len(NOTES), 2, dtype=torch.float64)
    labels[0, 0] = labels[2, 1] = 1
    results = []
    for as_extra in (True, False):
        model.zero_grad()
        if as_extra:
            model.set_codes([CODES[code] for code in labelled], [row for code in labelled for row in rows(code)])
            logits = model(**inputs, code_indices=torch.tensor([1]), extra_code_term_ids=torch.tensor(rows(extra))).logits
        else:
            model.set_codes(CODES, term_ids)
            logits = model(**inputs).logits[:, [1, extra]]
        torch.nn.functional.binary_cross_entropy_with_logits(logits, labels).backward()
        results.append((logits.detach(), {name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None}))
    (extra_logits, extra_gradients), (added_logits, added_gradients) = results
    assert extra_logits.shape == (len(NOTES), 2)
    torch.testing.assert_close(extra_logits, added_logits, rtol=1e-13, atol=1e-14)
    assert extra_gradients.keys() == added_gradients.keys()
    for name, gradient in added_gradients.items():
        torch.testing.assert_close(extra_gradients[name], gradient, rtol=1e-12, atol=1e-14, msg=name)


def test_extra_codes_need_term_ids_of_the_model_shape_and_a_code_independent_score(tokenizer):
    inputs = tokenizer(NOTES, padding=True, return_tensors="pt")
    model = make_model(tokenizer, num_synonyms=4)
    width = model.msmn.code_term_ids.shape[1]
    for shape in ((6, width), (8, width + 1), (8,)):
        with pytest.raises(ValueError, match=r"extra_code_term_ids has shape .*: expected \(codes × 4 terms"):
            model(**inputs, extra_code_term_ids=torch.ones(shape, dtype=torch.long))
    linear = make_model(tokenizer, num_synonyms=4, score_function="linear")
    with pytest.raises(ValueError, match="score_function='linear' has trained weights per code"):
        linear(**inputs, extra_code_term_ids=torch.ones(8, width, dtype=torch.long))


def test_evaluation_encodes_each_distinct_term_once(tokenizer, monkeypatch):
    model = make_model(tokenizer, num_synonyms=4).double()
    model.set_codes(CODES, term_ids_of_every_length(tokenizer, num_synonyms=4))
    model.eval()
    encoded_rows = []
    encoder_forward = type(model.msmn.encoder).forward
    monkeypatch.setattr(type(model.msmn.encoder), "forward",
                        lambda self, ids, lengths: encoded_rows.append(len(ids)) or encoder_forward(self, ids, lengths))
    with torch.no_grad():
        vectors = model.msmn.encode_terms()
    distinct = len(torch.unique(model.msmn.code_term_ids, dim=0))
    assert sum(encoded_rows) == distinct < len(model.msmn.code_term_ids)
    monkeypatch.undo()
    with torch.no_grad():
        torch.testing.assert_close(vectors, padded_term_vectors(model.msmn), rtol=1e-13, atol=1e-14)


def test_ties_with_the_padding_output_send_the_gradient_one_way(tokenizer):
    """Where a term's max equals the padding output, max over positions gives the whole gradient to one
    position; the bucketed max must do the same (torch.maximum would split it in halves)."""
    model = make_model(tokenizer, num_synonyms=4, rnn_dim=12, hidden_size=16, embedding_dropout=0.0,
                       representation_dropout=0.0).double().train()
    model.set_codes(CODES, term_ids_of_every_length(tokenizer, num_synonyms=4))
    projection = model.msmn.encoder.output_projection
    with torch.no_grad():  # every position outputs the bias: each short term ties with its padding output
        projection.weight.zero_()
    gradients = []
    for encode in (model.msmn.encode_terms, lambda: padded_term_vectors(model.msmn)):
        model.zero_grad()
        encode().sum().backward()
        gradients.append({name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None})
    bucketed, padded = gradients
    assert padded["msmn.encoder.output_projection.weight"].abs().sum() > 0
    for name, gradient in padded.items():
        torch.testing.assert_close(bucketed[name], gradient, rtol=1e-12, atol=1e-14, msg=name)
