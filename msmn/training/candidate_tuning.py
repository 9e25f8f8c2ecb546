"""Building a `CandidateRanker` for a trained model and choosing its operating points on dev; the
ranking metrics over candidates (MAP over all gold codes, P@8, MAP over the codes absent from train).

    ranker, report = build_ranker(model, tokenizer, candidate_terms, train_counts, reference_texts,
                                  dev_texts, dev_gold_codes, code_system="ICD-10-CM")
    ranker.save_pretrained(folder)

Every choice is made on dev, in this order:
1. the term matcher's n-grams (words, or words and adjacent word pairs): the better dev MAP of term
   matching alone;
2. (λ, β) over `TERM_MATCH_WEIGHTS` × `PRIOR_WEIGHTS`, every candidate re-scored by MSMN:
   "best_map" has the best dev MAP; "unseen" the best dev MAP among the pairs whose dev MAP over codes
   absent from train has a 95% bootstrap interval (over the dev notes) starting at `UNSEEN_MAP_FLOOR`
   or above (if none does, the pair whose interval starts highest);
3. each point's shortlist: the smallest of `SHORTLIST_SIZES` whose two-stage dev MAP and dev unseen MAP
   are within `SHORTLIST_TOLERANCE` of every candidate re-scored;
4. each point's score threshold: the best dev micro-F1 over all gold codes.

Not part of the checkpoint's remote code: the pipeline needs only `ranking_msmn`.
"""

import numpy as np
import torch

from msmn.evaluation.metrics import average_precisions, gold_indices, mean_average_precision, precision_at_k
from modeling_msmn.ranking_msmn import CandidateRanker, OperatingPoint, TermMatcher, ranked_scores, shortlist
from modeling_msmn.tokenization_msmn import build_code_term_ids

TERM_MATCH_WEIGHTS = (0.0, 4.0, 8.0, 16.0, 24.0, 32.0, 48.0, 64.0, 96.0, 128.0)  # λ
PRIOR_WEIGHTS = (0.0, 0.25, 0.5, 1.0, 2.0, 4.0, 8.0)  # β
UNSEEN_MAP_FLOOR = 0.03  # the dev MAP over codes absent from train that the "unseen" point must reach
SHORTLIST_SIZES = (256, 512, 1024, 2048, 4096, 8192)
SHORTLIST_TOLERANCE = 0.001  # the dev MAP (and unseen MAP) a shortlist may lose against re-scoring every candidate
REFERENCE_TEXTS = 200  # unlabelled texts in the term matcher's IDF


def bootstrap_interval(values: np.ndarray, draws: int = 1000) -> tuple[float, float]:
    """The 95% percentile interval of the mean of `values` over `draws` resamples with replacement."""
    means = values[np.random.default_rng(0).integers(0, len(values), size=(draws, len(values)))].mean(axis=1)
    return tuple(round(float(bound), 4) for bound in np.percentile(means, [2.5, 97.5]))


def unseen_map(scores: np.ndarray, unseen: list[list[int]], unseen_totals: list[int]) -> tuple[float, tuple[float, float]]:
    """(MAP over the gold codes absent from train, its 95% bootstrap interval over the notes that have
    some); (0, (0, 0)) when no note has any."""
    precisions = average_precisions(scores, unseen, unseen_totals)
    return (float(precisions.mean()), bootstrap_interval(precisions)) if len(precisions) else (0.0, (0.0, 0.0))


def gold_matrix(gold: list[list[int]], shape: tuple[int, int]) -> np.ndarray:
    """(notes, candidates) booleans: the gold candidates of each note."""
    labels = np.zeros(shape, dtype=bool)
    for row, document in enumerate(gold):
        labels[row, document] = True
    return labels


def ranking_metrics(scores: np.ndarray, gold_codes: list[list[str]], codes: list[str], train_codes: set[str]) -> dict:
    """MAP over every gold code of each note (a gold code outside `codes` is never retrieved), P@8, and
    MAP over the gold codes absent from train: with its 95% bootstrap interval over the notes, and
    "filtered" (as in link prediction): with the note's other gold codes left out of the ranking."""
    gold, totals, unseen, unseen_totals = gold_indices(gold_codes, codes, train_codes)
    map_unseen, interval = unseen_map(scores, unseen, unseen_totals)
    other_gold_removed = scores.copy()
    for row, (document, document_unseen) in enumerate(zip(gold, unseen)):
        other_gold_removed[row, sorted(set(document) - set(document_unseen))] = np.nan  # NaN ranks last
    return {
        "map": mean_average_precision(scores, gold, totals),
        "precision_at_8": precision_at_k(gold_matrix(gold, scores.shape), scores, 8)[0],
        "map_unseen_codes": map_unseen,
        "map_unseen_codes_95_interval": interval,
        "map_unseen_codes_filtered": mean_average_precision(other_gold_removed, unseen, unseen_totals),
    }


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


def note_batches(tokenizer, texts: list[str], max_tokens: int, batch_size: int):
    """(input_ids, attention_mask) of `texts` in batches, cut to `max_tokens` as in training."""
    for start in range(0, len(texts), batch_size):
        inputs = tokenizer(texts[start : start + batch_size], padding=True, truncation=True, max_length=max_tokens,
                           return_tensors="pt")
        yield inputs["input_ids"], inputs["attention_mask"]


def candidate_scores(ranker: CandidateRanker, model, batches, point: OperatingPoint) -> np.ndarray:
    """(notes, L + E) `ranker.rank` scores of the notes of `batches` under `point`, without gradients."""
    with torch.no_grad():
        return np.concatenate([ranker.rank(model, input_ids.to(model.device), mask.to(model.device), point).scores
                               .float().cpu().numpy() for input_ids, mask in batches])


def two_stage_scores(msmn_logits: np.ndarray, first_stage: np.ndarray, num_labels: int, size: int | None) -> np.ndarray:
    """`ranker.rank`'s scores, from every candidate's MSMN logits and first-stage scores (n, L + E)."""
    rows = []
    for note_logits, note_first_stage in zip(torch.from_numpy(msmn_logits), torch.from_numpy(first_stage)):
        candidates = shortlist(note_first_stage, num_labels, size)
        rows.append(ranked_scores(note_first_stage, candidates, note_logits[candidates]))
    return torch.stack(rows).numpy()


def score_threshold(scores: np.ndarray, gold: list[list[int]], num_gold: int, depth: int = 100) -> tuple[float, float]:
    """(threshold, micro-F1): the score cut of the best micro-F1 over all `num_gold` gold codes, among
    each note's `depth` best-scored candidates; the threshold lies halfway between two scores."""
    depth = min(depth, scores.shape[1])
    top = np.argsort(-scores, axis=1, kind="stable")[:, :depth]
    values = np.take_along_axis(scores, top, axis=1).ravel()
    is_gold = np.take_along_axis(gold_matrix(gold, scores.shape), top, axis=1).ravel()
    order = np.argsort(-values, kind="stable")
    values, true_positives = values[order], np.cumsum(is_gold[order])
    f1 = 2 * true_positives / (np.arange(1, len(values) + 1) + num_gold)
    best = int(np.argmax(f1))
    below = values[best + 1] if best + 1 < len(values) else values[best] - 1.0
    return float((values[best] + below) / 2), float(f1[best])


def new_ranker(model, tokenizer, candidate_terms: dict[str, list[str]], train_counts: dict[str, int],
               code_system: str, term_seed: int | None) -> CandidateRanker:
    """The candidates outside the model's label set with their M terms and every candidate's train count;
    no term matcher and no operating point yet."""
    config = model.config
    label_codes = [config.id2label[index] for index in range(config.num_labels)]
    extra_codes = [code for code in candidate_terms if code not in config.label2id]
    term_ids, terms = build_code_term_ids(tokenizer, extra_codes, candidate_terms, config.num_synonyms,
                                          config.term_length, term_seed)
    counts = torch.tensor([train_counts.get(code, 0) for code in label_codes + extra_codes], dtype=torch.int64)
    return CandidateRanker(extra_codes, [candidate_terms[code][0] for code in extra_codes], terms,
                           torch.tensor(term_ids, dtype=torch.long).view(-1, config.term_length), counts, None, {},
                           code_system, config.num_labels)


def fit_matcher(ranker: CandidateRanker, model, tokenizer, reference_texts: list[str], longest_ngram: int) -> TermMatcher:
    """The term matcher's IDF over one document per candidate (its M terms) and `reference_texts`."""
    config = model.config
    term_rows = torch.cat([model.msmn.code_term_ids.cpu(), ranker.extra_term_ids]).numpy()
    num_codes = len(term_rows) // config.num_synonyms
    parts = [(term_rows, np.arange(len(term_rows)) // config.num_synonyms)]
    for number, (input_ids, _) in enumerate(note_batches(tokenizer, reference_texts, config.max_note_tokens, 1)):
        parts.append((input_ids.numpy(), np.array([num_codes + number])))
    return TermMatcher.fit(parts, num_codes + len(reference_texts), config.vocab_size, longest_ngram,
                           [tokenizer.pad_token_id, tokenizer.unk_token_id])


def dev_grid(msmn_logits, term_matches, prior, gold, totals, unseen, unseen_totals) -> dict:
    """(λ, β) → (dev MAP, dev unseen MAP, its 95% interval) of MSMN + λ·term match + β·prior."""
    grid = {}
    for term_match_weight in TERM_MATCH_WEIGHTS:
        for prior_weight in PRIOR_WEIGHTS:
            combined = msmn_logits + term_match_weight * term_matches + prior_weight * prior
            grid[term_match_weight, prior_weight] = (mean_average_precision(combined, gold, totals),
                                                     *unseen_map(combined, unseen, unseen_totals))
    return grid


def chosen_points(grid: dict) -> dict[str, tuple[float, float]]:
    """The (λ, β) of "best_map" and "unseen" (see the module's docstring)."""
    dev_map = {weights: figures[0] for weights, figures in grid.items()}
    dev_unseen_map = {weights: figures[1] for weights, figures in grid.items()}
    lower_bound = {weights: figures[2][0] for weights, figures in grid.items()}
    unseen = operating_point(dev_map, lower_bound, UNSEEN_MAP_FLOOR)
    if unseen is None:  # no pair's interval reaches the floor: the one that comes closest
        unseen = max(grid, key=lambda weights: (lower_bound[weights], dev_map[weights], *(-w for w in weights)))
    return {"best_map": operating_point(dev_map, dev_unseen_map, 0.0), "unseen": unseen}  # floor 0: every pair


def finished_point(weights, grid, msmn_logits, term_matches, prior, gold, totals, unseen, unseen_totals,
                   num_labels: int) -> OperatingPoint:
    """The operating point of `weights` with its shortlist size and score threshold, chosen on dev."""
    first_stage = weights[0] * term_matches + weights[1] * prior
    full_map, full_unseen_map, interval = grid[weights]
    num_extra = msmn_logits.shape[1] - num_labels
    for size in [size for size in SHORTLIST_SIZES if size < num_extra] + [None]:
        scores = two_stage_scores(msmn_logits, first_stage, num_labels, size)
        dev_map, dev_unseen_map = mean_average_precision(scores, gold, totals), unseen_map(scores, unseen, unseen_totals)[0]
        if dev_map >= full_map - SHORTLIST_TOLERANCE and dev_unseen_map >= full_unseen_map - SHORTLIST_TOLERANCE:
            break
    threshold, micro_f1 = score_threshold(scores, gold, sum(totals))
    dev = {"map": round(dev_map, 4), "map_unseen_codes": round(dev_unseen_map, 4),
           "map_every_candidate_rescored": round(full_map, 4), "map_unseen_codes_every_candidate_rescored":
           round(full_unseen_map, 4), "map_unseen_codes_95_interval_every_candidate_rescored": interval,
           "micro_f1": round(micro_f1, 4), "notes": len(gold)}
    return OperatingPoint(weights[0], weights[1], size, threshold, dev)


def build_ranker(model, tokenizer, candidate_terms: dict[str, list[str]], train_counts: dict[str, int],
                 reference_texts: list[str], dev_texts: list[str], dev_gold_codes: list[list[str]], code_system: str,
                 term_seed: int | None = 0, batch_size: int = 8) -> tuple[CandidateRanker, dict]:
    """(a ranker of the label set and `candidate_terms`' codes (code → [description, synonyms…]), what
    was chosen on dev and how): see the module's docstring. `train_counts`: code → gold assignments in
    the training notes; `reference_texts`: unlabelled texts for the IDF (the first `REFERENCE_TEXTS`)."""
    model.eval()
    ranker = new_ranker(model, tokenizer, candidate_terms, train_counts, code_system, term_seed)
    codes = ranker.codes(model.config)
    gold, totals, unseen, unseen_totals = gold_indices(dev_gold_codes, codes, {c for c, n in train_counts.items() if n})
    batches = list(note_batches(tokenizer, dev_texts, model.config.max_note_tokens, batch_size))
    matchers, dev_matches = {}, {}
    for longest_ngram in (1, 2):
        matchers[longest_ngram] = fit_matcher(ranker, model, tokenizer, reference_texts[:REFERENCE_TEXTS], longest_ngram)
        ranker.matcher = matchers[longest_ngram]
        with torch.no_grad():  # the first stage of λ = 1, β = 0: the term match alone
            dev_matches[longest_ngram] = np.concatenate([ranker.first_stage(model, input_ids, OperatingPoint(1.0, 0.0))
                                                         .float().cpu().numpy() for input_ids, _ in batches])
    matching_map = {n: mean_average_precision(dev_matches[n], gold, totals) for n in (1, 2)}
    longest_ngram = max((1, 2), key=lambda n: (matching_map[n], -n))
    ranker.matcher = matchers[longest_ngram]
    term_matches = dev_matches[longest_ngram]
    msmn_logits = candidate_scores(ranker, model, batches, OperatingPoint(0.0, 0.0, None))  # every candidate
    prior = ranker.prior().numpy()
    grid = dev_grid(msmn_logits, term_matches, prior, gold, totals, unseen, unseen_totals)
    for name, weights in chosen_points(grid).items():
        ranker.operating_points[name] = finished_point(weights, grid, msmn_logits, term_matches, prior, gold, totals,
                                                       unseen, unseen_totals, ranker.num_labels)
    report = {"candidates": len(codes), "dev_map_term_matching_by_longest_ngram": matching_map,
              "longest_ngram": longest_ngram, "dev_grid": grid,
              "operating_points": {name: point for name, point in ranker.operating_points.items()}}
    return ranker, report
