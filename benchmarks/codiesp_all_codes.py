"""Ranking every ICD-10-CM code for CodiEsp notes, codes never seen in training included.

MSMN's default score has no per-code weights: a code is scored from its terms alone, so a model
trained on the codes of CodiEsp's train split (`python train.py --preset codiesp-d`) can rank any
code. This script gives a saved checkpoint each candidate set with `set_codes` and reports
CodiEsp's MAP (its official measure, over all gold codes of each note: a gold code outside the
candidates counts as never retrieved), P@8, and MAP over the assignments of codes absent from the
train split ("unseen"), next to the same ranking with random scores; and the same with a
train-frequency prior added to the logits (β·log(1 + the code's train count), β chosen on dev MAP
among 0 to 8), since MSMN's score has no per-code term. Beside MSMN, a matcher with no training:
each code scores the TF-IDF cosine between the note and the closest of its terms (words or words and
word pairs, chosen on dev MAP; IDF over the candidates' terms and the background texts), alone and
added to MSMN's logits (λ·cosine, λ chosen on dev MAP; with the prior, λ and β chosen together), and
at two operating points for codes never seen in training: MSMN + term matching + prior with the
(λ, β) of the best dev MAP among those whose dev MAP over codes absent from train reaches 3% (the floor
set for them), and the same with a margin for dev's sampling error: among those whose 95%
bootstrap interval of that dev MAP starts at 3% or above; and, for the team to read the cost of such
a floor, every (λ, β) of the trade-off between the two on dev (those no other pair beats on both)
scored on test. Each unseen MAP comes with its 95% bootstrap interval over the notes and "filtered"
(the note's other gold codes left out of the ranking, as in link prediction). Candidate sets, none
read off the test split:

- `icd10cm`: every ICD-10-CM category and subcategory (98,186, billable or not) plus the train codes
  that the current list has retired: the CodiEsp shared task's setting;
- `train+dev`: the codes of the train and dev splits.

Candidate terms are the ICD-10-CM entries that train.py gives the train codes (description,
inclusion terms, parent title; `datasets_scripts.synonyms.icd10cm`). The code encoding is computed once
(no gradients, each distinct term once, length buckets); the attention runs in chunks of codes.
Prints the time and the peak memory of scoring the 250 test notes (on a GPU: the GPU memory beyond
the model's and the code encoding's), with the load (`uptime`).

    python benchmarks/codiesp_all_codes.py [--checkpoint msmn-codiesp-d] [--candidates icd10cm train+dev] [--device cuda]
"""

import argparse
import functools
import json
import os
import subprocess
import sys
import warnings
from collections import Counter

import numpy as np
import torch
from sklearn.feature_extraction.text import TfidfVectorizer
from transformers import AutoModelForSequenceClassification, AutoTokenizer

sys.path.insert(0, os.path.dirname(__file__))
from _measure import measure  # noqa: E402

from datasets_scripts.synonyms.icd10cm import icd10cm_codes, open_icd10cm_synonyms  # noqa: E402
from datasets_scripts.codiesp import background_texts, read_shipped_split  # noqa: E402
from modeling_msmn import build_code_term_ids  # noqa: E402
from modeling_msmn.metrics import average_precisions, mean_average_precision, precision_at_k  # noqa: E402


PRIOR_WEIGHTS = (0.0, 0.25, 0.5, 1.0, 2.0, 4.0, 8.0)
CENTRING_WEIGHTS = (0.0, 0.25, 0.5, 0.75, 1.0)
TERM_MATCH_WEIGHTS = (0.0, 4.0, 8.0, 16.0, 24.0, 32.0, 48.0, 64.0, 96.0, 128.0)
UNSEEN_MAP_FLOOR = 0.03  # the MAP over codes absent from train that an operating point must reach on dev


def score_notes(model, tokenizer, texts: list[str], batch_size: int) -> np.ndarray:
    """Logits (notes × codes) under no_grad, in batches of notes."""
    batches = []
    with torch.no_grad():
        for start in range(0, len(texts), batch_size):
            inputs = tokenizer(texts[start:start + batch_size], padding=True, truncation=True, return_tensors="pt")
            batches.append(model(**inputs.to(model.device)).logits.float().cpu().numpy())
    return np.concatenate(batches)


def gold_indices(records: list[dict], codes: list[str], train_codes: set[str]):
    """(gold indices among the candidates, gold counts, the same for the gold codes absent from train)."""
    index = {code: i for i, code in enumerate(codes)}
    gold_codes = [record["diagnosis_codes"] for record in records]
    unseen_codes = [[code for code in document if code not in train_codes] for document in gold_codes]
    gold = [[index[code] for code in document if code in index] for document in gold_codes]
    unseen = [[index[code] for code in document if code in index] for document in unseen_codes]
    return gold, [len(document) for document in gold_codes], unseen, [len(document) for document in unseen_codes]


def bootstrap_interval(values: np.ndarray, draws: int = 1000) -> tuple[float, float]:
    """The 95% percentile interval of the mean of `values` over `draws` resamples with replacement."""
    means = values[np.random.default_rng(0).integers(0, len(values), size=(draws, len(values)))].mean(axis=1)
    return tuple(round(float(bound), 4) for bound in np.percentile(means, [2.5, 97.5]))


def ranking_metrics(scores: np.ndarray, records: list[dict], codes: list[str], train_codes: set[str]) -> dict:
    """CodiEsp's MAP over all gold codes, P@8, and MAP over the gold codes absent from train: with its
    95% bootstrap interval over the notes, and "filtered" (as in link prediction): with the note's
    other gold codes left out of the ranking, so that a correct code ranked above does not count
    against it."""
    gold, totals, unseen, unseen_totals = gold_indices(records, codes, train_codes)
    unseen_precisions = average_precisions(scores, unseen, unseen_totals)
    other_gold_removed = scores.copy()
    for row, (document, document_unseen) in enumerate(zip(gold, unseen)):
        other_gold_removed[row, sorted(set(document) - set(document_unseen))] = np.nan  # NaN ranks last
    return {
        "map": mean_average_precision(scores, gold, totals),
        "precision_at_8": precision_at_k(gold_matrix(gold, scores.shape), scores, 8)[0],
        "map_unseen_codes": float(unseen_precisions.mean()),
        "map_unseen_codes_95_interval": bootstrap_interval(unseen_precisions),
        "map_unseen_codes_filtered": mean_average_precision(other_gold_removed, unseen, unseen_totals),
    }


def gold_matrix(gold: list[list[int]], shape: tuple[int, int]) -> np.ndarray:
    """(notes, candidates) booleans: the gold candidates of each note."""
    labels = np.zeros(shape, dtype=bool)
    for row, document in enumerate(gold):
        labels[row, document] = True
    return labels


def random_ranking_metrics(records: list[dict], codes: list[str], train_codes: set[str], draws: int = 1000) -> dict:
    """The expected metrics of random scores: each note's gold codes at uniformly random distinct ranks.

    One draw of random scores is a poor baseline for MAP over a few codes: 199 CodiEsp test notes
    have unseen codes, 64 of them just one, so one lucky rank 1 adds 0.5 points to the unseen MAP."""
    rng = np.random.default_rng(0)
    gold, totals, unseen, unseen_totals = gold_indices(records, codes, train_codes)

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


def term_match_scores(codes: list[str], code_terms: dict[str, list[str]], texts: dict[str, list[str]],
                      reference_texts: list[str], ngram_range: tuple[int, int]) -> dict[str, np.ndarray]:
    """For each split of `texts`: (notes, codes) TF-IDF cosines between each note and the closest of
    each code's terms (its distinct terms; IDF over one document per code, its terms joined, and
    `reference_texts`)."""
    vectorizer = TfidfVectorizer(sublinear_tf=True, ngram_range=ngram_range, stop_words="english")
    vectorizer.fit([" ".join(code_terms[code]) for code in codes] + reference_texts)
    distinct_terms = [list(dict.fromkeys(code_terms[code])) for code in codes]
    term_vectors = vectorizer.transform([term for terms in distinct_terms for term in terms])
    first_term = np.cumsum([0] + [len(terms) for terms in distinct_terms[:-1]])  # each code's first row
    scores = {}
    for split, split_texts in texts.items():
        note_vectors = vectorizer.transform(split_texts)
        scores[split] = np.concatenate([
            np.maximum.reduceat((note_vectors[start:start + 50] @ term_vectors.T).toarray(), first_term, axis=1)
            for start in range(0, len(split_texts), 50)  # 50 notes at a time: a dense (50, terms) block
        ]).astype(np.float32)
    return scores


def operating_point(dev_map: dict, dev_unseen_map: dict, unseen_floor: float):
    """The weights (a key of `dev_map`) with the best dev MAP among those whose dev MAP over codes
    absent from train reaches `unseen_floor` (ties: the smaller weights); None if none does."""
    over_floor = [weights for weights in dev_map if dev_unseen_map[weights] >= unseen_floor]
    return max(over_floor, key=lambda weights: (dev_map[weights], *(-weight for weight in weights)), default=None)


def pareto_frontier(dev_map: dict, dev_unseen_map: dict) -> list:
    """The weights (keys of `dev_map`) that no others match or beat on both dev MAP and dev MAP over
    codes absent from train (of equal pairs, the smaller weights), by descending dev MAP."""
    frontier, best_unseen_map = [], -1.0
    for weights in sorted(dev_map, key=lambda weights: (-dev_map[weights], -dev_unseen_map[weights], weights)):
        if dev_unseen_map[weights] > best_unseen_map:
            frontier.append(weights)
            best_unseen_map = dev_unseen_map[weights]
    return frontier


def set_candidates(model, tokenizer, codes, code_terms) -> list[int]:
    """Gives the model the candidates with their terms; the token ids of those terms (padding left out)."""
    term_ids, terms = build_code_term_ids(tokenizer, codes, code_terms, model.config.num_synonyms, model.config.term_length)
    model.set_codes(codes, term_ids, terms, [code_terms[code][0] for code in codes])
    return [token for row in term_ids for token in row if token != tokenizer.pad_token_id]


def term_match_grid(dev_scores, dev_match, prior, dev_records, codes, train_codes) -> tuple[dict, dict, dict]:
    """For each (λ, β) of MSMN + λ·term matching + β·prior on dev: (MAP, MAP over codes absent from
    train, that MAP's 95% bootstrap interval); λ = 0 is MSMN + prior alone."""
    dev_gold, dev_totals, dev_unseen, dev_unseen_totals = gold_indices(dev_records, codes, train_codes)
    dev_map, dev_unseen_map, dev_unseen_interval = {}, {}, {}
    for match_weight in TERM_MATCH_WEIGHTS:
        for weight in PRIOR_WEIGHTS:
            combined = dev_scores + match_weight * dev_match + weight * prior
            dev_map[match_weight, weight] = mean_average_precision(combined, dev_gold, dev_totals)
            unseen_precisions = average_precisions(combined, dev_unseen, dev_unseen_totals)
            dev_unseen_map[match_weight, weight] = float(unseen_precisions.mean())
            dev_unseen_interval[match_weight, weight] = bootstrap_interval(unseen_precisions)
    return dev_map, dev_unseen_map, dev_unseen_interval


def corrections_on_dev(dev_scores, code_means, code_deviations, prior, dev_records, codes, train_codes):
    """(dev MAP over codes absent from train for each centring weight λ, dev MAP of the standardised
    logits plus each prior weight β)."""
    dev_gold, dev_totals, dev_unseen, dev_unseen_totals = gold_indices(dev_records, codes, train_codes)
    dev_unseen_map = {weight: mean_average_precision(dev_scores - weight * code_means, dev_unseen, dev_unseen_totals)
                      for weight in CENTRING_WEIGHTS}
    dev_standardised = (dev_scores - code_means) / code_deviations
    dev_standardised_map = {weight: mean_average_precision(dev_standardised + weight * prior, dev_gold, dev_totals)
                            for weight in PRIOR_WEIGHTS}
    return dev_unseen_map, dev_standardised_map


def rank_candidates(model, tokenizer, codes, code_terms, splits, train_counts, reference_texts, batch_size) -> dict:
    """Scores dev and test against `codes` with each ranking of the module's docstring, every weight chosen
    on dev; on test also each (λ, β) of the dev trade-off between MAP and unseen MAP (`pareto_frontier`)."""
    term_tokens = set_candidates(model, tokenizer, codes, code_terms)
    texts = {split: [record["text_en"] for record in splits[split]] for split in ("dev", "test")}
    dev_scores = score_notes(model, tokenizer, texts["dev"], batch_size)
    test = {}

    def score_test():  # timed: the code encoding (cached since dev) was computed once, outside
        test["scores"] = score_notes(model, tokenizer, texts["test"], batch_size)

    timing = measure(score_test, cuda=model.device.type == "cuda")  # on a GPU, its memory is the one that counts
    reference_scores = score_notes(model, tokenizer, reference_texts, batch_size)  # (notes, codes)
    code_means, code_deviations = reference_scores.mean(axis=0), reference_scores.std(axis=0) + 1e-6
    train_codes = set(train_counts)
    prior = np.log1p(np.array([train_counts.get(code, 0) for code in codes], dtype=np.float32))
    dev_gold, dev_totals = gold_indices(splits["dev"], codes, train_codes)[:2]

    matching = {ngrams: term_match_scores(codes, code_terms, texts, reference_texts, (1, ngrams)) for ngrams in (1, 2)}
    dev_matching_map = {ngrams: mean_average_precision(matching[ngrams]["dev"], dev_gold, dev_totals) for ngrams in (1, 2)}
    best_ngrams = max((1, 2), key=lambda ngrams: dev_matching_map[ngrams])
    dev_match, test_match = matching[best_ngrams]["dev"], matching[best_ngrams]["test"]
    dev_combined_map, dev_combined_unseen_map, dev_combined_unseen_interval = term_match_grid(
        dev_scores, dev_match, prior, splits["dev"], codes, train_codes)
    best_match_weight = max(TERM_MATCH_WEIGHTS, key=lambda match_weight: (dev_combined_map[match_weight, 0.0], -match_weight))
    best_pair = operating_point(dev_combined_map, dev_combined_unseen_map, 0.0)  # no floor: the best dev MAP
    floor_pair = operating_point(dev_combined_map, dev_combined_unseen_map, UNSEEN_MAP_FLOOR)
    dev_unseen_lower_bound = {weights: interval[0] for weights, interval in dev_combined_unseen_interval.items()}
    margin_pair = operating_point(dev_combined_map, dev_unseen_lower_bound, UNSEEN_MAP_FLOOR)

    dev_map = {weight: dev_combined_map[0.0, weight] for weight in PRIOR_WEIGHTS}
    best_weight = max(PRIOR_WEIGHTS, key=lambda weight: (dev_map[weight], -weight))
    dev_unseen_map, dev_standardised_map = corrections_on_dev(dev_scores, code_means, code_deviations, prior,
                                                              splits["dev"], codes, train_codes)
    best_centring = max(CENTRING_WEIGHTS, key=lambda weight: (dev_unseen_map[weight], -weight))
    test_standardised = (test["scores"] - code_means) / code_deviations
    best_standardised_weight = max(PRIOR_WEIGHTS, key=lambda weight: (dev_standardised_map[weight], -weight))

    @functools.cache  # the best pair and the operating points are on the frontier too: each scored once
    def dev_and_test(weights):  # a (λ, β) of MSMN + term matching + prior: its dev figures and test metrics
        match_weight, weight = weights
        return {"term_match_weight": match_weight, "prior_weight": weight, "dev_map": round(dev_combined_map[weights], 4),
                "dev_map_unseen_codes": round(dev_combined_unseen_map[weights], 4),
                "dev_map_unseen_codes_95_interval": dev_combined_unseen_interval[weights],
                "test": ranking_metrics(test["scores"] + match_weight * test_match + weight * prior, splits["test"],
                                        codes, train_codes)}

    test_gold, test_totals, test_unseen, test_unseen_totals = gold_indices(splits["test"], codes, train_codes)
    results = {"candidates": len(codes),
        "test_gold_assignments_among_candidates": f"{sum(map(len, test_gold))} of {sum(test_totals)}",
        "test_unseen_assignments_among_candidates": f"{sum(map(len, test_unseen))} of {sum(test_unseen_totals)}",
        "term_tokens_unknown_to_the_vocabulary": round(term_tokens.count(tokenizer.unk_token_id) / len(term_tokens), 4),
        "test_seconds_per_note": round(timing["seconds"] / len(splits["test"]), 3),
        "test_peak_mib_added": round(timing["peak_mib"]),
        "dev_map_by_prior_weight": {weight: round(value, 4) for weight, value in dev_map.items()},
        "dev_unseen_map_by_centring_weight": {weight: round(value, 4) for weight, value in dev_unseen_map.items()},
        "dev_map_standardised_by_prior_weight": {weight: round(value, 4) for weight, value in dev_standardised_map.items()},
        "dev_map_term_matching_by_longest_ngram": {ngrams: round(value, 4) for ngrams, value in dev_matching_map.items()},
        "dev_map_msmn_plus_term_matching_by_weight": {
            match_weight: round(dev_combined_map[match_weight, 0.0], 4) for match_weight in TERM_MATCH_WEIGHTS},
        "msmn": ranking_metrics(test["scores"], splits["test"], codes, train_codes),
        f"msmn_with_prior_{best_weight}": ranking_metrics(test["scores"] + best_weight * prior, splits["test"], codes,
                                                         train_codes),
        f"msmn_centred_{best_centring}": ranking_metrics(test["scores"] - best_centring * code_means, splits["test"],
                                                        codes, train_codes),
        "msmn_standardised": ranking_metrics(test_standardised, splits["test"], codes, train_codes),
        f"msmn_standardised_with_prior_{best_standardised_weight}": ranking_metrics(
            test_standardised + best_standardised_weight * prior, splits["test"], codes, train_codes),
        f"term_matching_ngrams_1_to_{best_ngrams}": ranking_metrics(test_match, splits["test"], codes, train_codes),
        f"msmn_plus_term_matching_{best_match_weight}": ranking_metrics(
            test["scores"] + best_match_weight * test_match, splits["test"], codes, train_codes),
        f"msmn_plus_term_matching_{best_pair[0]}_with_prior_{best_pair[1]}": dev_and_test(best_pair)["test"],
        "random_scores_expected": random_ranking_metrics(splits["test"], codes, train_codes),
    }
    results["operating_point"] = None if floor_pair is None else dev_and_test(floor_pair)
    results["operating_point_with_margin"] = None if margin_pair is None else dev_and_test(margin_pair)
    results["dev_frontier_of_msmn_plus_term_matching_with_prior"] = [
        dev_and_test(weights) for weights in pareto_frontier(dev_combined_map, dev_combined_unseen_map)]
    return results


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--checkpoint", default="msmn-codiesp-d")
    parser.add_argument("--candidates", nargs="+", default=["icd10cm", "train+dev"], choices=["icd10cm", "train+dev"])
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--device", default="cpu", help="e.g. cuda: the model and the scoring run there")
    parser.add_argument("--reference-notes", type=int, default=200, help="background texts whose scores centre and standardise each code")
    args = parser.parse_args()
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        parser.error(f"--device {args.device}: torch sees no CUDA GPU here; run on a machine with one, or leave --device out (cpu).")
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, "
          f"{torch.cuda.get_device_name(device) if device.type == 'cuda' else 'CPU'}, fp32; load: "
          f"{subprocess.run(['uptime'], capture_output=True, text=True).stdout.strip()}")
    tokenizer = AutoTokenizer.from_pretrained(args.checkpoint, trust_remote_code=True)
    model = AutoModelForSequenceClassification.from_pretrained(args.checkpoint, trust_remote_code=True).eval().to(device)
    splits = {split: read_shipped_split(split) for split in ("train", "dev", "test")}
    train_counts = Counter(code for record in splits["train"] for code in record["diagnosis_codes"])
    dev_codes = {code for record in splits["dev"] for code in record["diagnosis_codes"]}
    print(f"{args.checkpoint}: trained on {model.config.num_labels} codes; dev and test, 250 notes each")
    for name in args.candidates:
        codes = sorted(set(icd10cm_codes()) | set(train_counts)) if name == "icd10cm" else sorted(set(train_counts) | dev_codes)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            code_terms = open_icd10cm_synonyms(codes, min_synonyms=model.config.num_synonyms - 1)[0]
        results = rank_candidates(model, tokenizer, codes, code_terms, splits, train_counts,
                                  background_texts()[: args.reference_notes], args.batch_size)
        print(f"candidates {name}: " + json.dumps(results, indent=1))
        sys.stdout.flush()
    print(f"load after: {subprocess.run(['uptime'], capture_output=True, text=True).stdout.strip()}")


if __name__ == "__main__":
    main()
