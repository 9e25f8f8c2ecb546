"""Multi-synonym attention: the authors' einsum formulation vs ours (fold, chunked when needed).

Prints time and peak memory of forward and forward+backward, fp32 on CPU, for the top-50 shape
(B=16, N=4,000, C=50, M=8, d=512) and the full shape (B=2…16, N=4,000, C=8,929, M=4, d=512),
each measurement in a fresh process. The einsum formulation is skipped where its B×C×N×M tensors
would not fit in this machine's memory.

    python benchmarks/attention.py [--batch-sizes 2 4 16] [--tokens 4000]
"""

import argparse
import json
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(__file__))
from _measure import in_subprocess, measure  # noqa: E402

from modeling_msmn import MSMNConfig  # noqa: E402
from modeling_msmn.modeling_msmn import MSMNMultiSynonymAttention  # noqa: E402


def einsum_attention(note_states, attention_mask, synonym_queries, attention):
    """The authors' layout (the authors' code): scores (B, C, N, M), softmax over N, −1e6 mask."""
    batch_size, num_tokens, hidden_size = note_states.shape
    note_keys = torch.tanh(attention.note_projection(note_states))
    note_keys = note_keys.view(batch_size, num_tokens, attention.num_heads, attention.head_dim)
    scores = torch.einsum("abcd,ecd->aebc", note_keys, synonym_queries)
    scores = scores.masked_fill(~attention_mask.bool()[:, None, :, None], -1e6)
    weights = torch.softmax(scores, dim=2)
    per_synonym = torch.einsum("abd,aebc->aedc", note_states, weights)
    return attention.representation_dropout(per_synonym.max(-1)[0])


def run_one(formulation, batch_size, num_tokens, num_codes, num_heads, backward):
    torch.manual_seed(0)
    torch.set_num_threads(os.cpu_count())
    attention = MSMNMultiSynonymAttention(MSMNConfig(hidden_size=512, num_synonyms=num_heads))
    note_states = torch.randn(batch_size, num_tokens, 512, requires_grad=backward)
    lengths = torch.randint(num_tokens // 2, num_tokens + 1, (batch_size,))
    lengths[0] = num_tokens
    attention_mask = (torch.arange(num_tokens) < lengths[:, None]).long()
    synonym_vectors = torch.randn(num_codes, num_heads, 512, requires_grad=backward)

    def step():
        with torch.set_grad_enabled(backward):
            queries = attention.synonym_projection(synonym_vectors)
            if formulation == "einsum":
                output = einsum_attention(note_states, attention_mask, queries, attention)
            else:
                output = attention(note_states, attention_mask, queries)
            if backward:
                output.sum().backward()

    return measure(step)


def einsum_fits(batch_size, num_tokens, num_codes, num_heads, backward):
    """The einsum path holds ~3 (forward) or ~5 (with backward) fp32 B×C×N×M tensors at once."""
    tensor_bytes = 4 * batch_size * num_tokens * num_codes * num_heads
    available = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    return (5 if backward else 3) * tensor_bytes < 0.8 * available


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[2, 4, 16], help="full-shape batch sizes")
    parser.add_argument("--tokens", type=int, default=4000)
    parser.add_argument("--one", nargs=6, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        formulation, *sizes, backward = args.one
        print(json.dumps(run_one(formulation, *map(int, sizes), backward == "1")))
        return

    shapes = [("top-50", 16, args.tokens, 50, 8)] + [("full", b, args.tokens, 8929, 4) for b in args.batch_sizes]
    print(f"torch {torch.__version__}, {os.cpu_count()} CPU threads, fp32, d=512; time in s, peak memory in MiB")
    header = f"{'shape':<7}{'B':>4}{'pass':>10} | {'einsum s':>9}{'MiB':>8} | {'ours s':>8}{'MiB':>8} | {'speed×':>7}{'memory×':>8}"
    print(header)
    print("-" * len(header))
    for name, batch_size, num_tokens, num_codes, num_heads in shapes:
        for backward in (False, True):
            sizes = [str(batch_size), str(num_tokens), str(num_codes), str(num_heads), "1" if backward else "0"]
            ours = in_subprocess(__file__, "--one", "fold", *sizes)
            if einsum_fits(batch_size, num_tokens, num_codes, num_heads, backward):
                einsum = in_subprocess(__file__, "--one", "einsum", *sizes)
            else:
                einsum = {"error": "does not fit in memory"}
            label = "fwd+bwd" if backward else "fwd"
            if "seconds" in einsum:
                print(
                    f"{name:<7}{batch_size:>4}{label:>10} | {einsum['seconds']:>9.2f}{einsum['peak_mib']:>8.0f} | "
                    f"{ours['seconds']:>8.2f}{ours['peak_mib']:>8.0f} | "
                    f"{einsum['seconds'] / ours['seconds']:>7.2f}{einsum['peak_mib'] / max(ours['peak_mib'], 1):>8.1f}"
                )
            else:
                print(
                    f"{name:<7}{batch_size:>4}{label:>10} | {'—':>9}{'—':>8} | "
                    f"{ours['seconds']:>8.2f}{ours['peak_mib']:>8.0f} | einsum: {einsum.get('error', einsum)}"
                )
            sys.stdout.flush()


if __name__ == "__main__":
    main()
