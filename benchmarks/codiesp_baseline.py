"""A simple baseline on the package's default benchmark, to put MSMN's figures in context.

TF-IDF (word 1–2-grams) + one-vs-rest logistic regression on CodiEsp (same config, language and
splits as `train.py --preset ...`). The regularisation C (1 to 100,000), the class weights (none or
"balanced") and the decision threshold are selected on dev (C and the weights by the preset's
selection metric, the threshold for micro-F1); test is only evaluated. Codes are those of the
config's label set (for `codiesp-d`, the train split's 1,767: 5.5 minutes on a 2-core CPU); MAP
counts every gold code.

    pip install -e ".[benchmark]" && python benchmarks/codiesp_baseline.py [--config codiesp-d-50] [--language en]
"""

import argparse
import itertools
import json

import numpy as np
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression
from sklearn.multiclass import OneVsRestClassifier

import datasets_scripts
from msmn.evaluation.metrics import icd_metrics, label_matrix, mean_average_precision, tune_threshold

SELECTION = {"codiesp-d-50": "precision_at_5", "codiesp-d": "precision_at_8", "codiesp-p": "precision_at_5"}


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--config", default="codiesp-d-50", choices=sorted(SELECTION))
    parser.add_argument("--language", default="en", choices=["en", "es"])
    args = parser.parse_args()
    data = datasets_scripts.load("codiesp", config=args.config, language=args.language)
    dataset, num_codes = data.splits, len(data.codes)
    train, dev, test = (label_matrix(dataset[s]["labels"], data.codes) for s in ("train", "validation", "test"))
    trained_codes = train.any(axis=0)  # a code without train positives gets score 0

    vectorizer = TfidfVectorizer(ngram_range=(1, 2), min_df=2, sublinear_tf=True)
    features = {s: vectorizer.fit_transform(dataset[s]["text"]) if s == "train" else vectorizer.transform(dataset[s]["text"])
                for s in ("train", "validation", "test")}

    def scores(classifier, split):
        result = np.zeros((features[split].shape[0], num_codes))
        result[:, trained_codes] = classifier.predict_proba(features[split])
        return result

    best = None
    for c, class_weight in itertools.product((1.0, 10.0, 100.0, 1000.0, 10000.0, 100000.0), (None, "balanced")):
        classifier = OneVsRestClassifier(LogisticRegression(C=c, class_weight=class_weight, max_iter=2000), n_jobs=2)
        classifier.fit(features["train"], train[:, trained_codes])
        dev_scores = scores(classifier, "validation")
        selected = icd_metrics(dev_scores, dev, 0.5)[SELECTION[args.config]]
        print(f"C={c:g}, class_weight={class_weight}: dev {SELECTION[args.config]} = {selected:.4f}", flush=True)
        if best is None or selected > best[0]:
            best = (selected, (c, class_weight), classifier, tune_threshold(dev_scores, dev))
    _, (c, class_weight), classifier, threshold = best
    test_scores = scores(classifier, "test")
    metrics = icd_metrics(test_scores, test, threshold)
    gold = [[data.codes.index(code) for code in labels] for labels in dataset["test"]["labels"]]
    metrics["map"] = mean_average_precision(test_scores, gold, [len(g) for g in dataset["test"]["gold_codes"]])
    metrics |= {"C": c, "class_weight": class_weight, "threshold": threshold}
    print(f"TF-IDF + one-vs-rest logistic regression, {args.config} ({args.language}), test set:")
    print(json.dumps({k: round(v, 4) if isinstance(v, float) else v for k, v in metrics.items()}, indent=1))


if __name__ == "__main__":
    main()
