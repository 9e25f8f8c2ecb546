"""ICD-coding metrics (docs/model.md, "Metrics") as a local `evaluate` module: works offline.

    import evaluate
    icd = evaluate.load("msmn/evaluation/icd_coding")
    icd.compute(predictions=probabilities, references=multi_hot_labels, threshold=0.5)

`predictions` are per-code probabilities (documents × codes), `references` multi-hot labels; the
result holds micro/macro AUC, micro P/R/F1, CAML's macro-F1 and the mean per-code F1, P@k and R@k.
"""

import datasets
import evaluate
import numpy as np

from msmn.evaluation.metrics import icd_metrics


class IcdCoding(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description=__doc__,
            citation="Yuan, Tan & Huang. Code Synonyms Do Matter: Multiple Synonyms Matching Network for Automatic ICD Coding. ACL 2022.",
            inputs_description="predictions: list of per-code probabilities; references: list of multi-hot labels",
            features=datasets.Features(
                {"predictions": datasets.List(datasets.Value("float32")), "references": datasets.List(datasets.Value("int32"))}
            ),
        )

    def _compute(self, predictions, references, threshold=0.5, ks=(5, 8, 15)):
        return icd_metrics(np.asarray(predictions), np.asarray(references) > 0, threshold, ks)
