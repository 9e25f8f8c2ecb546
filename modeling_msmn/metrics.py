"""Metrics of automatic ICD coding, as plain numpy functions."""

import numpy as np


def mean_average_precision(scores: np.ndarray, gold: list[list[int]], num_gold: list[int] | None = None) -> float:
    """CodiEsp's official ranking metric (MAP), the figure its shared task ranked teams by.

    scores: (documents, codes) scores of the codes in the label set.
    gold: for each document, the label-set indices of its gold codes.
    num_gold: for each document, its number of gold codes including those outside the label set
        (which no ranking can retrieve); by default len(gold[d]).

    Per document: the sum of precision@r over the ranks r of its gold codes in the ranking by
    descending score (ties: lower index first), divided by its number of gold codes. Documents
    without gold codes are left out; MAP is the mean over the others.
    """
    scores = np.asarray(scores)
    num_gold = [len(codes) for codes in gold] if num_gold is None else num_gold
    if scores.ndim != 2 or scores.shape[0] != len(gold) or len(num_gold) != len(gold):
        raise ValueError(
            f"mean_average_precision: scores {scores.shape} must be (documents, codes) with one gold list "
            f"and one gold count per document ({len(gold)} and {len(num_gold)} given)."
        )
    average_precisions = []
    for document_scores, document_gold, total in zip(scores, gold, num_gold):
        if total == 0:
            continue
        if len(set(document_gold)) > total:
            raise ValueError("mean_average_precision: a document has more gold codes in the label set than in total.")
        ranking = np.argsort(-document_scores, kind="stable")
        is_gold = np.isin(ranking, list(set(document_gold)))
        ranks = np.flatnonzero(is_gold) + 1  # 1-based ranks of the gold codes
        precisions = np.arange(1, len(ranks) + 1) / ranks
        average_precisions.append(precisions.sum() / total)
    return float(np.mean(average_precisions)) if average_precisions else 0.0
