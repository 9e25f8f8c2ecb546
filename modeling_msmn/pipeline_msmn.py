"""The `icd-coding` pipeline: codes a note with a trained MSMN and shows the evidence for each code.

    coder = pipeline("icd-coding", model="msmn-codiesp-d-50", trust_remote_code=True)
    coder("Paciente de 64 años con hipertensión arterial ...")
    → [{"code": "i10", "description": ..., "probability": 0.93, "synonym": ...,
        "evidence": [{"start": 29, "end": 53, "text": "hipertensión arterial", "weight": 0.41}, ...]}, ...]

For each note, the predicted codes (probability above the checkpoint's threshold, tuned on dev by
train.py, or the `top_k` most probable codes), most probable first; none for a note without words.
Each code has:
    evidence: up to `num_evidence` spans of the note that the code's attention weighted most,
        with character offsets into the original text (`text[start:end] == span["text"]`) and
        their share of the attention;
    synonym: the code term whose attention head won most of the max-pooling over synonyms.

With `candidates="all"`, a checkpoint trained with `--candidate_codes` ranks every candidate code
it carries (e.g. all of ICD-10-CM), codes outside its label set included (`ranking_msmn`); each
code then also has `score` and `in_label_set`, and `probability` only where it is in the label set.

Notes longer than the model's `max_note_tokens` are cut as in training, with a warning that says how
much. Synonym vectors are computed once and reused for every note (the model caches them while its
weights do not change).
"""

import dataclasses
import logging
import math
import re
import shutil
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from transformers import Pipeline
from transformers.utils import cached_file

from .ranking_msmn import CANDIDATE_TENSORS_FILE, CANDIDATES_FILE, CandidateRanker
from .tokenization_msmn import vocabulary_sha256

logger = logging.getLogger(__name__)

EVIDENCE_CODES_PER_CALL = 256
LENGTH_BUCKET = 64  # notes are padded to a multiple of this many tokens
ENDPOINT_REQUIREMENTS = "transformers>=5,<6\ntorch\nsafetensors\nnumpy\n"  # requirements.txt of a checkpoint
# Characters whose words the tokenizer (the authors' rules: no Unicode folding) cannot find in a vocabulary
# of ordinary text: full-width forms (U+FF01-FF5E) and Latin ligatures (U+FB00-FB06).
FULL_WIDTH_OR_LIGATURE = re.compile("[\uff01-\uff5e\ufb00-\ufb06]")


def evidence_spans(token_weights: np.ndarray, num_spans: int, max_span_tokens: int) -> list[tuple[int, int]]:
    """Token ranges [first, last] around the peaks of `token_weights`, highest peak first.

    A span starts at the highest-weighted token not yet in a span and grows to the neighbour with the
    larger weight while that weight is at least half the peak's, up to `max_span_tokens` tokens.
    """
    is_free = np.ones(len(token_weights), dtype=bool)
    spans = []
    while len(spans) < num_spans and is_free.any():
        peak = int(np.argmax(np.where(is_free, token_weights, -np.inf)))
        first = last = peak
        is_free[peak] = False
        while last - first + 1 < max_span_tokens:
            candidates = [
                position
                for position in (first - 1, last + 1)
                if 0 <= position < len(token_weights)
                and is_free[position]
                and token_weights[position] >= 0.5 * token_weights[peak]
            ]
            if not candidates:
                break
            position = max(candidates, key=lambda p: token_weights[p])
            is_free[position] = False
            first, last = min(first, position), max(last, position)
        spans.append((first, last))
    return spans


@dataclasses.dataclass
class CodeScores:
    """One scoring of a batch of notes, by the label set or by the candidate ranker.

    scores: (B, S) what ranks and thresholds the codes (the label set: probabilities; candidates: the
        ranker's score); probabilities: (B, S) MSMN's probability of each scored code; order: (B, S), or
        (B, c) for asked codes: code indices, best first; num_scored: how many codes a note can be given;
        threshold: the default threshold on `scores`; note_states: (B, N, d), for the evidence; ranker:
        the candidate ranker (None for the label set), whose codes' attention queries the evidence needs.
    """

    scores: torch.Tensor
    probabilities: torch.Tensor
    order: torch.Tensor
    num_scored: int
    threshold: float
    note_states: torch.Tensor
    ranker: CandidateRanker | None = None


def check_review_band(review_threshold: float | None, threshold: float) -> None:
    """A review band lies below the threshold it bands."""
    if review_threshold is not None and review_threshold >= threshold:
        raise ValueError(f"review_threshold ({review_threshold}) must be below the threshold ({threshold:.4f}): the "
                         "codes between them come for review.")


def check_vocabulary(config, tokenizer) -> None:
    """The tokenizer is the one the model was trained with: as many words, the same words (where the
    config records their hash), or a clear error."""
    fix = "tokenizer.json and config.json come from different checkpoints; copy the whole folder that train.py wrote."
    if len(tokenizer) != config.vocab_size:
        raise ValueError(f"The tokenizer has {len(tokenizer):,} words and the model's embedding {config.vocab_size:,}: {fix}")
    if getattr(config, "vocabulary_sha256", None) is None:
        if config.name_or_path:  # loaded from a folder, not built in this process
            logger.warning("This checkpoint records no hash of its vocabulary (saved before checkpoints kept one): "
                           "only the tokenizer's size could be checked against the model.")
    elif vocabulary_sha256(tokenizer) != config.vocabulary_sha256:
        raise ValueError(f"The tokenizer's words are not those the model was trained with (their hash differs): {fix}")


class ICDCodingPipeline(Pipeline):
    """ICD codes for clinical notes, with code descriptions, probabilities and evidence spans.

    Call arguments (also accepted when building the pipeline):
        top_k: return the `top_k` most probable codes instead of those above the threshold (top_k wins
            when both are given).
        threshold: probability above which a code is predicted (default: the checkpoint's); with
            candidates="all", the score above which a candidate is predicted (default: the operating
            point's, tuned on dev for micro-F1 over all gold codes).
        codes: a list of codes to return for every note, in this order, with their probability and
            evidence, whatever their probability (e.g. to check the evidence of codes a coder chose);
            any candidate code of the checkpoint, also outside its label set.
        candidates: "all" ranks every candidate code of the checkpoint (train.py --candidate_codes):
            the label set and the codes beyond it, scored MSMN logit + λ·term match + β·train prior;
            each prediction also has `score` and `in_label_set` (trained on, or only ranked from its
            terms), and `probability` is None outside the label set.
        operating_point: with candidates, "best_map" (default: the best dev MAP) or "unseen" (the best
            dev MAP that still finds codes absent from training; see docs/all-codes.md).
        review_threshold: a review band below the threshold: the codes above `review_threshold` are
            returned, each with `review` (True for those at or below the threshold: candidates for a
            coder to check; False for the confident ones above it).
        num_evidence: evidence spans per code, at most (default 3).
        max_span_tokens: longest evidence span, in tokens (default 5).
        min_evidence_weight: spans with a smaller share of the code's attention are left out (default 0.01).
        note_info: return, per note, {"codes": [the predictions], "note_words": the note's words,
            "coded_characters": how many of its characters the model read (all but what lies past the
            first max_note_tokens words), "short_note": whether it has fewer words than 99% of the
            training notes (None where the checkpoint does not record them)} instead of the predictions
            alone. A model reads a note much shorter than those it learnt from (a few keywords) with
            less certainty than its probabilities suggest: review such a note's codes closely.
        batch_size: notes per forward pass (a `Pipeline` argument).
    """

    def __init__(self, model, tokenizer=None, **kwargs):
        if getattr(model.config, "model_type", None) != "msmn" or not hasattr(model, "score"):
            raise ValueError(
                f"The icd-coding pipeline needs an MSMN checkpoint (MSMNForSequenceClassification), got "
                f"{type(model).__name__} (model_type {getattr(model.config, 'model_type', None)!r}). "
                "Give it a folder saved by train.py or by ICDCodingPipeline.save_pretrained."
            )
        if tokenizer is None:
            raise ValueError("The icd-coding pipeline needs the MSMN tokenizer saved next to the model.")
        check_vocabulary(model.config, tokenizer)
        super().__init__(model, tokenizer=tokenizer, **kwargs)

    def save_pretrained(self, save_directory, **kwargs):
        """Saves the model, its tokenizer and the code; the config records the hash of the tokenizer's words."""
        self.model.config.vocabulary_sha256 = vocabulary_sha256(self.tokenizer)
        super().save_pretrained(save_directory, **kwargs)
        # the weights are written through a private temporary file: they get the mode of the files beside them
        folder = Path(save_directory)
        for weights in folder.glob("*.safetensors"):
            weights.chmod((folder / "config.json").stat().st_mode & 0o777)
        # what the Hub's Inference Endpoints run for a repository with remote code
        handler = Path(__file__).with_name("handler.py")
        if handler.is_file():  # the package's copy (a pipeline loaded as remote code has none beside it)
            shutil.copyfile(handler, folder / "handler.py")
        (folder / "requirements.txt").write_text(ENDPOINT_REQUIREMENTS, encoding="utf-8")

    def __call__(self, notes, **kwargs):
        if isinstance(notes, list) and not notes:  # no notes, no predictions (the arguments are still checked)
            self._sanitize_parameters(**kwargs)
            return []
        return super().__call__(notes, **kwargs)

    def _sanitize_parameters(
        self, top_k=None, threshold=None, codes=None, num_evidence=None, max_span_tokens=None, min_evidence_weight=None,
        note_info=None, candidates=None, operating_point=None, review_threshold=None,
    ):
        counts = (("top_k", top_k, 1), ("num_evidence", num_evidence, 0), ("max_span_tokens", max_span_tokens, 1))
        for name, value, smallest in counts:
            if value is not None and (not isinstance(value, int) or value < smallest):
                kind = "positive" if smallest else "non-negative"
                raise ValueError(f"{name} must be a {kind} integer, got {value!r}.")
        if candidates not in (None, "all"):
            raise ValueError(f"candidates must be 'all' (every candidate code the checkpoint carries), got {candidates!r}.")
        for name, value in (("threshold", threshold), ("review_threshold", review_threshold)):
            if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))):
                raise ValueError(f"{name} must be a number, got {value!r}.")
            if value is not None and candidates != "all" and not 0.0 < value < 1.0:
                raise ValueError(f"{name} is a probability strictly between 0 and 1, got {value!r} (with "
                                 "candidates='all', a threshold on the score).")
        if operating_point is not None:
            self.candidate_ranker().point(operating_point)
        if review_threshold is not None:  # checked here, before any work, against the threshold in force
            check_review_band(review_threshold, threshold if threshold is not None else (
                self.candidate_ranker().point(operating_point or "best_map").threshold if candidates == "all"
                else self.model.config.threshold))
        if isinstance(codes, str):
            raise ValueError(f"codes must be a list of codes, e.g. codes=[{codes!r}], got the string {codes!r}.")
        if codes is not None:
            unknown = [code for code in codes if code not in self.model.config.label2id]
            has_candidates = bool(unknown) and self.has_candidates()
            if has_candidates:  # codes beyond the label set: the candidates'
                unknown = [code for code in unknown if code not in self.candidate_index()]
            if unknown:
                raise ValueError(f"codes must be a list of the model's codes; not among them: {unknown[:5]!r}"
                                 f"{' (nor among its candidate codes)' if has_candidates else ''}.")
        # Only what is given: call-time parameters update those given when the pipeline was built.
        forward_params = {"top_k": top_k, "threshold": threshold, "codes": codes, "candidates": candidates,
                          "operating_point": operating_point, "review_threshold": review_threshold}
        postprocess_params = {
            "num_evidence": num_evidence,
            "max_span_tokens": max_span_tokens,
            "min_evidence_weight": min_evidence_weight,
            "note_info": note_info,
        }
        return (
            {},
            {name: value for name, value in forward_params.items() if value is not None},
            {name: value for name, value in postprocess_params.items() if value is not None},
        )

    def has_candidates(self) -> bool:
        """Whether the checkpoint carries candidate codes beyond its label set (train.py --candidate_codes)."""
        try:
            self.candidate_ranker()
        except ValueError:
            return False
        return True

    def candidate_ranker(self) -> CandidateRanker:
        """The checkpoint's candidate codes (read from its folder or repository once), or a clear error."""
        if getattr(self, "_candidate_ranker", None) is None:
            source = self.model.name_or_path
            paths = [cached_file(source, name, _raise_exceptions_for_missing_entries=False,
                                 _raise_exceptions_for_connection_errors=False) if source else None
                     for name in (CANDIDATES_FILE, CANDIDATE_TENSORS_FILE)]
            if None in paths:
                raise ValueError(
                    f"This checkpoint ({source or 'a model not loaded from a folder'}) carries no candidate codes "
                    f"beyond its {self.model.config.num_labels} label codes ({CANDIDATES_FILE}): train it with "
                    "train.py --candidate_codes icd10cm (or FILE.json) to rank every code of a code system.")
            self._candidate_ranker = CandidateRanker.from_pretrained(*paths, self.model.config)
        return self._candidate_ranker

    def set_candidate_ranker(self, ranker: CandidateRanker) -> None:
        """Ranks candidates with `ranker` (e.g. one `msmn.training.candidate_tuning.build_ranker` made for this model)
        instead of the one saved in the checkpoint's folder."""
        self._candidate_ranker, self._candidate_index = ranker, None

    def candidate_index(self) -> dict[str, int]:
        """code → its index among every candidate (the label set first)."""
        if getattr(self, "_candidate_index", None) is None:
            codes = self.candidate_ranker().codes(self.model.config)
            self._candidate_index = {code: index for index, code in enumerate(codes)}
        return self._candidate_index

    def preprocess(self, note):
        if not isinstance(note, str):
            raise TypeError(
                f"The icd-coding pipeline codes notes given as str, got {type(note).__name__}: pass a str or a "
                "list of str (e.g. list(dataset['text']))."
            )
        encoding = self.tokenizer(note, return_offsets_mapping=True, return_attention_mask=False)
        max_tokens = self.model.config.max_note_tokens
        num_tokens = len(encoding["input_ids"])
        cut_at = encoding["offset_mapping"][max_tokens][0] if num_tokens > max_tokens else len(note)
        if num_tokens > max_tokens:
            logger.warning(
                "A note has %d tokens; MSMN reads the first %d, as in training: %d tokens (characters %d to %d) "
                "were cut and are not coded.", num_tokens, max_tokens, num_tokens - max_tokens, cut_at, len(note),
            )
        width_forms = 0 if note.isascii() else len(FULL_WIDTH_OR_LIGATURE.findall(note))
        if width_forms:
            logger.warning(
                "A note holds %d full-width letters or digits or Latin ligatures (e.g. \uff26\uff45\uff56\uff45\uff52, "
                "\ufb01): MSMN reads their words as unknown words. Convert the text to NFKC before coding it "
                "(unicodedata.normalize('NFKC', text)).", width_forms,
            )
        input_ids = torch.tensor([encoding["input_ids"][:max_tokens]], dtype=torch.long)
        offsets = torch.tensor(encoding["offset_mapping"][:max_tokens], dtype=torch.long).view(1, -1, 2)
        # padded (masked) to a multiple of LENGTH_BUCKET: oneDNN keeps a kernel per input shape, so a server
        # coding notes of every length would otherwise grow by one kernel per length
        padding = -input_ids.shape[1] % LENGTH_BUCKET
        attention_mask = F.pad(torch.ones_like(input_ids), (0, padding))
        input_ids = F.pad(input_ids, (0, padding), value=self.model.config.pad_token_id)
        offsets = F.pad(offsets, (0, 0, 0, padding))
        return {"input_ids": input_ids, "attention_mask": attention_mask, "offsets": offsets, "note": note,
                "note_words": num_tokens, "coded_characters": cut_at, "short_note": self.is_short(num_tokens)}

    def is_short(self, num_words: int) -> bool | None:
        """Whether a note of `num_words` words is shorter than 99% of the notes the model was trained on
        (None where the checkpoint does not record their length): its codes deserve a closer look."""
        trained_on = getattr(self.model.config, "training_note_words", None)
        return None if not trained_on else num_words < trained_on["p1"]

    def _forward(self, model_inputs, top_k=None, threshold=None, codes=None, candidates=None, operating_point=None,
                 review_threshold=None):
        input_ids, attention_mask = model_inputs["input_ids"], model_inputs["attention_mask"]
        num_tokens = attention_mask.sum(dim=1)  # (B,)
        # every candidate code, or asked codes outside the label set: the checkpoint's ranker
        ranked = candidates == "all" or (codes is not None and any(c not in self.model.config.label2id for c in codes))
        scoring = (self._candidate_scores(input_ids, attention_mask, codes, operating_point) if ranked
                   else self._label_set_scores(input_ids, attention_mask, codes))
        scores, order, num_scored = scoring.scores, scoring.order, scoring.num_scored

        # The predicted codes of each note, best first, padded with -1: (B, K)
        threshold = scoring.threshold if threshold is None else threshold
        check_review_band(review_threshold, threshold)  # again: a threshold given when the pipeline was built
        if codes is not None:
            num_predicted = torch.full((len(order),), len(codes), device=order.device)
        elif top_k is not None:
            num_predicted = torch.full((len(order),), min(top_k, num_scored), device=order.device)
        else:
            lowest = threshold if review_threshold is None else review_threshold
            num_predicted = (scores > lowest).sum(dim=1).clamp(max=num_scored)
        # a note without words gets no codes (its scores would depend on the batch's padding)
        num_predicted = num_predicted * (num_tokens > 0)
        max_predicted = int(num_predicted.max())
        code_indices = order[:, :max_predicted].clone()
        code_indices[torch.arange(max_predicted, device=order.device) >= num_predicted[:, None]] = -1
        token_weights, synonym_shares = self._evidence(scoring.note_states, attention_mask, code_indices,
                                                       num_predicted, scoring.ranker)
        # each prediction's column in scores: its code's, or with asked candidates its position
        columns = (torch.arange(max_predicted).expand_as(code_indices) if ranked and codes is not None
                   else code_indices.clamp(min=0))
        return {
            "code_indices": code_indices,
            "code_scores": scores.gather(1, columns),  # (B, K)
            "code_probabilities": scoring.probabilities.gather(1, columns),
            "ranked": torch.full((len(code_indices),), ranked),
            "token_weights": token_weights,
            "synonym_shares": synonym_shares,
            "num_tokens": num_tokens,
            "offsets": model_inputs["offsets"],  # (B, N, 2)
            "note": model_inputs["note"],
            "note_words": model_inputs["note_words"],
            "coded_characters": model_inputs["coded_characters"],
            "short_note": model_inputs["short_note"],
            # with a review band: the threshold at or under which a code comes for review (NaN: no band)
            "review_at": torch.full((len(code_indices),), float("nan") if review_threshold is None else threshold),
        }

    def _label_set_scores(self, input_ids, attention_mask, codes) -> "CodeScores":
        """The label set's probabilities (B, C) as scores, the codes by logit (or the asked ones): float32
        probabilities are exactly 1.0 above a logit of about 16.6, so they cannot order confident codes."""
        msmn = self.model.msmn
        outputs = msmn(input_ids, attention_mask=attention_mask, code_encoding=msmn.code_encoding())
        logits = self.model.score(outputs.code_representations, outputs.code_vectors)
        order = logits.argsort(dim=1, descending=True, stable=True)
        if codes is not None:  # the asked codes, in their order
            label2id = self.model.config.label2id
            order = torch.tensor([label2id[code] for code in codes], device=order.device).expand(len(order), -1)
        probabilities = torch.sigmoid(logits)
        return CodeScores(probabilities, probabilities, order, probabilities.shape[1], self.model.config.threshold,
                          outputs.note_states)

    def _candidate_scores(self, input_ids, attention_mask, codes, operating_point) -> "CodeScores":
        """Every candidate's score (B, L + E) under the operating point, MSMN's probability where it re-scored
        a code, the candidates by score; or those of the asked codes (B, c), in their order."""
        ranker = self.candidate_ranker()
        point = ranker.point(operating_point or "best_map")
        asked = None if codes is None else torch.tensor([self.candidate_index()[code] for code in codes])
        ranking = ranker.rank(self.model, input_ids, attention_mask, point, asked)
        scores = ranking.scores
        order = scores.argsort(dim=1, descending=True, stable=True) if asked is None else asked.expand(len(scores), -1)
        num_extra = len(ranker.extra_codes)
        return CodeScores(scores, torch.sigmoid(ranking.msmn_logits), order,
                          ranker.num_labels + min(point.shortlist_size or num_extra, num_extra), point.threshold,
                          ranking.note_states, ranker)

    def _evidence(self, note_states, attention_mask, code_indices, num_predicted, ranker):
        """(token weights (B, K, N), synonym shares (B, K, M)) of each note's predicted codes, whose attention
        queries (k, M, d/M) come from the model's code encoding, or from `ranker` for candidate indices."""
        batch_size, max_predicted = code_indices.shape
        token_weights = note_states.new_zeros(batch_size, max_predicted, note_states.shape[1])
        synonym_shares = note_states.new_zeros(batch_size, max_predicted, self.model.config.num_synonyms)
        code_encoding = self.model.msmn.code_encoding() if ranker is None else None
        for note, count in enumerate(num_predicted.tolist()):
            for first in range(0, count, EVIDENCE_CODES_PER_CALL):  # bounds memory when many codes are asked for
                codes = code_indices[note, first : min(count, first + EVIDENCE_CODES_PER_CALL)]
                queries = (code_encoding.synonym_queries[codes] if ranker is None
                           else ranker.synonym_queries(self.model, codes))
                weights, shares = self.model.msmn.attention.evidence(
                    note_states[note : note + 1], attention_mask[note : note + 1], queries
                )
                token_weights[note, first : first + len(codes)] = weights[0]
                synonym_shares[note, first : first + len(codes)] = shares[0]
        return token_weights, synonym_shares

    def postprocess(self, model_outputs, num_evidence=3, max_span_tokens=5, min_evidence_weight=0.01, note_info=False):
        num_tokens = int(model_outputs["num_tokens"][0])
        note = model_outputs["note"]
        offsets = model_outputs["offsets"][0, :num_tokens].tolist()  # batch padding dropped, here and below
        token_weights = model_outputs["token_weights"][0, :, :num_tokens].float().numpy()
        synonym_shares = model_outputs["synonym_shares"][0].float().numpy()
        predictions = []
        for rank, code_index in enumerate(model_outputs["code_indices"][0].tolist()):
            if code_index < 0:
                break
            evidence = []
            for first, last in evidence_spans(token_weights[rank], num_evidence, max_span_tokens):
                start, end = offsets[first][0], offsets[last][1]
                weight = float(token_weights[rank, first : last + 1].sum())
                if weight < min_evidence_weight:
                    continue
                evidence.append({"start": start, "end": end, "text": note[start:end], "weight": weight})
            code, description, synonym = self._code_entry(code_index, int(synonym_shares[rank].argmax()))
            prediction = {"code": code, "description": description}
            probability = float(model_outputs["code_probabilities"][0, rank])
            if bool(model_outputs["ranked"][0]):
                prediction["score"] = float(model_outputs["code_scores"][0, rank])
                prediction["in_label_set"] = code_index < self.model.config.num_labels
                probability = probability if prediction["in_label_set"] else None
            prediction = {**prediction, "probability": probability, "synonym": synonym, "evidence": evidence}
            review_at = float(model_outputs["review_at"][0])
            if not math.isnan(review_at):  # a review band was asked for: is this code in it?
                prediction["review"] = float(model_outputs["code_scores"][0, rank]) <= review_at
            predictions.append(prediction)
        if note_info:  # how much of the note the model read, beside its codes
            return {"codes": predictions, "note_words": int(model_outputs["note_words"]),
                    "coded_characters": int(model_outputs["coded_characters"]),
                    "short_note": model_outputs["short_note"]}
        return predictions

    def _code_entry(self, code_index: int, synonym: int) -> tuple[str, str | None, str | None]:
        """(code, description, its synonym of index `synonym`) of a candidate index: the label set's, or
        the ranker's beyond it."""
        config = self.model.config
        if code_index < config.num_labels:
            return (config.id2label[code_index], config.code_descriptions[code_index] if config.code_descriptions else None,
                    config.code_terms[code_index][synonym] if config.code_terms else None)
        ranker, extra = self.candidate_ranker(), code_index - config.num_labels
        return ranker.extra_codes[extra], ranker.extra_descriptions[extra], ranker.extra_terms[extra][synonym]


__all__ = ["ICDCodingPipeline", "evidence_spans"]
