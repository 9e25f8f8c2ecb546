"""Coding speed of the `icd-coding` pipeline on CPU: notes per second, N = 2,000 tokens.

Two model sizes with the MIMIC-III presets' shapes and random weights (speed does not depend on
what the weights learned): top-50 (50 codes, R = d = 512, M = 8) and full (8,929 codes, 2-layer
BiLSTM R = 256, d = 512, M = 4); batch 1 and batch 16. Each setting runs in a fresh process. Notes
are 2,000 words drawn from a 20,000-word vocabulary; each note gets its 15 most probable codes
(about MIMIC-III's mean) with 3 evidence spans each, so the timing covers tokenisation, the model,
the evidence and the output. The synonym vectors (once per pipeline) are timed on their own.
Each setting in float32 and with the model in bfloat16 (`model.to(torch.bfloat16)`): bf16 pays only
on CPUs with bf16 arithmetic (AVX512-BF16, AMX); the load (`uptime`) is printed with the figures.

    python benchmarks/inference.py [--notes 32] [--tokens 2000] [--dtypes float32 bfloat16]
"""

import argparse
import json
import os
import random
import subprocess
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(__file__))
from _measure import in_subprocess, measure  # noqa: E402

from modeling_msmn import MSMNConfig, MSMNForSequenceClassification, build_code_term_ids, build_tokenizer  # noqa: E402
from modeling_msmn.pipeline_msmn import ICDCodingPipeline  # noqa: E402

SHAPES = {
    "top-50": dict(num_codes=50, rnn_dim=512, num_lstm_layers=1, hidden_size=512, num_synonyms=8),
    "full": dict(num_codes=8929, rnn_dim=256, num_lstm_layers=2, hidden_size=512, num_synonyms=4),
}
VOCABULARY_SIZE = 20_000


def run_one(shape: str, batch_size: int, num_notes: int, num_tokens: int, dtype: str) -> dict:
    settings = dict(SHAPES[shape])
    num_codes = settings.pop("num_codes")
    rng = random.Random(0)
    words = [f"w{i}" for i in range(VOCABULARY_SIZE)]
    tokenizer = build_tokenizer(["[PAD]", "[UNK]", *words])
    codes = [f"C{i:04d}" for i in range(num_codes)]
    code_terms = {code: [" ".join(rng.choices(words, k=rng.randint(3, 12))) for _ in range(6)] for code in codes}
    term_ids, terms = build_code_term_ids(tokenizer, codes, code_terms, settings["num_synonyms"])
    config = MSMNConfig(vocab_size=len(tokenizer), pad_token_id=tokenizer.pad_token_id, id2label=dict(enumerate(codes)),
                        code_terms=terms, **settings)
    torch.manual_seed(0)
    model = MSMNForSequenceClassification(config, code_term_ids=term_ids).eval().to(getattr(torch, dtype))
    coder = ICDCodingPipeline(model=model, tokenizer=tokenizer, device="cpu")
    notes = [" ".join(rng.choices(words, k=num_tokens)) for _ in range(num_notes)]

    start = time.perf_counter()
    with torch.no_grad():
        model.msmn.code_encoding()  # the synonym vectors, computed once and cached
    synonym_seconds = time.perf_counter() - start
    coder(notes[:batch_size], batch_size=batch_size, top_k=15)  # warm-up
    result = measure(lambda: coder(notes, batch_size=batch_size, top_k=15))
    return {"synonym_seconds": synonym_seconds, "notes_per_second": num_notes / result["seconds"],
            "peak_mib": result["peak_mib"]}


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--notes", type=int, default=32)
    parser.add_argument("--tokens", type=int, default=2000)
    parser.add_argument("--dtypes", nargs="+", default=["float32", "bfloat16"], choices=["float32", "bfloat16"])
    parser.add_argument("--one", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        shape, batch_size, dtype = args.one
        print(json.dumps(run_one(shape, int(batch_size), args.notes, args.tokens, dtype)))
        return

    def load():
        return subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()

    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, CPU capability "
          f"{torch.backends.cpu.get_cpu_capability()}, oneDNN bf16: {torch.ops.mkldnn._is_mkldnn_bf16_supported()}; "
          f"N = {args.tokens} tokens, {args.notes} notes per setting, top 15 codes with 3 evidence spans each; "
          f"load: {load()}")
    print("\n| model | dtype | batch | notes/s | ms per note | peak memory added (MiB) | synonym vectors, once (s) |")
    print("|---|---|---|---|---|---|---|")
    for shape in SHAPES:
        for dtype in args.dtypes:
            for batch_size in (1, 16):
                result = in_subprocess(__file__, "--one", shape, str(batch_size), dtype, "--notes", str(args.notes),
                                       "--tokens", str(args.tokens))
                if "notes_per_second" not in result:
                    print(f"| {shape} | {dtype} | {batch_size} | failed: {result} | | | |")
                    continue
                print(f"| {shape} | {dtype} | {batch_size} | {result['notes_per_second']:.2f} "
                      f"| {1000 / result['notes_per_second']:.0f} | {result['peak_mib']:.0f} "
                      f"| {result['synonym_seconds']:.1f} |")
                sys.stdout.flush()
    print(f"load after: {load()}")


if __name__ == "__main__":
    main()
