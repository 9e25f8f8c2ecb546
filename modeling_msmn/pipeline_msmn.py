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

Notes longer than the model's `max_note_tokens` are cut as in training, with a warning that says how
much. Synonym vectors are computed once and reused for every note (the model caches them while its
weights do not change).
"""

import logging

import numpy as np
import torch
from transformers import Pipeline

logger = logging.getLogger(__name__)

EVIDENCE_CODES_PER_CALL = 256


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


class ICDCodingPipeline(Pipeline):
    """ICD codes for clinical notes, with code descriptions, probabilities and evidence spans.

    Call arguments (also accepted when building the pipeline):
        top_k: return the `top_k` most probable codes instead of those above the threshold (top_k wins
            when both are given).
        threshold: probability above which a code is predicted (default: the checkpoint's).
        codes: a list of codes to return for every note, in this order, with their probability and
            evidence, whatever their probability (e.g. to check the evidence of codes a coder chose).
        num_evidence: evidence spans per code, at most (default 3).
        max_span_tokens: longest evidence span, in tokens (default 5).
        min_evidence_weight: spans with a smaller share of the code's attention are left out (default 0.01).
        note_info: return, per note, {"codes": [the predictions], "note_words": the note's words,
            "coded_characters": how many of its characters the model read (all but what lies past the
            first max_note_tokens words)} instead of the predictions alone.
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
        super().__init__(model, tokenizer=tokenizer, **kwargs)

    def __call__(self, notes, **kwargs):
        if isinstance(notes, list) and not notes:  # no notes, no predictions (the arguments are still checked)
            self._sanitize_parameters(**kwargs)
            return []
        return super().__call__(notes, **kwargs)

    def _sanitize_parameters(
        self, top_k=None, threshold=None, codes=None, num_evidence=None, max_span_tokens=None, min_evidence_weight=None,
        note_info=None,
    ):
        counts = (("top_k", top_k, 1), ("num_evidence", num_evidence, 0), ("max_span_tokens", max_span_tokens, 1))
        for name, value, smallest in counts:
            if value is not None and (not isinstance(value, int) or value < smallest):
                kind = "positive" if smallest else "non-negative"
                raise ValueError(f"{name} must be a {kind} integer, got {value!r}.")
        if threshold is not None and not 0.0 < threshold < 1.0:
            raise ValueError(f"threshold is a probability strictly between 0 and 1, got {threshold!r}.")
        if codes is not None:
            unknown = [code for code in codes if code not in self.model.config.label2id]
            if isinstance(codes, str) or unknown:
                raise ValueError(f"codes must be a list of the model's codes; not among them: {unknown[:5] or codes!r}.")
        # Only what is given: call-time parameters update those given when the pipeline was built.
        forward_params = {"top_k": top_k, "threshold": threshold, "codes": codes}
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
        input_ids = torch.tensor([encoding["input_ids"][:max_tokens]], dtype=torch.long)
        offsets = torch.tensor(encoding["offset_mapping"][:max_tokens], dtype=torch.long).view(1, -1, 2)
        return {"input_ids": input_ids, "attention_mask": torch.ones_like(input_ids), "offsets": offsets, "note": note,
                "note_words": num_tokens, "coded_characters": cut_at}

    def _forward(self, model_inputs, top_k=None, threshold=None, codes=None):
        input_ids, attention_mask = model_inputs["input_ids"], model_inputs["attention_mask"]
        num_tokens = attention_mask.sum(dim=1)  # (B,)
        msmn = self.model.msmn
        code_encoding = msmn.code_encoding()  # cached across notes while the weights stay the same
        outputs = msmn(input_ids, attention_mask=attention_mask, code_encoding=code_encoding)
        probabilities = torch.sigmoid(self.model.score(outputs.code_representations, outputs.code_vectors))  # (B, C)

        # The predicted codes of each note, most probable first, padded with -1: (B, K)
        order = probabilities.argsort(dim=1, descending=True, stable=True)
        if codes is not None:  # the asked codes, in their order
            order = torch.tensor([self.model.config.label2id[code] for code in codes], device=order.device)
            order = order.expand(len(probabilities), -1)
            num_predicted = torch.full((len(order),), len(codes), device=order.device)
        elif top_k is not None:
            num_predicted = torch.full((len(order),), min(top_k, order.shape[1]), device=order.device)
        else:
            num_predicted = (probabilities > (threshold or self.model.config.threshold)).sum(dim=1)
        # a note without words gets no codes (its scores would depend on the batch's padding)
        num_predicted = num_predicted * (num_tokens > 0)
        max_predicted = int(num_predicted.max())
        code_indices = order[:, :max_predicted].clone()
        code_indices[torch.arange(max_predicted, device=order.device) >= num_predicted[:, None]] = -1

        token_weights = probabilities.new_zeros(len(order), max_predicted, input_ids.shape[1])  # (B, K, N)
        synonym_shares = probabilities.new_zeros(len(order), max_predicted, self.model.config.num_synonyms)
        for note, count in enumerate(num_predicted.tolist()):
            for first in range(0, count, EVIDENCE_CODES_PER_CALL):  # bounds memory when many codes are asked for
                codes = code_indices[note, first : min(count, first + EVIDENCE_CODES_PER_CALL)]
                weights, shares = msmn.attention.evidence(
                    outputs.note_states[note : note + 1], attention_mask[note : note + 1], code_encoding.synonym_queries[codes]
                )
                token_weights[note, first : first + len(codes)] = weights[0]
                synonym_shares[note, first : first + len(codes)] = shares[0]
        return {
            "probabilities": probabilities,
            "code_indices": code_indices,
            "token_weights": token_weights,
            "synonym_shares": synonym_shares,
            "num_tokens": num_tokens,
            "offsets": model_inputs["offsets"],  # (B, N, 2)
            "note": model_inputs["note"],
            "note_words": model_inputs["note_words"],
            "coded_characters": model_inputs["coded_characters"],
        }

    def postprocess(self, model_outputs, num_evidence=3, max_span_tokens=5, min_evidence_weight=0.01, note_info=False):
        config = self.model.config
        num_tokens = int(model_outputs["num_tokens"][0])
        note = model_outputs["note"]
        offsets = model_outputs["offsets"][0, :num_tokens].tolist()  # batch padding dropped, here and below
        probabilities = model_outputs["probabilities"][0].float().numpy()
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
            predictions.append(
                {
                    "code": config.id2label[code_index],
                    "description": config.code_descriptions[code_index] if config.code_descriptions else None,
                    "probability": float(probabilities[code_index]),
                    "synonym": config.code_terms[code_index][int(synonym_shares[rank].argmax())]
                    if config.code_terms
                    else None,
                    "evidence": evidence,
                }
            )
        if note_info:  # how much of the note the model read, beside its codes
            return {"codes": predictions, "note_words": int(model_outputs["note_words"]),
                    "coded_characters": int(model_outputs["coded_characters"])}
        return predictions


__all__ = ["ICDCodingPipeline", "evidence_spans"]
