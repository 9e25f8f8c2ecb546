"""Code-term encoding: every term padded to the longest (one encoder call) vs length buckets.

Shapes: codiesp-d (the real 2,557 CodiEsp diagnosis codes × M = 4 terms, embedding 100 → BiLSTM
256, d = 256) and MIMIC-full (C = 8,929, M = 4, 2-layer BiLSTM 256, d = 512; each code copies the
term lengths and repeated terms of a random CodiEsp code, with its own random words). Passes:
forward + backward in training mode (dropout on, as every training step runs it) and forward
without gradients in evaluation mode (as the pipeline's cached code encoding; the buckets then
encode each distinct term once). fp32 on CPU, each measurement in a fresh process.
`--training-step` also times one whole training step at the MIMIC-full shape (B notes of N
tokens, forward + backward, R-Drop's doubled batch not included), scoring every code, and scoring
the batch's gold codes plus 256 random others (`train.py --sampled_negative_codes 256`).

    python benchmarks/term_encoding.py [--shapes codiesp-d mimic-full] [--training-step --batch-size 16 --tokens 4000]
        [--sampled-negative-codes 0 256]
"""

import argparse
import json
import os
import subprocess
import sys

import torch

sys.path.insert(0, os.path.dirname(__file__))
from _measure import in_subprocess, measure  # noqa: E402

from modeling_msmn import MSMNConfig, MSMNForSequenceClassification, build_code_term_ids, build_tokenizer  # noqa: E402
from modeling_msmn import build_vocabulary, split_words  # noqa: E402

SHAPES = {  # codes (None: the real CodiEsp ones), rnn_dim, num_lstm_layers, hidden_size
    "codiesp-d": (None, 256, 1, 256),
    "mimic-full": (8929, 256, 2, 512),
}
NUM_SYNONYMS, TERM_LENGTH = 4, 30


def codiesp_term_ids():
    """(tokenizer, term ids (C·M, 30)) of the terms of every CodiEsp diagnosis code (train ∪ dev ∪
    test: 2,557 codes, the shape this benchmark has always reported), as train.py builds them."""
    from datasets_scripts.synonyms.icd10cm import open_icd10cm_synonyms
    from datasets_scripts.codiesp import read_shipped_split

    codes = sorted({code for split in ("train", "dev", "test") for record in read_shipped_split(split)
                    for code in record["diagnosis_codes"]})
    code_terms = open_icd10cm_synonyms(codes, 0, NUM_SYNONYMS - 1)[0]
    words = [word for code in codes for term in code_terms[code] for word in split_words(term)]
    tokenizer = build_tokenizer(build_vocabulary([], extra_words=words))
    term_ids, _ = build_code_term_ids(tokenizer, codes, code_terms, NUM_SYNONYMS, TERM_LENGTH, 0)
    return tokenizer, torch.tensor(term_ids)


def mimic_shaped_term_ids(codiesp_ids, pad_token_id, num_codes, vocab_size=50_000):
    """num_codes codes, each with the term lengths and repeats of a random CodiEsp code, new words."""
    generator = torch.Generator().manual_seed(0)
    templates = codiesp_ids.view(-1, NUM_SYNONYMS, TERM_LENGTH)
    chosen = templates[torch.randint(len(templates), (num_codes,), generator=generator)]  # (C, M, 30)
    fresh = torch.randint(1, vocab_size, (num_codes, NUM_SYNONYMS * TERM_LENGTH), generator=generator)
    rows = []
    for code_terms, code_words in zip(chosen, fresh):
        words, local = torch.unique(code_terms, return_inverse=True)  # same word, same new word
        new_words = code_words[: len(words)].clone()
        new_words[words == pad_token_id] = pad_token_id
        rows.append(new_words[local])
    return torch.cat(rows).view(-1, TERM_LENGTH)


def build_model(shape):
    num_codes, rnn_dim, num_layers, hidden_size = SHAPES[shape]
    tokenizer, term_ids = codiesp_term_ids()
    vocab_size = len(tokenizer)
    if num_codes is not None:
        term_ids = mimic_shaped_term_ids(term_ids, tokenizer.pad_token_id, num_codes)
        vocab_size = 50_000
    num_codes = len(term_ids) // NUM_SYNONYMS
    config = MSMNConfig(vocab_size=vocab_size, pad_token_id=tokenizer.pad_token_id, embedding_dim=100,
                        rnn_dim=rnn_dim, num_lstm_layers=num_layers, hidden_size=hidden_size,
                        num_synonyms=NUM_SYNONYMS, term_length=TERM_LENGTH,
                        id2label={i: f"C{i}" for i in range(num_codes)})
    torch.manual_seed(0)
    return MSMNForSequenceClassification(config, code_term_ids=term_ids)


def padded_term_vectors(msmn):
    """The formulation before buckets: every term padded to the longest one, one encoder call."""
    lengths = (msmn.code_term_ids != msmn.config.pad_token_id).sum(dim=1).clamp(min=1)
    term_ids = msmn.code_term_ids[:, : int(lengths.max())]
    return msmn.encoder(term_ids, lengths).max(dim=1).values


def run_one(shape, implementation, phase):
    model = build_model(shape)
    encode = model.msmn.encode_terms if implementation == "bucketed" else lambda: padded_term_vectors(model.msmn)
    if phase == "forward+backward":
        model.train()

        def step():
            encode().sum().backward()
    else:
        model.eval()

        def step():
            with torch.no_grad():
                encode()

    step()  # warm-up: oneDNN primitives, allocator
    return measure(step)


def run_training_step(batch_size, num_tokens, sampled_negative_codes=0):
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # train.py, at the top level
    from msmn.training.trainer import sampled_codes

    model = build_model("mimic-full").train()
    generator = torch.Generator().manual_seed(0)
    input_ids = torch.randint(2, model.config.vocab_size, (batch_size, num_tokens), generator=generator)
    labels = (torch.rand(batch_size, model.config.num_labels, generator=generator) < 0.002).float()
    torch.manual_seed(0)

    def step():
        model.zero_grad()
        if sampled_negative_codes:  # train.py --sampled_negative_codes: the batch's gold codes and random others
            code_indices = sampled_codes(labels, sampled_negative_codes)
            loss = model(input_ids=input_ids, labels=labels[:, code_indices], code_indices=code_indices).loss
        else:
            loss = model(input_ids=input_ids, labels=labels).loss
        loss.backward()

    return measure(step)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--shapes", nargs="+", default=list(SHAPES), choices=list(SHAPES))
    parser.add_argument("--training-step", action="store_true")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--tokens", type=int, default=4000)
    parser.add_argument("--one", nargs=3, help=argparse.SUPPRESS)
    parser.add_argument("--sampled-negative-codes", type=int, nargs="+", default=[0, 256],
                        help="with --training-step: every code (0), or the gold codes and this many others")
    parser.add_argument("--one-step", nargs=3, type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        print(json.dumps(run_one(*args.one)))
        return
    if args.one_step:
        print(json.dumps(run_training_step(*args.one_step)))
        return

    load = subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, fp32; load: {load}")
    print(f"{'shape':<11} {'pass':<17} | {'padded s':>9}{'MiB':>7} | {'buckets s':>10}{'MiB':>7} | {'faster':>7}")
    for shape in args.shapes:
        for phase in ("forward+backward", "forward"):
            padded = in_subprocess(__file__, "--one", shape, "padded", phase)
            bucketed = in_subprocess(__file__, "--one", shape, "bucketed", phase)
            # padded forward+backward at mimic-full peaks near 24 GiB: on a 24 GiB machine it may be killed
            padded_text = (f"{padded['seconds']:>9.2f}{padded['peak_mib']:>7.0f}" if "seconds" in padded
                           else f"{'failed (out of memory?)':>16}")
            ratio = f"{padded['seconds'] / bucketed['seconds']:>6.1f}×" if "seconds" in padded else ""
            print(f"{shape:<11} {phase:<17} | {padded_text} | {bucketed['seconds']:>10.2f}{bucketed['peak_mib']:>7.0f} | {ratio}")
            sys.stdout.flush()
    for sampled in args.sampled_negative_codes if args.training_step else ():
        step = in_subprocess(__file__, "--one-step", str(args.batch_size), str(args.tokens), str(sampled), timeout=3600)
        codes = "every code" if sampled == 0 else f"gold codes + {sampled} sampled negatives"
        print(f"whole training step, mimic-full, B = {args.batch_size}, N = {args.tokens} (buckets), {codes}: "
              f"{step['seconds']:.1f} s, peak {step['peak_mib']:.0f} MiB")
        sys.stdout.flush()
    print(f"load after: {subprocess.run(['uptime'], capture_output=True, text=True).stdout.strip()}")


if __name__ == "__main__":
    main()
