"""Metrics of automatic ICD coding (those of the paper's Experiments section, after CAML), as plain numpy functions.

`scores` and `labels` are (documents, codes) arrays; predictions are `scores > threshold`. The ranking
metrics (AUC, P@k, MAP) and the threshold's search only compare scores, so any increasing function of
the logits serves; give the logits themselves: float32 sigmoid probabilities are exactly 1.0 above a
logit of about 16.6, and a well-trained model's confident codes would tie there. AUCs come from the positives' average ranks among sorted scores (ties share their mean rank, as
in scikit-learn), so MIMIC-III full scale (3,372 × 8,929) takes seconds, not sklearn's minutes.
"""

import re

import numpy as np


def _auc_from_sorted(sorted_scores: np.ndarray, positive_scores: np.ndarray) -> float:
    """Mann–Whitney AUC: the positives' average ranks (ties share their mean rank) among all scores."""
    below = np.searchsorted(sorted_scores, positive_scores, side="left")
    up_to = np.searchsorted(sorted_scores, positive_scores, side="right")
    positives, negatives = len(positive_scores), len(sorted_scores) - len(positive_scores)
    rank_sum = ((below + up_to + 1) / 2).sum()
    return float((rank_sum - positives * (positives + 1) / 2) / (positives * negatives))


def roc_auc_per_column(labels: np.ndarray, scores: np.ndarray) -> np.ndarray:
    """ROC-AUC of each column (NaN where a column lacks positives or negatives)."""
    labels_by_column = np.ascontiguousarray(labels.T, dtype=bool)
    scores_by_column = np.ascontiguousarray(scores.T)
    sorted_by_column = np.sort(scores_by_column, axis=1)
    auc = np.full(len(labels_by_column), np.nan)
    positives = labels_by_column.sum(axis=1)
    for column in np.flatnonzero((positives > 0) & (positives < labels.shape[0])):
        positive_scores = scores_by_column[column][labels_by_column[column]]
        auc[column] = _auc_from_sorted(sorted_by_column[column], positive_scores)
    return auc


def micro_roc_auc(labels: np.ndarray, scores: np.ndarray) -> float:
    labels, scores = labels.ravel().astype(bool), scores.ravel()
    if labels.all() or not labels.any():
        return float("nan")
    return _auc_from_sorted(np.sort(scores), scores[labels])


def precision_at_k(labels: np.ndarray, scores: np.ndarray, k: int) -> tuple[float, float]:
    """(P@k, R@k): mean over documents of hits among the k top-scored codes (ties: lower code index
    first), divided by k (by the document's number of gold codes for R@k; 0 without gold codes).
    With k codes or fewer, every code is in the top k."""
    labels = labels.astype(bool)
    if k >= scores.shape[1]:
        hits = labels.sum(axis=1)
    else:
        kth_score = -np.partition(-scores, k - 1, axis=1)[:, k - 1 : k]  # (documents, 1)
        above, tied = scores > kth_score, scores == kth_score
        # of the tied codes, the first (k − #above) by index make the top k
        tied_taken = tied & (np.cumsum(tied, axis=1) <= k - above.sum(axis=1, keepdims=True))
        hits = (labels & (above | tied_taken)).sum(axis=1)
    gold = labels.sum(axis=1)
    recall = np.divide(hits, gold, out=np.zeros(len(hits)), where=gold > 0)
    return float(np.mean(hits / k)), float(np.mean(recall))


def tune_threshold(scores: np.ndarray, labels: np.ndarray) -> float:
    """The one global threshold that maximises micro-F1 (predict `score > threshold`).

    Cutting between consecutive distinct scores v_(i−1) < v_i predicts every score ≥ v_i:
    F1 = 2·TP / (predicted + positives); the threshold lies midway between the two scores (below
    the lowest score by 1 where every score is predicted).
    """
    scores, labels = scores.ravel(), labels.ravel().astype(bool)
    ascending = np.sort(scores)
    positive_ascending = np.sort(scores[labels])
    starts = np.flatnonzero(np.append(True, ascending[1:] > ascending[:-1]))  # first index of each distinct score
    predicted = len(ascending) - starts
    true_positives = len(positive_ascending) - np.searchsorted(positive_ascending, ascending[starts], side="left")
    f1 = 2 * true_positives / (predicted + len(positive_ascending))
    best = int(np.argmax(f1))
    below = ascending[starts[best] - 1] if starts[best] > 0 else ascending[0] - 2.0
    return float((ascending[starts[best]] + below) / 2)


def authors_threshold(scores: np.ndarray, labels: np.ndarray) -> float:
    """The authors' global threshold (their `find_threshold_micro`), to predict `score > threshold`.

    The flattened scores sorted ascending; at each position i, F1_i = 2·(positives after i) /
    ((N − i) + positives): the count N − i includes position i, one more than `score > s_i`
    predicts. The threshold is the score at the first position of highest F1_i.
    """
    scores, labels = scores.ravel(), labels.ravel().astype(np.float64)
    order = np.argsort(scores, kind="stable")
    sorted_labels = labels[order]
    positives = sorted_labels.sum()
    correct = positives - np.cumsum(sorted_labels)
    predicted = len(scores) - np.arange(len(scores))
    f1 = 2 * correct / (predicted + positives)
    return float(scores[order][np.argmax(f1)])


def probability_threshold(threshold_on_logits: float) -> float:
    """The sigmoid of a threshold on logits, kept inside [1e-6, 1 − 1e-6]: what a config's `threshold` holds."""
    return float(min(max(1 / (1 + np.exp(-threshold_on_logits)), 1e-6), 1 - 1e-6))


def logit_threshold(threshold: float) -> float:
    """The threshold on logits of a threshold on sigmoid probabilities."""
    return float(np.log(threshold) - np.log1p(-threshold))


def icd_metrics(scores: np.ndarray, labels: np.ndarray, threshold: float, ks=(5, 8, 15)) -> dict[str, float]:
    """The paper's metrics: micro/macro AUC, micro P/R/F1, macro-F1 (CAML's, and the mean of per-code F1), P@k, R@k;
    `threshold` on the scale of `scores` (logits: see the module's note)."""
    scores = np.asarray(scores, dtype=np.float64)
    labels = np.asarray(labels).astype(bool)
    if scores.shape != labels.shape or scores.ndim != 2:
        raise ValueError(f"icd_metrics: scores {scores.shape} and labels {labels.shape} must be equal (documents, codes).")
    predictions = scores > threshold
    true_positives = (predictions & labels).sum(axis=0)
    predicted, gold = predictions.sum(axis=0), labels.sum(axis=0)

    micro_precision = true_positives.sum() / max(predicted.sum(), 1)
    micro_recall = true_positives.sum() / max(gold.sum(), 1)
    macro_precision = np.mean(true_positives / (predicted + 1e-10))
    macro_recall = np.mean(true_positives / (gold + 1e-10))
    per_code_f1 = np.divide(2 * true_positives, predicted + gold, out=np.zeros(len(gold)), where=(predicted + gold) > 0)
    per_code_auc = roc_auc_per_column(labels, scores)

    def harmonic(p, r):
        return float(2 * p * r / (p + r)) if p + r > 0 else 0.0

    metrics = {
        "macro_auc": float(np.nanmean(per_code_auc)) if np.any(~np.isnan(per_code_auc)) else float("nan"),
        "micro_auc": micro_roc_auc(labels, scores),
        "macro_f1": harmonic(macro_precision, macro_recall),
        "micro_f1": harmonic(micro_precision, micro_recall),
        "macro_precision": float(macro_precision),
        "macro_recall": float(macro_recall),
        "micro_precision": float(micro_precision),
        "micro_recall": float(micro_recall),
        "mean_per_code_f1": float(per_code_f1.mean()),
    }
    for k in ks:
        if k <= labels.shape[1]:
            metrics[f"precision_at_{k}"], metrics[f"recall_at_{k}"] = precision_at_k(labels, scores, k)
    return metrics


def _rank(scores: np.ndarray, index: int) -> int:
    """The 1-based rank of scores[index] in the order of descending score, ties by lower index first
    and NaN scores last (the order of a stable argsort of -scores)."""
    score = scores[index]
    if np.isnan(score):
        return int(np.count_nonzero(~np.isnan(scores)) + np.count_nonzero(np.isnan(scores[:index])) + 1)
    return int(np.count_nonzero(scores > score) + np.count_nonzero(scores[:index] == score) + 1)


def average_precisions(scores: np.ndarray, gold: list[list[int]], num_gold: list[int] | None = None) -> np.ndarray:
    """The average precision of each document that has gold codes (`mean_average_precision` is their mean).

    scores: (documents, codes) scores of the codes in the label set.
    gold: for each document, the label-set indices of its gold codes.
    num_gold: for each document, its number of gold codes including those outside the label set
        (which no ranking can retrieve); by default len(gold[d]).

    Per document: the sum of precision@r over the ranks r of its gold codes in the ranking by
    descending score (ties: lower index first; NaN scores last), divided by its number of gold
    codes; documents without gold codes are left out. A gold code's rank is counted from the
    scores that beat it, without sorting the row (at 98,236 candidates, sorting each row was about
    15 times slower).
    """
    scores = np.asarray(scores)
    num_gold = [len(codes) for codes in gold] if num_gold is None else num_gold
    if scores.ndim != 2 or scores.shape[0] != len(gold) or len(num_gold) != len(gold):
        raise ValueError(
            f"mean_average_precision: scores {scores.shape} must be (documents, codes) with one gold list "
            f"and one gold count per document ({len(gold)} and {len(num_gold)} given)."
        )
    values = []
    for document_scores, document_gold, total in zip(scores, gold, num_gold):
        if total == 0:
            continue
        if len(set(document_gold)) > total:
            raise ValueError("mean_average_precision: a document has more gold codes in the label set than in total.")
        if any(not 0 <= code < scores.shape[1] for code in document_gold):
            raise ValueError(
                f"mean_average_precision: a gold index is outside the label set's 0..{scores.shape[1] - 1}; "
                "give gold codes as indices into the scores' columns (codes outside the label set go in num_gold only)."
            )
        ranks = np.sort([_rank(document_scores, code) for code in set(document_gold)])  # 1-based
        precisions = np.arange(1, len(ranks) + 1) / ranks
        values.append(precisions.sum() / total)
    return np.array(values)


def mean_average_precision(scores: np.ndarray, gold: list[list[int]], num_gold: list[int] | None = None) -> float:
    """CodiEsp's official ranking metric (MAP), the figure its shared task ranked teams by: the mean of
    `average_precisions` (arguments as there); 0 where no document has gold codes."""
    values = average_precisions(scores, gold, num_gold)
    return float(values.mean()) if len(values) else 0.0


def label_matrix(documents: list[list[str]], codes: list[str], dtype=bool) -> np.ndarray:
    """Multi-hot labels (documents × codes) of each document's codes among `codes` (others are left out);
    bool by default (scikit-learn's OneVsRestClassifier scrambles the columns of int8 matrices over 127 codes)."""
    index = {code: i for i, code in enumerate(codes)}
    matrix = np.zeros((len(documents), len(codes)), dtype=dtype)
    for row, document in enumerate(documents):
        matrix[row, [index[code] for code in document if code in index]] = 1
    return matrix


def gold_indices(gold_codes: list[list[str]], codes: list[str], train_codes: set[str]):
    """(gold indices among `codes`, gold counts, the same for the gold codes absent from train)."""
    index = {code: i for i, code in enumerate(codes)}
    unseen_codes = [[code for code in document if code not in train_codes] for document in gold_codes]
    gold = [[index[code] for code in document if code in index] for document in gold_codes]
    unseen = [[index[code] for code in document if code in index] for document in unseen_codes]
    return gold, [len(document) for document in gold_codes], unseen, [len(document) for document in unseen_codes]


def test_report(logits, labels, gold_codes, codes, train_codes, threshold_on_logits) -> dict[str, float]:
    """`icd_metrics` of the logits at `threshold_on_logits`, plus MAP over every gold code of each note
    (`gold_codes`: code strings, also those outside `codes`) and, where some gold codes never occur in training
    (`train_codes`), the MAP over those codes alone; "threshold" is the threshold as a probability (a config's)."""
    metrics = icd_metrics(logits, labels, threshold_on_logits)
    gold, totals, unseen, unseen_totals = gold_indices(gold_codes, codes, train_codes)
    metrics["map"] = mean_average_precision(logits, gold, totals)
    if any(unseen):
        metrics["map_unseen_codes"] = mean_average_precision(logits, unseen, unseen_totals)
    metrics["threshold"] = probability_threshold(threshold_on_logits)
    return metrics


METRIC_NAMES = {"macro_auc": "AUC macro", "micro_auc": "AUC micro", "macro_f1": "F1 macro", "micro_f1": "F1 micro",
                "precision_at_5": "P@5", "precision_at_8": "P@8", "precision_at_15": "P@15", "map": "MAP",
                "map_unseen_codes": "MAP unseen"}


def metric_table(metrics: dict[str, float]) -> str:
    """The paper's table layout as a Markdown table: AUC, F1, P@k, in %; then MAP."""
    present = [(key, name) for key, name in METRIC_NAMES.items() if key in metrics]
    header = "| " + " | ".join(name for _, name in present) + " |"
    rule = "|" + "---|" * len(present)
    values = "| " + " | ".join(f"{100 * metrics[key]:.1f}" for key, _ in present) + " |"
    return f"{header}\n{rule}\n{values}"


# Evidence: MDACE's four measures (Cheng et al., ACL 2023), as their scorer computes them.
EVIDENCE_TRIM = "-.,/ \n\t"  # stripped from both ends of every span; also ")" on the left and "(" on the right


def trim_span(text: str, begin: int, end: int) -> tuple[int, int]:
    while begin < end and (text[begin] in EVIDENCE_TRIM or text[begin] == ")"):
        begin += 1
    while end > begin and (text[end - 1] in EVIDENCE_TRIM or text[end - 1] == "("):
        end -= 1
    return begin, end


def evidence_keys(text: str, spans) -> dict[str, set]:
    """The keys each measure compares, for spans (begin, end, code) of `text`: exact span (offsets,
    code), span text (lower-cased, code), exact token (its start offset, code) and token text
    (lower-cased, code); tokens are `\\w+` runs of the span's text, without all-digit tokens above 10.
    A span that trimming empties still counts, as MDACE counts it: as an empty span with no tokens."""
    keys = {"exact_span": set(), "span_text": set(), "exact_token": set(), "token_text": set()}
    for begin, end, code in spans:
        begin, end = trim_span(text, begin, end)
        piece = text[begin:end].lower()
        keys["exact_span"].add((begin, end, code))
        keys["span_text"].add((piece, code))
        for match in re.finditer(r"\w+", piece):
            if match.group().isdigit() and int(match.group()) > 10:
                continue
            keys["exact_token"].add((begin + match.start(), code))
            keys["token_text"].add((match.group(), code))
    return keys


def evidence_scores(documents) -> dict[str, float]:
    """MDACE's counts and scores of predicted against gold evidence, for each measure: `{measure}_`
    num_predicted, num_actual, true_positives, false_positives, false_negatives, precision, recall, f1.

    documents: (text, predicted spans, gold spans) per note, spans as (begin, end, code); MDACE scores
    each note with gold evidence (`datasets_scripts.mdace.note_documents` makes these documents). Sets
    are compared per document and the counts summed over documents (micro); each denominator gets 1e-6.
    """
    counts = {measure: [0, 0, 0] for measure in ("exact_span", "span_text", "exact_token", "token_text")}
    for text, predicted, gold in documents:
        predicted_keys, gold_keys = evidence_keys(text, predicted), evidence_keys(text, gold)
        for measure, (true_positives, num_predicted, num_gold) in counts.items():
            counts[measure] = [true_positives + len(predicted_keys[measure] & gold_keys[measure]),
                               num_predicted + len(predicted_keys[measure]), num_gold + len(gold_keys[measure])]
    scores = {}
    for measure, (true_positives, num_predicted, num_gold) in counts.items():
        precision = true_positives / (num_predicted + 1e-6)
        recall = true_positives / (num_gold + 1e-6)
        scores |= {f"{measure}_num_predicted": num_predicted, f"{measure}_num_actual": num_gold,
                   f"{measure}_true_positives": true_positives,
                   f"{measure}_false_positives": num_predicted - true_positives,
                   f"{measure}_false_negatives": num_gold - true_positives,
                   f"{measure}_precision": precision, f"{measure}_recall": recall,
                   f"{measure}_f1": 2 * precision * recall / (precision + recall + 1e-6)}
    return scores
