"""The Trainer of MSMN: the R-Drop loss (the paper's), sampled and extra negative codes, evaluation in
dataset order, and the dev metrics of each epoch."""

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import SequentialSampler
from transformers import DataCollatorWithPadding, Trainer

from msmn.evaluation.metrics import icd_metrics, tune_threshold


def note_collator(tokenizer) -> DataCollatorWithPadding:
    """Pads a batch of notes to a multiple of 16 tokens: the attention's matrix products then run on
    faster kernel paths (up to 20% on AVX2); padding is masked, so the model's outputs are the same."""
    return DataCollatorWithPadding(tokenizer, pad_to_multiple_of=16)


def sampled_codes(labels: torch.Tensor, num_negatives: int) -> torch.Tensor:
    """Indices (c,), ascending, of the codes gold in some note of the batch (labels: (B, C)) and of
    `num_negatives` other codes drawn uniformly at random (all others if fewer)."""
    is_gold = labels.bool().any(dim=0)
    others = (~is_gold).nonzero().squeeze(1)
    drawn = others[torch.randperm(len(others), device=others.device)[:num_negatives]]
    return torch.cat([is_gold.nonzero().squeeze(1), drawn]).sort().values


class RDropTrainer(Trainer):
    """BCE averaged over two dropout passes plus α·symmetric KL (the paper's training loss), in one
    forward pass over the doubled batch, so the synonym vectors are computed once per step for both
    passes. With `sampled_negative_codes`, each training step scores the batch's gold codes and that
    many random others: its cost no longer grows with the size of the code set. With
    `extra_negative_codes`, each step also scores that many codes drawn from
    `extra_negative_term_ids` ((E, M, term_length): codes outside the label set), negative for every note."""

    def __init__(self, *args, extra_negative_term_ids: torch.Tensor | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        self.extra_negative_term_ids = extra_negative_term_ids

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        alpha, kl_form = self.args.rdrop_alpha, self.args.rdrop_kl
        if model.training and self.args.sampled_negative_codes > 0:
            inputs["code_indices"] = sampled_codes(inputs["labels"], self.args.sampled_negative_codes)
            inputs["labels"] = inputs["labels"][:, inputs["code_indices"]]
        if model.training and self.args.extra_negative_codes > 0:
            drawn = torch.randperm(len(self.extra_negative_term_ids))[: self.args.extra_negative_codes]
            inputs["extra_code_term_ids"] = self.extra_negative_term_ids[drawn].flatten(0, 1).to(inputs["labels"].device)
            negatives = inputs["labels"].new_zeros(len(inputs["labels"]), len(drawn))
            inputs["labels"] = torch.cat([inputs["labels"], negatives], dim=1)
        if not model.training or alpha == 0:
            return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
        labels = inputs.pop("labels")
        codes = {name: inputs.pop(name) for name in ("code_indices", "extra_code_term_ids") if name in inputs}
        doubled = {name: torch.cat([value, value]) for name, value in inputs.items()}
        first, second = model(**doubled, **codes).logits.chunk(2)
        bce = (F.binary_cross_entropy_with_logits(first, labels) + F.binary_cross_entropy_with_logits(second, labels)) / 2
        loss = bce + alpha * rdrop_kl(first, second, kl_form)
        return (loss, {"logits": first}) if return_outputs else loss

    def _get_eval_sampler(self, eval_dataset):
        """Evaluation in dataset order, which `test_report` relies on to pair each prediction with its
        note's gold codes. (transformers 5 groups evaluation batches by length too when
        `train_sampling_strategy="group_by_length"`, returning predictions out of order.)"""
        return SequentialSampler(eval_dataset) if self.args.world_size <= 1 else None  # None: sharded in order


def rdrop_kl(first: torch.Tensor, second: torch.Tensor, form: str) -> torch.Tensor:
    """Symmetric KL between two passes' predictions, averaged over batch × codes.

    "reference": between the softmax distributions over the code axis (the authors' code);
    "bernoulli": between the per-code Bernoulli distributions σ(logit).
    """
    if form == "reference":
        log_first, log_second = F.log_softmax(first, dim=-1), F.log_softmax(second, dim=-1)
        forward = F.kl_div(log_second, log_first, reduction="none", log_target=True)
        backward = F.kl_div(log_first, log_second, reduction="none", log_target=True)
        return (forward.mean() + backward.mean()) / 2
    p, q = torch.sigmoid(first), torch.sigmoid(second)
    log_p, log_q = F.logsigmoid(first), F.logsigmoid(second)
    log_not_p, log_not_q = F.logsigmoid(-first), F.logsigmoid(-second)
    kl_pq = p * (log_p - log_q) + (1 - p) * (log_not_p - log_not_q)
    kl_qp = q * (log_q - log_p) + (1 - q) * (log_not_q - log_not_p)
    return ((kl_pq + kl_qp) / 2).mean()


def logits_and_labels(prediction) -> tuple[np.ndarray, np.ndarray]:
    """(float64 logits, boolean labels) of a `trainer.predict` output or an `EvalPrediction`."""
    return np.asarray(prediction.predictions, dtype=np.float64), np.asarray(prediction.label_ids) > 0.5


def evaluation_metrics(eval_prediction, threshold_rule=tune_threshold) -> dict[str, float]:
    """Dev metrics of one epoch, micro/macro F1 at the threshold `threshold_rule` picks on that same dev set."""
    logits, labels = logits_and_labels(eval_prediction)
    return icd_metrics(logits, labels, threshold_rule(logits, labels))
