"""ICD-coding metrics (docs/model.md, "Metrics") as a local `evaluate` module: works offline.

    import evaluate
    icd = evaluate.load("msmn/evaluation/icd_coding")
    icd.compute(predictions=logits, references=multi_hot_labels, threshold=0.0)   # logit 0: probability 0.5

`predictions` are per-code scores (documents × codes) and `threshold` is on their scale; give logits:
the rankings (AUC, P@k) compare scores, and float32 probabilities are exactly 1.0 above a logit of
about 16.6, where confident codes would tie. `references` are multi-hot labels; the result holds micro/macro AUC, micro P/R/F1, CAML's macro-F1 and the mean per-code F1, P@k and R@k.
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
            inputs_description="predictions: list of per-code logits (threshold on their scale); references: list of multi-hot labels",
            features=datasets.Features(
                {"predictions": datasets.List(datasets.Value("float32")), "references": datasets.List(datasets.Value("int32"))}
            ),
        )

    def _compute(self, predictions, references, threshold=0.5, ks=(5, 8, 15)):
        return icd_metrics(np.asarray(predictions), np.asarray(references) > 0, threshold, ks)
