"""Scoring codes never seen in training, from their terms alone (MSMN's default score has no
per-code weights).

Loads a checkpoint trained by `python train.py` (CodiEsp-D top-50), gives it every CodiEsp
diagnosis code (2,557, with their ICD-10-CM terms) with `set_codes`, and reports CodiEsp's MAP on
the test set: over all gold codes, and over the gold codes that never occur in the training split.

    python benchmarks/codiesp_unseen_codes.py [--checkpoint msmn-codiesp-d-50]
"""

import argparse
import json
import warnings

import numpy as np
import torch
from transformers import AutoModelForSequenceClassification, AutoTokenizer

from datasets_scripts.code_synonyms import codiesp_synonyms
from datasets_scripts.codiesp import read_shipped_split
from modeling_msmn import build_code_term_ids
from modeling_msmn.metrics import mean_average_precision


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--checkpoint", default="msmn-codiesp-d-50")
    args = parser.parse_args()
    tokenizer = AutoTokenizer.from_pretrained(args.checkpoint, trust_remote_code=True)
    model = AutoModelForSequenceClassification.from_pretrained(args.checkpoint, trust_remote_code=True).eval()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        code_terms, _ = codiesp_synonyms("codiesp-d", num_synonyms=model.config.num_synonyms)
    codes = sorted(code_terms)
    term_ids, terms = build_code_term_ids(tokenizer, codes, code_terms, model.config.num_synonyms, model.config.term_length)
    trained_on = set(model.config.label2id)
    model.set_codes(codes, term_ids, terms, [code_terms[code][0] for code in codes])

    test = read_shipped_split("test")
    train_codes = {code for record in read_shipped_split("train") for code in record["diagnosis_codes"]}
    with torch.no_grad():
        scores = np.concatenate([
            torch.sigmoid(model(**tokenizer([r["text_en"] for r in test[i:i + 8]], padding=True, truncation=True,
                                            return_tensors="pt")).logits).numpy()
            for i in range(0, len(test), 8)
        ])
    index = {code: i for i, code in enumerate(codes)}
    gold = [[index[c] for c in r["diagnosis_codes"]] for r in test]
    unseen = [[index[c] for c in r["diagnosis_codes"] if c not in train_codes] for r in test]
    unseen_assignments = sum(map(len, unseen))
    results = {
        "codes_scored": len(codes),
        "codes_with_trained_examples": len(trained_on),
        "map_all_codes": mean_average_precision(scores, gold),
        "map_unseen_codes": mean_average_precision(scores, unseen),
        "test_assignments_of_unseen_codes": unseen_assignments,
        "documents_with_unseen_codes": sum(1 for u in unseen if u),
    }
    # the same ranking with random scores, for scale
    rng = np.random.default_rng(0)
    results["map_unseen_codes_random_scores"] = mean_average_precision(rng.random(scores.shape), unseen)
    print(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
