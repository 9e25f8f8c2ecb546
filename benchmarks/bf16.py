"""bfloat16 against float32 on one device: speed, memory, and how far the outputs move.

At the MIMIC-III full preset's shape (C = 8,929 codes, M = 4 terms of 3–12 words, 2-layer BiLSTM
R = 256, d = 512; random weights and notes, 50,000-word vocabulary):

- training step (forward + backward of the BCE loss, B notes of N tokens), scoring every code and
  scoring the batch's gold codes plus 256 others (`train.py --sampled_negative_codes 256`), in
  float32 and under `torch.autocast(dtype=torch.bfloat16)` (what `train.py --bf16` does);
- evaluation (no gradients, code encoding cached), notes per second, float32 model, float32 under
  bf16 autocast, and the model cast to bfloat16;
- agreement: the largest and the mean absolute difference of the logits (autocast vs float32,
  same weights and notes), the share of each note's 15 best codes that both rank there, and the
  cosine between the two runs' parameter gradients.

With `--checkpoint`, a folder that `python train.py` saved (CodiEsp), also the metrics of its dev and
test splits (read from the shipped files) in float32 and under bf16 autocast, at its tuned threshold.

Needs a CUDA GPU or a CPU with bf16 arithmetic (AVX512-BF16, AMX); prints the device and the load.

    python benchmarks/bf16.py [--device cuda] [--batch-size 16] [--tokens 4000] [--eval-tokens 2000]
        [--checkpoint msmn-codiesp-d-50]
"""

import argparse
import contextlib
import gzip
import json
import random
import subprocess
import time
from pathlib import Path

import numpy as np
import torch
from transformers import AutoTokenizer

from modeling_msmn import MSMNConfig, MSMNForSequenceClassification, build_code_term_ids, build_tokenizer
from msmn.evaluation.metrics import gold_indices, icd_metrics, label_matrix, logit_threshold, mean_average_precision
from msmn.training.trainer import sampled_codes

CODIESP = Path(__file__).parents[1] / "datasets_scripts" / "data" / "codiesp"

VOCABULARY_SIZE, NUM_CODES, NUM_SYNONYMS = 50_000, 8929, 4


def build_model(device: str, num_codes: int, **settings) -> MSMNForSequenceClassification:
    rng = random.Random(0)
    words = [f"w{i}" for i in range(VOCABULARY_SIZE)]
    tokenizer = build_tokenizer(["[PAD]", "[UNK]", *words])
    codes = [f"C{i:04d}" for i in range(num_codes)]
    code_terms = {code: [" ".join(rng.choices(words, k=rng.randint(3, 12))) for _ in range(6)] for code in codes}
    term_ids, terms = build_code_term_ids(tokenizer, codes, code_terms, NUM_SYNONYMS)
    config = MSMNConfig(vocab_size=len(tokenizer), pad_token_id=0, id2label=dict(enumerate(codes)), code_terms=terms,
                        rnn_dim=256, num_lstm_layers=2, hidden_size=512, num_synonyms=NUM_SYNONYMS, embedding_dim=100,
                        **settings)
    torch.manual_seed(0)
    return MSMNForSequenceClassification(config, code_term_ids=term_ids).to(device)


def synchronize(device: str):
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def timed(run, device: str, repeats: int = 3) -> dict:
    """Best seconds of `repeats` calls after one warm-up, and the peak device memory (CUDA)."""
    run()
    synchronize(device)
    if device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        synchronize(device)
        best = min(best, time.perf_counter() - start)
    peak = round(torch.cuda.max_memory_allocated() / 2**20) if device.startswith("cuda") else None
    return {"seconds": round(best, 4), "peak_mib": peak}


def autocast(device: str, enabled: bool):
    if not enabled:
        return contextlib.nullcontext()
    return torch.autocast(device_type=torch.device(device).type, dtype=torch.bfloat16)


def checkpoint_metrics(folder: str, device: str) -> dict:
    """Dev and test metrics of a CodiEsp checkpoint (English diagnoses), float32 and bf16 autocast."""
    model = MSMNForSequenceClassification.from_pretrained(folder).to(device).eval()
    tokenizer = AutoTokenizer.from_pretrained(folder)
    codes = [model.config.id2label[i] for i in range(model.config.num_labels)]
    results = {}
    for split in ("dev", "test"):
        with gzip.open(CODIESP / f"{split}.jsonl.gz", "rt", encoding="utf-8") as lines:
            records = [json.loads(line) for line in lines]
        labels = label_matrix([record["diagnosis_codes"] for record in records], codes)
        gold = gold_indices([record["diagnosis_codes"] for record in records], codes, set())[0]
        for bf16 in (False, True):
            logits = []
            for start in range(0, len(records), 16):
                inputs = tokenizer([r["text_en"] for r in records[start : start + 16]], padding=True, truncation=True,
                                   return_tensors="pt").to(device)
                with torch.no_grad(), autocast(device, bf16):
                    logits.append(model(**inputs).logits.double().cpu().numpy())
            logits = np.concatenate(logits)
            metrics = icd_metrics(logits, labels, logit_threshold(model.config.threshold))
            metrics["map"] = mean_average_precision(logits, gold, [len(r["diagnosis_codes"]) for r in records])
            keys = ("macro_auc", "micro_auc", "micro_f1", "precision_at_5", "precision_at_8", "map")
            setting = f"{split}_{'bf16_autocast' if bf16 else 'fp32'}"
            results[setting] = {key: round(100 * metrics[key], 2) for key in keys if key in metrics}
            print(setting, results[setting], flush=True)
    return results


def training_steps(model, input_ids, labels, device: str) -> dict:
    """Seconds and memory of a training step, every code or gold + 256 sampled, in fp32 and bf16 autocast."""
    results = {}
    model.train()
    for sampled in (0, 256):
        for bf16 in (False, True):
            def step():
                model.zero_grad(set_to_none=True)
                with autocast(device, bf16):
                    if sampled:
                        code_indices = sampled_codes(labels, sampled)
                        loss = model(input_ids=input_ids, labels=labels[:, code_indices], code_indices=code_indices).loss
                    else:
                        loss = model(input_ids=input_ids, labels=labels).loss
                loss.backward()
            key = f"train_step_{'every_code' if not sampled else 'sampled_256'}_{'bf16_autocast' if bf16 else 'fp32'}"
            try:
                results[key] = timed(step, device)
            except Exception as error:  # e.g. a kernel without bf16 support on this device
                results[key] = {"error": f"{type(error).__name__}: {str(error)[:300]}"}
            print(key, results[key], flush=True)
    return results


def agreement(model, input_ids, labels, eval_ids, device: str, num_codes: int) -> dict:
    """How far bf16 autocast moves gradients and logits from fp32: training mode (cuDNN's LSTM backward
    needs it) with dropout off, so that both precisions compute the same function."""
    try:
        exact = build_model(device, num_codes, embedding_dropout=0.0, lstm_dropout=0.0, representation_dropout=0.0)
        gradients = {}
        for bf16 in (False, True):
            exact.zero_grad(set_to_none=True)
            with autocast(device, bf16):
                loss = exact(input_ids=input_ids[:4, : eval_ids.shape[1]], labels=labels[:4]).loss
            loss.backward()
            gradients[bf16] = torch.cat([p.grad.float().flatten() for p in exact.parameters() if p.grad is not None])
        del exact
        model.eval()
        with torch.no_grad():
            reference = model(input_ids=eval_ids).logits.float()
            with autocast(device, True):
                mixed = model(input_ids=eval_ids).logits.float()
        top_reference, top_mixed = reference.topk(15).indices, mixed.topk(15).indices
        overlap = [len(set(a.tolist()) & set(b.tolist())) / 15 for a, b in zip(top_reference, top_mixed)]
        results = {
            "gradient_cosine": round(float(torch.nn.functional.cosine_similarity(gradients[False], gradients[True], dim=0)), 5),
            "logits_max_abs_difference": round(float((reference - mixed).abs().max()), 5),
            "logits_mean_abs_difference": round(float((reference - mixed).abs().mean()), 6),
            "logits_std": round(float(reference.std()), 5),
            "top15_overlap": round(sum(overlap) / len(overlap), 4),
        }
    except Exception as error:
        results = {"agreement": {"error": f"{type(error).__name__}: {str(error)[:300]}"}}
    print("agreement", results, flush=True)
    return results


def evaluation_speed(model, eval_ids, device: str, num_codes: int, batch_size: int) -> dict:
    """Notes per second in evaluation: fp32, bf16 autocast, and the model's weights cast to bf16."""
    results = {}
    for mode in ("fp32", "bf16_autocast", "bf16_weights"):
        evaluated = model if mode != "bf16_weights" else build_model(device, num_codes).eval().to(torch.bfloat16)

        def evaluate():
            with torch.no_grad(), autocast(device, mode == "bf16_autocast"):
                evaluated(input_ids=eval_ids).logits.float().cpu()
        try:
            timing = timed(evaluate, device)
            results[f"eval_{mode}"] = {**timing, "notes_per_second": round(batch_size / timing["seconds"], 2)}
        except Exception as error:
            results[f"eval_{mode}"] = {"error": f"{type(error).__name__}: {str(error)[:300]}"}
        print(f"eval_{mode}", results[f"eval_{mode}"], flush=True)
    return results


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--tokens", type=int, default=4000)
    parser.add_argument("--eval-tokens", type=int, default=2000)
    parser.add_argument("--codes", type=int, default=NUM_CODES)
    parser.add_argument("--checkpoint", help="a CodiEsp checkpoint folder: also its dev/test metrics in both precisions")
    args = parser.parse_args()
    device = args.device
    name = torch.cuda.get_device_name(device) if device.startswith("cuda") else torch.backends.cpu.get_cpu_capability()
    load = subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()
    print(f"torch {torch.__version__}, device {device} ({name}); load: {load}")
    checkpoint = checkpoint_metrics(args.checkpoint, device) if args.checkpoint else {}

    model = build_model(device, args.codes)
    generator = torch.Generator().manual_seed(0)
    input_ids = torch.randint(2, VOCABULARY_SIZE, (args.batch_size, args.tokens), generator=generator).to(device)
    labels = (torch.rand(args.batch_size, args.codes, generator=generator) < 0.002).float().to(device)
    eval_ids = input_ids[:, : args.eval_tokens]
    results = {"device": name, "batch_size": args.batch_size, "tokens": args.tokens, "codes": args.codes, **checkpoint}
    results |= training_steps(model, input_ids, labels, device)
    results |= agreement(model, input_ids, labels, eval_ids, device, args.codes)
    results |= evaluation_speed(model, eval_ids, device, args.codes, args.batch_size)
    print(json.dumps(results))


if __name__ == "__main__":
    main()
