"""The ICD metrics equal scikit-learn (and hand computations) on random inputs."""

import numpy as np
import pytest
from sklearn.metrics import f1_score, precision_score, recall_score, roc_auc_score

from msmn.evaluation.metrics import icd_metrics, precision_at_k, roc_auc_per_column, tune_threshold


@pytest.fixture
def data():
    rng = np.random.default_rng(0)
    labels = rng.random((60, 40)) < 0.15
    labels[:, 0] = False  # a code with no positives
    labels[:, 1] = True  # a code with no negatives
    probabilities = np.clip(labels * 0.3 + rng.random((60, 40)) * 0.7, 0, 1)
    probabilities[:10, 2] = 0.5  # ties
    return probabilities.round(3), labels


def test_aucs_equal_sklearn(data):
    probabilities, labels = data
    metrics = icd_metrics(probabilities, labels, 0.5)
    evaluable = [c for c in range(labels.shape[1]) if 0 < labels[:, c].sum() < len(labels)]
    expected_macro = np.mean([roc_auc_score(labels[:, c], probabilities[:, c]) for c in evaluable])
    assert metrics["macro_auc"] == pytest.approx(expected_macro, abs=1e-12)
    assert metrics["micro_auc"] == pytest.approx(roc_auc_score(labels.ravel(), probabilities.ravel()), abs=1e-12)
    per_code = roc_auc_per_column(labels, probabilities)
    assert np.isnan(per_code[0]) and np.isnan(per_code[1])


def test_f1_and_precision_at_k_equal_sklearn_and_hand(data):
    probabilities, labels = data
    metrics = icd_metrics(probabilities, labels, 0.5)
    predictions = probabilities > 0.5
    assert metrics["micro_f1"] == pytest.approx(f1_score(labels, predictions, average="micro"))
    assert metrics["micro_precision"] == pytest.approx(precision_score(labels, predictions, average="micro"))
    assert metrics["micro_recall"] == pytest.approx(recall_score(labels, predictions, average="micro"))
    assert metrics["mean_per_code_f1"] == pytest.approx(f1_score(labels, predictions, average="macro", zero_division=0))
    # CAML macro-F1: harmonic mean of macro-precision and macro-recall over all codes (0/0 → 0)
    tp = (predictions & labels).sum(0)
    macro_p = np.mean([t / p if p else 0 for t, p in zip(tp, predictions.sum(0))])
    macro_r = np.mean([t / g if g else 0 for t, g in zip(tp, labels.sum(0))])
    assert metrics["macro_f1"] == pytest.approx(2 * macro_p * macro_r / (macro_p + macro_r))
    for k in (5, 8, 15):
        top = np.argsort(-probabilities, axis=1, kind="stable")[:, :k]
        hits = np.take_along_axis(labels, top, axis=1).sum(1)
        assert metrics[f"precision_at_{k}"] == pytest.approx(np.mean(hits / k))
        assert metrics[f"recall_at_{k}"] == pytest.approx(np.mean(hits / labels.sum(1)))
    assert "precision_at_15" not in icd_metrics(probabilities[:, :10], labels[:, :10], 0.5)


def test_threshold_maximises_micro_f1(data):
    probabilities, labels = data
    threshold = tune_threshold(probabilities, labels)
    best = icd_metrics(probabilities, labels, threshold)["micro_f1"]
    for candidate in np.unique(probabilities):
        assert f1_score(labels.ravel(), probabilities.ravel() > candidate) <= best + 1e-12
    assert 0 < threshold < 1


def test_shape_mismatch():
    with pytest.raises(ValueError, match="must be equal"):
        icd_metrics(np.zeros((2, 3)), np.zeros((2, 4)), 0.5)


def test_local_evaluate_module_offline(data):
    import evaluate
    from pathlib import Path

    module = Path(__file__).resolve().parent.parent / "msmn" / "evaluation" / "icd_coding"
    probabilities, labels = data
    icd = evaluate.load(str(module))
    result = icd.compute(predictions=probabilities.tolist(), references=labels.astype(int).tolist(), threshold=0.5)
    expected = icd_metrics(probabilities.astype(np.float32), labels, 0.5)
    assert result.keys() == expected.keys()
    for key in expected:
        assert result[key] == pytest.approx(expected[key], abs=1e-9)


def test_precision_at_k_beyond_the_number_of_codes_takes_every_code():
    labels = np.array([[1, 0, 1], [0, 0, 0]], dtype=bool)
    scores = np.array([[0.1, 0.9, 0.3], [0.5, 0.2, 0.1]])
    assert precision_at_k(labels, scores, 8) == pytest.approx((np.mean([2 / 8, 0 / 8]), 0.5))
    assert precision_at_k(labels, scores, 3) == pytest.approx((np.mean([2 / 3, 0.0]), 0.5))
