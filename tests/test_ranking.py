"""Ranking candidate codes beyond the label set: the term matcher, the two-stage ranking, the operating
points chosen on dev, and the candidates saved beside a checkpoint."""

import math
import shutil
from collections import Counter

import numpy as np
import pytest
import torch
from transformers import pipeline

from conftest import make_model
from modeling_msmn import ICDCodingPipeline
from msmn.training.candidate_tuning import (UNSEEN_MAP_FLOOR, bootstrap_interval, fit_matcher, new_ranker,
                                            operating_point, pareto_frontier, ranking_metrics, two_stage_scores)
from modeling_msmn.ranking_msmn import OperatingPoint
from ranked_checkpoint import CANDIDATE_TERMS, CODE_TERMS, DEV, REFERENCE, TRAIN_COUNTS, UNSEEN_TERMS, candidate_tokenizer

def reference_term_match(tokenizer, ranker, model, texts: list[str], longest_ngram: int) -> np.ndarray:
    """(notes, candidates) the term match computed here in float64 from its definition, word by word."""
    num_synonyms, ignored = model.config.num_synonyms, {tokenizer.pad_token_id, tokenizer.unk_token_id}
    term_rows = torch.cat([model.msmn.code_term_ids, ranker.extra_term_ids]).tolist()

    def counts(ids):
        words = [i for i in ids]
        features = Counter((i,) for i in words if i not in ignored)
        if longest_ngram == 2:
            features.update(pair for pair in zip(words, words[1:]) if not set(pair) & ignored)
        return features

    texts_ids = [tokenizer(text)["input_ids"] for text in texts]
    documents = [set().union(*(counts(row) for row in term_rows[c * num_synonyms:(c + 1) * num_synonyms]))
                 for c in range(len(term_rows) // num_synonyms)]
    documents += [set(counts(tokenizer(text)["input_ids"])) for text in REFERENCE]
    frequency = Counter(feature for document in documents for feature in document)
    idf = {feature: math.log((1 + len(documents)) / (1 + df)) + 1 for feature, df in frequency.items()}

    def vector(ids):
        weights = {f: (1 + math.log(n)) * idf[f] for f, n in counts(ids).items() if f in idf}
        norm = math.sqrt(sum(w * w for w in weights.values())) or 1.0
        return {f: w / norm for f, w in weights.items()}

    term_vectors = [vector(row) for row in term_rows]
    scores = np.zeros((len(texts), len(documents) - len(REFERENCE)))
    for n, ids in enumerate(texts_ids):
        note = vector(ids)
        for c in range(scores.shape[1]):
            scores[n, c] = max(sum(w * note.get(f, 0.0) for f, w in term_vectors[c * num_synonyms + j].items())
                               for j in range(num_synonyms))
    return scores


@pytest.mark.parametrize("longest_ngram", [1, 2])
def test_ranking_equals_its_parts_in_float64(longest_ngram):
    tokenizer = candidate_tokenizer()
    model = make_model(tokenizer).double().eval()
    ranker = new_ranker(model, tokenizer, CANDIDATE_TERMS, TRAIN_COUNTS, "test codes", term_seed=0)
    ranker.matcher = fit_matcher(ranker, model, tokenizer, REFERENCE, longest_ngram)
    texts = [text for text, _ in DEV[:5]] + ["No abnormal finding."]
    inputs = tokenizer(texts, padding=True, return_tensors="pt")
    point = OperatingPoint(term_match_weight=3.0, prior_weight=0.5)
    with torch.no_grad():
        ranked = ranker.rank(model, inputs["input_ids"], inputs["attention_mask"], point)
        # the parts: MSMN's logits of the label set and of the extra codes from their term ids, in one forward pass
        logits = model(**inputs, extra_code_term_ids=ranker.extra_term_ids).logits
    term_match = reference_term_match(tokenizer, ranker, model, texts, longest_ngram)
    prior = np.log1p([TRAIN_COUNTS.get(code, 0) for code in ranker.codes(model.config)])
    expected = logits.numpy() + 3.0 * term_match + 0.5 * prior
    assert term_match[0].max() > 0 and (term_match[-1] == 0).all()  # a note of no candidate's words matches none
    np.testing.assert_allclose(ranked.scores.numpy(), expected, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(ranked.msmn_logits.numpy(), logits.numpy(), rtol=1e-9, atol=1e-12)

    # two stages: the label set and the 3 best first-stage candidates outside it re-scored, the others
    # below them in first-stage order
    first_stage = 3.0 * term_match + 0.5 * prior
    with torch.no_grad():
        two_stage = ranker.rank(model, inputs["input_ids"], inputs["attention_mask"],
                                OperatingPoint(3.0, 0.5, shortlist_size=3))
    for note in range(len(texts)):
        extra_order = np.argsort(-first_stage[note, 4:], kind="stable")
        rescored = np.r_[0:4, 4 + extra_order[:3]]
        others = 4 + extra_order[3:]
        np.testing.assert_allclose(two_stage.scores[note, rescored].numpy(), expected[note, rescored], rtol=1e-9)
        assert np.isnan(two_stage.msmn_logits[note, others].numpy()).all()
        assert two_stage.scores[note, others].max() < two_stage.scores[note, rescored].min()
        assert (np.diff(two_stage.scores[note, others].numpy()) <= 0).all()  # first-stage order kept
    # the same ranking from every candidate's parts, as the dev choice of the shortlist computes it
    np.testing.assert_allclose(two_stage_scores(logits.numpy(), first_stage, 4, 3), two_stage.scores.numpy(), rtol=1e-9)


def test_operating_points_are_chosen_on_dev(ranked_checkpoint):
    _, model, ranker, report = ranked_checkpoint
    grid = report["dev_grid"]  # (λ, β) → (dev MAP, dev unseen MAP, its 95% interval), every candidate re-scored
    best, unseen = ranker.point("best_map"), ranker.point("unseen")
    assert grid[best.term_match_weight, best.prior_weight][0] == max(figures[0] for figures in grid.values())
    lower_bounds = {weights: figures[2][0] for weights, figures in grid.items()}
    unseen_weights = (unseen.term_match_weight, unseen.prior_weight)
    if max(lower_bounds.values()) >= UNSEEN_MAP_FLOOR:  # the best dev MAP whose interval starts at the floor
        assert lower_bounds[unseen_weights] >= UNSEEN_MAP_FLOOR
        assert grid[unseen_weights][0] == max(grid[w][0] for w in grid if lower_bounds[w] >= UNSEEN_MAP_FLOOR)
    else:  # none reaches it: the pair whose interval starts highest
        assert lower_bounds[unseen_weights] == max(lower_bounds.values())
    for point in (best, unseen):
        weights = (point.term_match_weight, point.prior_weight)
        assert point.dev["map_every_candidate_rescored"] == round(grid[weights][0], 4)
        assert point.dev["map"] >= point.dev["map_every_candidate_rescored"] - 0.001 - 1e-4  # the shortlist's tolerance
        assert point.shortlist_size is None  # 10 codes outside the label set: fewer than the smallest shortlist
        assert point.threshold is not None and 0 < point.dev["micro_f1"] <= 1


def test_ranking_metrics_filter_the_other_gold_codes():
    # two notes over codes A–E; train has A and B. Note 1: gold A (seen) at rank 1, C (unseen) at rank 3
    # behind D; note 2: gold E (unseen) at rank 2 behind B (not gold)
    scores = np.array([[0.9, 0.1, 0.5, 0.7, 0.0], [0.0, 0.8, 0.1, 0.2, 0.6]], dtype=np.float32)
    metrics = ranking_metrics(scores, [["A", "C"], ["E"]], ["A", "B", "C", "D", "E"], {"A", "B"})
    assert metrics["map_unseen_codes"] == pytest.approx((1 / 3 + 1 / 2) / 2)
    assert metrics["map_unseen_codes_filtered"] == pytest.approx((1 / 2 + 1 / 2) / 2)  # A left out: C at rank 2
    # resampling two notes draws both from one note a quarter of the time each: the interval spans them
    assert metrics["map_unseen_codes_95_interval"] == (0.3333, 0.5)
    assert bootstrap_interval(np.full(40, 0.25)) == (0.25, 0.25)


def test_operating_point_is_the_best_dev_map_among_weights_over_the_unseen_floor():
    # (λ, β) -> dev MAP and dev MAP over codes absent from train
    dev_map = {(0.0, 1.0): 0.30, (48.0, 2.0): 0.35, (96.0, 2.0): 0.33, (64.0, 1.0): 0.32, (96.0, 1.0): 0.33,
               (128.0, 0.0): 0.16}
    dev_unseen_map = {(0.0, 1.0): 0.003, (48.0, 2.0): 0.015, (96.0, 2.0): 0.048, (64.0, 1.0): 0.042,
                      (96.0, 1.0): 0.061, (128.0, 0.0): 0.079}
    assert operating_point(dev_map, dev_unseen_map, 0.03) == (96.0, 1.0)  # tie on dev MAP: the smaller β
    assert operating_point(dev_map, dev_unseen_map, 0.061) == (96.0, 1.0)  # the floor itself counts as reached
    assert operating_point(dev_map, dev_unseen_map, 0.07) == (128.0, 0.0)  # the only one over the floor
    assert operating_point(dev_map, dev_unseen_map, 0.0) == (48.0, 2.0)  # no floor: the best dev MAP
    assert operating_point(dev_map, dev_unseen_map, 0.08) is None
    # the trade-off: the weights no others match or beat on both; (160, 0) equals (128, 0) on both
    dev_map[160.0, 0.0], dev_unseen_map[160.0, 0.0] = 0.16, 0.079
    assert pareto_frontier(dev_map, dev_unseen_map) == [(48.0, 2.0), (96.0, 1.0), (128.0, 0.0)]


def test_pipeline_ranks_every_candidate_from_the_folder(ranked_checkpoint):
    folder, model, ranker, _ = ranked_checkpoint
    coder = pipeline("icd-coding", model=str(folder), trust_remote_code=True)
    note = DEV[0][0]
    label_set = coder(note, top_k=4)
    ranked = coder(note, candidates="all", top_k=14)
    assert [p["code"] for p in ranked] != [p["code"] for p in label_set]  # the candidates change the ranking
    assert sorted(p["code"] for p in ranked) == sorted(CANDIDATE_TERMS)
    assert [p["score"] for p in ranked] == sorted((p["score"] for p in ranked), reverse=True)
    probabilities = {p["code"]: p["probability"] for p in label_set}
    for prediction in ranked:
        assert prediction["in_label_set"] == (prediction["code"] in CODE_TERMS)
        if prediction["in_label_set"]:  # the label set's probability, as without candidates
            assert prediction["probability"] == pytest.approx(probabilities[prediction["code"]], abs=1e-6)
        else:
            assert prediction["probability"] is None and prediction["description"] == UNSEEN_TERMS[prediction["code"]][0]
        assert prediction["synonym"] in CANDIDATE_TERMS[prediction["code"]]
    # by default, those above the point's score threshold; the "unseen" point too
    threshold = ranker.point("best_map").threshold
    assert [p["code"] for p in coder(note, candidates="all")] == [p["code"] for p in ranked if p["score"] > threshold]
    assert coder(note, candidates="all", operating_point="unseen", top_k=3)
    # a note without words gets no codes, also beside others in a batch, as without candidates
    assert coder("", candidates="all", top_k=3) == [] and coder("!!! ...", codes=["K35.80"]) == []
    assert [len(codes) for codes in coder(["", note], candidates="all", top_k=3, batch_size=2)] == [0, 3]
    with pytest.raises(ValueError, match=r"operating_point 'rare'.*\['best_map', 'unseen'\]"):
        coder(note, candidates="all", operating_point="rare")
    with pytest.raises(ValueError, match="candidates must be 'all'"):
        coder(note, candidates="icd10cm")


def test_an_unseen_code_gets_its_evidence_at_the_right_characters(ranked_checkpoint):
    folder, model, ranker, _ = ranked_checkpoint
    coder = pipeline("icd-coding", model=str(folder), trust_remote_code=True)
    note = "Seen in clinic.\nAcute appendicitis, operated; renal disorder excluded."
    asked = coder(note, codes=["K35.80", "E11.65", "N28.9"], num_evidence=2)
    assert [p["code"] for p in asked] == ["K35.80", "E11.65", "N28.9"]
    assert [p["in_label_set"] for p in asked] == [False, True, False]
    # the same codes put into the label set (set_codes, from the same term ids) give the same evidence
    extra = [ranker.extra_codes.index(code) for code in ("K35.80", "N28.9")]
    num_synonyms = model.config.num_synonyms
    term_ids = torch.cat([model.msmn.code_term_ids[: num_synonyms], *(
        ranker.extra_term_ids[index * num_synonyms : (index + 1) * num_synonyms] for index in extra)])
    widened = make_model(coder.tokenizer).eval()
    widened.load_state_dict(model.state_dict())
    widened.set_codes(["E11.65", "K35.80", "N28.9"], term_ids.tolist(),
                      [model.config.code_terms[0]] + [ranker.extra_terms[index] for index in extra],
                      ["", "", ""])
    expected = ICDCodingPipeline(model=widened, tokenizer=coder.tokenizer)(note, codes=["K35.80", "E11.65", "N28.9"],
                                                                             num_evidence=2)
    for prediction, reference in zip(asked, expected):
        assert prediction["evidence"] and prediction["synonym"] == reference["synonym"]
        for span, reference_span in zip(prediction["evidence"], reference["evidence"], strict=True):
            assert (span["start"], span["end"], span["text"]) == (reference_span["start"], reference_span["end"],
                                                                 reference_span["text"])
            assert span["weight"] == pytest.approx(reference_span["weight"], abs=1e-6)
            assert note[span["start"] : span["end"]] == span["text"]


def test_damaged_or_foreign_candidate_files_get_clear_errors(ranked_checkpoint, tmp_path, tokenizer):
    folder = ranked_checkpoint[0]
    damaged = tmp_path / "damaged"
    shutil.copytree(folder, damaged)
    tensors = damaged / "candidate_codes.safetensors"
    tensors.write_bytes(tensors.read_bytes()[:100])
    coder = pipeline("icd-coding", model=str(damaged), trust_remote_code=True)
    with pytest.raises(ValueError, match=r"candidate codes .* cannot be read .*save them again with train.py"):
        coder("Fever.", candidates="all")
    # candidates chosen for another model (conftest's, with a smaller vocabulary)
    foreign = tmp_path / "foreign"
    ICDCodingPipeline(model=make_model(tokenizer), tokenizer=tokenizer).save_pretrained(foreign)
    for name in ("candidate_codes.json", "candidate_codes.safetensors"):
        shutil.copy(folder / name, foreign / name)
    coder = pipeline("icd-coding", model=str(foreign), trust_remote_code=True)
    with pytest.raises(ValueError, match=r"saved for another model .* vocabulary"):
        coder("Fever.", candidates="all")
    assert coder("Fever.", top_k=1)  # the label set codes as before
