"""The fold attention (chunked or not) equals a plain einsum of the equations of docs/model.md, "Multi-synonym attention"."""

import pytest
import torch

from modeling_msmn import MSMNConfig
from modeling_msmn.modeling_msmn import MSMNMultiSynonymAttention


def einsum_attention(note_states, attention_mask, synonym_vectors, attention):
    """docs/model.md's attention written out: Z heads, U queries, scores over tokens, softmax, full-H values, max over heads."""
    batch_size, num_tokens, hidden_size = note_states.shape
    num_codes, num_heads, _ = synonym_vectors.shape
    note_keys = torch.tanh(note_states @ attention.note_projection.weight.T + attention.note_projection.bias)
    note_keys = note_keys.view(batch_size, num_tokens, num_heads, hidden_size // num_heads)
    queries = synonym_vectors @ attention.synonym_projection.weight.T + attention.synonym_projection.bias
    scores = torch.einsum("bnjk,cjk->bcjn", note_keys, queries)
    scores = scores.masked_fill(~attention_mask.bool()[:, None, None, :], float("-inf"))
    weights = torch.softmax(scores, dim=-1)
    per_synonym = torch.einsum("bcjn,bnd->bcjd", weights, note_states)
    return per_synonym.max(dim=2).values


def make_inputs(num_codes, num_heads, dtype, hidden_size=16, lengths=(9, 4, 1)):
    torch.manual_seed(num_codes * 10 + num_heads)
    config = MSMNConfig(hidden_size=hidden_size, num_synonyms=num_heads, representation_dropout=0.0)
    attention = MSMNMultiSynonymAttention(config).to(dtype)
    lengths = torch.tensor(lengths)
    attention_mask = (torch.arange(int(lengths.max())) < lengths[:, None]).long()
    note_states = torch.randn(len(lengths), int(lengths.max()), hidden_size, dtype=dtype)
    synonym_vectors = torch.randn(num_codes, num_heads, hidden_size, dtype=dtype)
    return attention, attention_mask, note_states, synonym_vectors


def run_fold(attention, attention_mask, note_states, synonym_vectors, chunked):
    # A budget of one score row per chunk forces many chunks (with checkpointing when grads flow).
    attention.memory_budget_bytes = 1 if chunked else float("inf")
    return attention(note_states, attention_mask, attention.synonym_projection(synonym_vectors))


@pytest.mark.parametrize("chunked", [False, True])
@pytest.mark.parametrize("num_heads", [1, 4, 8])
@pytest.mark.parametrize("num_codes", [1, 7, 3000])
def test_float32_outputs(num_codes, num_heads, chunked):
    attention, mask, states, synonyms = make_inputs(num_codes, num_heads, torch.float32)
    with torch.no_grad():
        expected = einsum_attention(states, mask, synonyms, attention)
        actual = run_fold(attention, mask, states, synonyms, chunked)
    torch.testing.assert_close(actual, expected, rtol=0, atol=1e-5)


@pytest.mark.parametrize("chunked", [False, True])
@pytest.mark.parametrize("num_heads", [1, 4, 8])
@pytest.mark.parametrize("num_codes", [1, 7, 3000])
def test_float64_outputs_and_gradients(num_codes, num_heads, chunked):
    attention, mask, states, synonyms = make_inputs(num_codes, num_heads, torch.float64)
    inputs = [states.requires_grad_(), synonyms.requires_grad_(), *attention.parameters()]
    upstream = torch.randn(states.shape[0], num_codes, states.shape[2], dtype=torch.float64)

    expected = einsum_attention(states, mask, synonyms, attention)
    expected_grads = torch.autograd.grad((expected * upstream).sum(), inputs)
    actual = run_fold(attention, mask, states, synonyms, chunked)
    actual_grads = torch.autograd.grad((actual * upstream).sum(), inputs)

    torch.testing.assert_close(actual, expected, rtol=0, atol=1e-10)
    for actual_grad, expected_grad in zip(actual_grads, expected_grads):
        torch.testing.assert_close(actual_grad, expected_grad, rtol=0, atol=1e-10)


def test_chunk_size_follows_memory_budget(monkeypatch):
    attention, mask, states, synonyms = make_inputs(50, 4, torch.float32)
    calls = []
    original_matmul = torch.matmul
    monkeypatch.setattr(torch, "matmul", lambda a, b: calls.append(a.shape[1]) or original_matmul(a, b))
    queries = attention.synonym_projection(synonyms)
    # one code's scores: B·M·N floats = 3·4·9·4 bytes = 432 bytes → 20 codes in 8,640 bytes
    attention.memory_budget_bytes = 8640
    attention(states, mask, queries)
    assert calls == [20, 20, 10]
    calls.clear()
    attention.memory_budget_bytes = 10**9
    attention(states, mask, queries)
    assert calls == [50]


def test_padding_gets_no_weight_and_empty_note_is_defined():
    attention, mask, states, synonyms = make_inputs(3, 2, torch.float64, lengths=(4, 0))
    noisy = states.clone()
    noisy[0, 4:] += 50.0  # padding states of note 0 must not matter
    queries = attention.synonym_projection(synonyms)
    clean = attention(states, mask, queries)
    torch.testing.assert_close(attention(noisy, mask, queries)[0], clean[0])
    # An all-padding note attends uniformly (as the reference's −1e6 does): the mean of its states.
    expected_empty = states[1].mean(dim=0).expand(3, -1)
    torch.testing.assert_close(clean[1], expected_empty)


def test_evidence_rebuilds_each_dimension_from_its_winning_head():
    # float64 so that the winning head of every dimension is unambiguous
    attention, mask, states, synonyms = make_inputs(7, 4, torch.float64)
    with torch.no_grad():
        token_weights, synonym_shares = attention.evidence(states, mask, attention.synonym_projection(synonyms))
        # the oracle's per-head weights and values, written out again from docs/model.md
        note_keys = torch.tanh(states @ attention.note_projection.weight.T + attention.note_projection.bias)
        note_keys = note_keys.view(*states.shape[:2], 4, -1)
        queries = synonyms @ attention.synonym_projection.weight.T + attention.synonym_projection.bias
        scores = torch.einsum("bnjk,cjk->bcjn", note_keys, queries).masked_fill(~mask.bool()[:, None, None, :], float("-inf"))
        weights = torch.softmax(scores, dim=-1)  # (B, C, M, N)
        winner = torch.einsum("bcjn,bnd->bcjd", weights, states).argmax(dim=2)  # (B, C, d)
    expected_shares = torch.stack([(winner == j).double().mean(dim=-1) for j in range(4)], dim=-1)
    torch.testing.assert_close(synonym_shares, expected_shares)
    # token weight = the mean over dimensions k of α[winning head of k, n], written as loops
    expected_weights = torch.zeros_like(token_weights)
    for b in range(3):
        for c in range(7):
            for k in range(states.shape[2]):
                expected_weights[b, c] += weights[b, c, winner[b, c, k]] / states.shape[2]
    torch.testing.assert_close(token_weights, expected_weights)
    torch.testing.assert_close(token_weights.sum(dim=-1), torch.ones(3, 7, dtype=torch.float64))
    assert (token_weights * (1 - mask[:, None, :])).abs().max() == 0  # padding gets no weight


def test_backward_under_bf16_autocast():
    # train.py --bf16 runs the model under autocast; the custom backward recomputes in the same dtype
    torch.manual_seed(0)
    attention = MSMNMultiSynonymAttention(MSMNConfig(hidden_size=16, num_synonyms=4, representation_dropout=0.0))
    note_states = torch.randn(2, 10, 16, requires_grad=True)
    attention_mask = torch.ones(2, 10, dtype=torch.long)
    attention_mask[1, 7:] = 0
    synonym_queries = torch.randn(5, 4, 4, requires_grad=True)
    gradients = []
    for autocast in (False, True):
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
            values = attention(note_states, attention_mask, synonym_queries)
        assert values.dtype == (torch.bfloat16 if autocast else torch.float32)
        gradients.append(torch.cat([grad.flatten() for grad in torch.autograd.grad(values.float().sum(), (
            note_states, synonym_queries, attention.note_projection.weight))]))
    # cosine 0.99998 measured; bf16 keeps 8 bits of mantissa
    assert torch.nn.functional.cosine_similarity(gradients[0], gradients[1], dim=0) > 0.999
