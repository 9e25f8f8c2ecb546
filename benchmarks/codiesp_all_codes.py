"""Ranking every ICD-10-CM code for CodiEsp notes, codes never seen in training included, with the package's ranker.

A checkpoint trained with `--candidate_codes icd10cm` (the `codiesp-d` and `codiesp-d-all-codes`
presets) carries every ICD-10-CM code as a candidate, with its term matcher and two operating points
chosen on dev (`msmn.training.candidate_tuning`). This script scores CodiEsp-D's 250 test reports
with that ranker, as `pipeline(..., candidates="all")` does, and reports for each stored point MAP
over all gold codes (CodiEsp's official measure: a gold code outside the candidates is never
retrieved), P@8 and MAP over the assignments of codes absent from train ("unseen", with its 95%
bootstrap interval over the reports and "filtered": the report's other gold codes left out), both
in two stages (the point's shortlist re-scored by MSMN) and with every candidate re-scored. Beside
them: MSMN alone, MSMN + the train-frequency prior (β chosen on dev), term matching alone, random
scores (expected), and every (λ, β) of the dev trade-off between MAP and unseen MAP scored on test.
A checkpoint without candidates (trained before they were stored) gets them here, chosen on dev
exactly as train.py chooses them, and saved into its folder (`--rebuild` does so for any checkpoint).

Prints the time of building the ranker and of the candidates' code encoding (once per loaded
pipeline), the time per report and the peak memory of ranking the test reports (`ranker.rank`, and
the whole pipeline with evidence), with the load (`uptime`).

    python benchmarks/codiesp_all_codes.py [--checkpoint msmn-codiesp-d-all-codes] [--rebuild] [--device cuda]
"""

import argparse
import json
import os
import subprocess
import sys
import time
from collections import Counter

import numpy as np
import torch
from transformers import pipeline

sys.path.insert(0, os.path.dirname(__file__))
from _measure import measure  # noqa: E402

from datasets_scripts.codiesp import background_texts, read_shipped_split  # noqa: E402
from datasets_scripts.synonyms.icd10cm import candidate_code_terms  # noqa: E402
from msmn.evaluation.metrics import gold_indices  # noqa: E402
from msmn.training.candidate_tuning import (PRIOR_WEIGHTS, build_ranker, candidate_scores, note_batches,  # noqa: E402
                                            pareto_frontier, ranking_metrics)
from modeling_msmn.ranking_msmn import OperatingPoint  # noqa: E402


def uptime() -> str:
    return subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()


def random_ranking_metrics(gold_codes: list[list[str]], codes: list[str], train_codes: set[str], draws: int = 1000) -> dict:
    """The expected MAP, P@8 and unseen MAP of random scores: each note's gold codes at uniformly random
    distinct ranks (one draw is a poor baseline: one lucky rank 1 moves a one-code note's AP by 0.5)."""
    rng = np.random.default_rng(0)
    gold, totals, unseen, unseen_totals = gold_indices(gold_codes, codes, train_codes)

    def mean_ap(documents, document_totals):
        average_precisions = []
        for document, total in zip(documents, document_totals):
            if total:
                ranks = np.sort(rng.integers(1, len(codes) + 1, size=(draws, len(document))), axis=1)
                while (repeated := (np.diff(ranks, axis=1) == 0).any(axis=1)).any():  # distinct ranks
                    ranks[repeated] = np.sort(rng.integers(1, len(codes) + 1, size=(repeated.sum(), len(document))), axis=1)
                average_precisions.append(np.mean((np.arange(1, len(document) + 1) / ranks).sum(axis=1)) / total)
        return float(np.mean(average_precisions))

    hits_at_8 = [len(document) * min(8, len(codes)) / len(codes) / 8 for document in gold]  # expected P@8
    return {"map": mean_ap(gold, totals), "precision_at_8": float(np.mean(hits_at_8)),
            "map_unseen_codes": mean_ap(unseen, unseen_totals)}


def build_into(checkpoint: str, coder, splits, train_counts) -> dict:
    """Chooses the checkpoint's ranking of every ICD-10-CM code on dev, as train.py --candidate_codes icd10cm
    does, and saves it into the folder; the dev report."""
    candidate_terms, code_system = candidate_code_terms("icd10cm", coder.model.config.num_synonyms)
    started = time.perf_counter()
    ranker, report = build_ranker(coder.model, coder.tokenizer, candidate_terms, train_counts, background_texts(),
                                  [r["text_en"] for r in splits["dev"]], [r["diagnosis_codes"] for r in splits["dev"]],
                                  code_system)
    ranker.save_pretrained(checkpoint)
    print(f"candidates chosen on dev in {time.perf_counter() - started:.0f} s and saved into {checkpoint}")
    return report


def point_figures(ranker, model, batches, point, exhaustive, gold_codes, codes, train_codes) -> dict:
    """A stored operating point on test: two-stage (timed) and with every candidate re-scored."""
    result = {}
    timing = measure(lambda: result.update(scores=candidate_scores(ranker, model, batches, point)),
                     cuda=model.device.type == "cuda")
    return {"term_match_weight": point.term_match_weight, "prior_weight": point.prior_weight,
            "shortlist_size_chosen_on_dev": point.shortlist_size, "dev": point.dev,
            "test_two_stage": ranking_metrics(result["scores"], gold_codes, codes, train_codes),
            "test_every_candidate_rescored": ranking_metrics(exhaustive, gold_codes, codes, train_codes),
            "rank_seconds_per_note": round(timing["seconds"] / len(gold_codes), 4),
            "rank_peak_mib_added": round(timing["peak_mib"])}


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--checkpoint", default="msmn-codiesp-d-all-codes")
    parser.add_argument("--rebuild", action="store_true", help="choose the candidates' operating points on dev again")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--device", default="cpu", help="e.g. cuda: the model and the ranking run there")
    args = parser.parse_args()
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        parser.error(f"--device {args.device}: torch sees no CUDA GPU here; leave --device out (cpu).")
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, "
          f"{torch.cuda.get_device_name(args.device) if args.device.startswith('cuda') else 'CPU'}, fp32; load: {uptime()}")
    coder = pipeline("icd-coding", model=args.checkpoint, trust_remote_code=True, device=args.device)
    splits = {split: read_shipped_split(split) for split in ("train", "dev", "test")}
    train_counts = Counter(code for record in splits["train"] for code in record["diagnosis_codes"])
    report = None
    if args.rebuild or not coder.has_candidates():
        report = build_into(args.checkpoint, coder, splits, train_counts)
        coder = pipeline("icd-coding", model=args.checkpoint, trust_remote_code=True, device=args.device)  # fresh
    model, tokenizer, ranker = coder.model.eval(), coder.tokenizer, coder.candidate_ranker()
    encoding = measure(lambda: (ranker.encoding(model), ranker.term_vectors(model)), cuda=model.device.type == "cuda")
    codes, train_codes = ranker.codes(model.config), set(train_counts)
    print(f"{args.checkpoint}: {model.config.num_labels} label codes, {len(codes)} candidates; code encoding "
          f"{encoding['seconds']:.1f} s, {encoding['peak_mib']:.0f} MiB")
    texts = [record["text_en"] for record in splits["test"]]
    gold_codes = [record["diagnosis_codes"] for record in splits["test"]]
    batches = list(note_batches(tokenizer, texts, model.config.max_note_tokens, args.batch_size))
    msmn_logits = candidate_scores(ranker, model, batches, OperatingPoint(0.0, 0.0))  # every candidate re-scored
    with torch.no_grad():
        term_matches = np.concatenate([ranker.first_stage(model, ids.to(model.device), OperatingPoint(1.0, 0.0))
                                       .float().cpu().numpy() for ids, _ in batches])
    prior = ranker.prior().numpy()

    def test(term_match_weight, prior_weight):
        return ranking_metrics(msmn_logits + term_match_weight * term_matches + prior_weight * prior, gold_codes, codes,
                               train_codes)

    results = {"test_gold_assignments_among_candidates": f"{sum(map(len, gold_indices(gold_codes, codes, train_codes)[0]))}"
                                                         f" of {sum(map(len, gold_codes))}",
               "msmn": test(0.0, 0.0), "term_matching": ranking_metrics(term_matches, gold_codes, codes, train_codes),
               "random_scores_expected": random_ranking_metrics(gold_codes, codes, train_codes)}
    for name, point in ranker.operating_points.items():
        exhaustive = msmn_logits + point.term_match_weight * term_matches + point.prior_weight * prior
        results[f"operating_point_{name}"] = point_figures(ranker, model, batches, point, exhaustive, gold_codes, codes,
                                                           train_codes)
    if report is not None:  # chosen on dev here: the prior alone, and the dev trade-off scored on test
        results["dev_map_term_matching_by_longest_ngram"] = report["dev_map_term_matching_by_longest_ngram"]
        grid = report["dev_grid"]
        best_prior = max(PRIOR_WEIGHTS, key=lambda weight: (grid[0.0, weight][0], -weight))
        results[f"msmn_with_prior_{best_prior}"] = test(0.0, best_prior)
        frontier = pareto_frontier({w: f[0] for w, f in grid.items()}, {w: f[1] for w, f in grid.items()})
        results["dev_frontier"] = [{"weights": weights, "dev_map": round(grid[weights][0], 4),
                                    "dev_map_unseen_codes": round(grid[weights][1], 4), "test": test(*weights)}
                                   for weights in frontier]
    timing = measure(lambda: coder(texts, candidates="all", batch_size=args.batch_size), cuda=model.device.type == "cuda")
    results["pipeline_seconds_per_note"] = round(timing["seconds"] / len(texts), 4)
    results["pipeline_peak_mib_added"] = round(timing["peak_mib"])
    print(json.dumps(results, indent=1, default=str))
    print(f"load after: {uptime()}")


if __name__ == "__main__":
    main()
