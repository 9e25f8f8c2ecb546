"""The authors' training recipe (`--recipe authors`), element by element, on the Hugging Face Trainer:
their AdamW update, their weight-decay set, their schedule's length, accumulation windows that carry
over epoch ends, and the later epoch on a tie of the selection metric. (Their threshold rule is
`msmn.evaluation.metrics.authors_threshold`.)"""

import math

import torch
from torch.utils.data import DataLoader, Sampler
from transformers import TrainerCallback

from modeling_msmn.convert_authors_checkpoint import authors_key_map
from msmn.training.trainer import RDropTrainer


class AuthorsAdamW(torch.optim.Optimizer):
    """AdamW as the authors trained with it (transformers 4's `AdamW`, `correct_bias=True`). Per parameter p
    with gradient g at step t:

        m ← β1·m + (1 − β1)·g;   v ← β2·v + (1 − β2)·g²
        p ← p − lr·√(1 − β2ᵗ)/(1 − β1ᵗ) · m / (√v + eps)
        p ← p − lr·wd·p                          (the updated p; groups with weight decay only)

    torch's `AdamW` decays p before the update and adds eps after the bias correction:
    (√v/√(1 − β2ᵗ) + eps).
    """

    def __init__(self, params, lr: float = 1e-3, betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8,
                 weight_decay: float = 0.0):
        super().__init__(params, {"lr": lr, "betas": betas, "eps": eps, "weight_decay": weight_decay})

    @torch.no_grad()
    def step(self, closure=None):
        loss = None if closure is None else closure()
        for group in self.param_groups:
            beta1, beta2 = group["betas"]
            for parameter in group["params"]:
                if parameter.grad is None:
                    continue
                state = self.state[parameter]
                if not state:
                    state["step"] = 0
                    state["exp_avg"] = torch.zeros_like(parameter)
                    state["exp_avg_sq"] = torch.zeros_like(parameter)
                state["step"] += 1
                exp_avg, exp_avg_sq = state["exp_avg"], state["exp_avg_sq"]
                exp_avg.mul_(beta1).add_(parameter.grad, alpha=1 - beta1)
                exp_avg_sq.mul_(beta2).addcmul_(parameter.grad, parameter.grad, value=1 - beta2)
                denominator = exp_avg_sq.sqrt().add_(group["eps"])
                step_size = group["lr"] * math.sqrt(1 - beta2 ** state["step"]) / (1 - beta1 ** state["step"])
                parameter.addcdiv_(exp_avg, denominator, value=-step_size)
                if group["weight_decay"] > 0:
                    parameter.add_(parameter, alpha=-group["lr"] * group["weight_decay"])
        return loss


def authors_decay_parameter_names(parameter_names: list[str], num_layers: int, has_output_projection: bool,
                                  trainer_rule: list[str]) -> list[str]:
    """The parameters that decay in the authors' recipe: those whose name in the authors' model holds neither
    "bias" nor "LayerNorm.weight". Their u of uᵀq (`decoder.b_linear.layers.0.weight`, our `code_bias.weight`)
    decays; the Trainer's rule exempts it for the "bias" in our name. A parameter the authors' model lacks (of
    another score function) follows the Trainer's rule (`trainer_rule`: the names it decays)."""
    authors_name = {ours: theirs for theirs, ours in authors_key_map(num_layers, has_output_projection).items()}
    return [name for name in parameter_names
            if (name in authors_name and "bias" not in authors_name[name] and "LayerNorm.weight" not in authors_name[name])
            or (name not in authors_name and name in trainer_rule)]


def authors_schedule_steps(num_examples: int, per_device_batch_size: int, num_epochs: int) -> int:
    """The length of the authors' linear schedule: their training DataLoader's batches × epochs, counted before
    accumulation and before the batches are split among processes. The schedule steps once per optimiser step,
    so with 8 micro-batches to a step (one process accumulating 8, or 8 processes) the learning rate falls
    only to 7/8 of its start."""
    return math.ceil(num_examples / per_device_batch_size) * num_epochs


class CarriedWindowBatches(Sampler[list[int]]):
    """The authors' batches, grouped so that no accumulation window is cut by an epoch's end.

    The authors shuffle each epoch anew and step the optimiser after every `window` batches counted
    across epochs: a window open at an epoch's end carries into the next, and the last one of training
    is never stepped. The Trainer steps at every epoch's end instead. Here Trainer epoch e holds the
    batches of the windows that *close* in the authors' epoch e: the carried batches move to the next
    Trainer epoch, computed after the dev evaluation on the same weights (no step between), and each
    evaluation sees the weights of the same optimiser steps as the authors'. `__len__` is the most
    batches an epoch can hold; a shorter epoch ends early.
    """

    def __init__(self, num_examples: int, batch_size: int, window: int, seed: int):
        # no `batch_size` attribute: under several processes, accelerate would take the short last batch of an
        # authors' epoch, inside a Trainer epoch, for the end of the data
        self.num_examples, self.notes_per_batch, self.window, self.seed = num_examples, batch_size, window, seed
        self.batches_per_epoch = math.ceil(num_examples / batch_size)
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def epoch_batches(self, epoch: int) -> list[list[int]]:
        """The authors' epoch `epoch`: a fresh permutation cut into batches (the last one smaller)."""
        generator = torch.Generator().manual_seed(self.seed + epoch)
        order = torch.randperm(self.num_examples, generator=generator).tolist()
        return [order[start : start + self.notes_per_batch] for start in range(0, self.num_examples, self.notes_per_batch)]

    def window_range(self, epoch: int) -> tuple[int, int]:
        """[first, end) of the global batch indices in Trainer epoch `epoch`: whole windows, ending in epoch `epoch`."""
        first = self.window * (epoch * self.batches_per_epoch // self.window)
        end = self.window * ((epoch + 1) * self.batches_per_epoch // self.window)
        return first, end

    def __iter__(self):
        first, end = self.window_range(self.epoch)
        for index in range(first, end):
            epoch, position = divmod(index, self.batches_per_epoch)
            if position == 0 or index == first:
                batches = self.epoch_batches(epoch)
            yield batches[position]

    def __len__(self) -> int:
        return self.window * math.ceil(self.batches_per_epoch / self.window)


class WholeEpochAtEnd(TrainerCallback):
    """A Trainer epoch of `CarriedWindowBatches` may end before `__len__` batches: its end is still a whole epoch
    in the state (and the logs), not a fraction."""

    def on_epoch_end(self, args, state, control, **kwargs):
        state.epoch = math.ceil(state.epoch)


class AuthorsRecipeTrainer(RDropTrainer):
    """`RDropTrainer` with the authors' optimiser, decay set, schedule length, accumulation windows and tie rule."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        if self.args.gradient_accumulation_steps > 1:
            self.add_callback(WholeEpochAtEnd)

    def get_decay_parameter_names(self, model) -> list[str]:
        config = model.config
        return authors_decay_parameter_names([name for name, _ in model.named_parameters()], config.num_lstm_layers,
                                             config.rnn_dim != config.hidden_size, super().get_decay_parameter_names(model))

    def create_optimizer(self, model=None):
        if self.optimizer is None:
            model = self.model if model is None else model
            decays = set(self.get_decay_parameter_names(model))
            parameters = [(name, parameter) for name, parameter in model.named_parameters() if parameter.requires_grad]
            groups = [{"params": [p for name, p in parameters if name in decays], "weight_decay": self.args.weight_decay},
                      {"params": [p for name, p in parameters if name not in decays], "weight_decay": 0.0}]
            self.optimizer = AuthorsAdamW(groups, lr=self.args.learning_rate, eps=self.args.adam_epsilon,
                                          betas=(self.args.adam_beta1, self.args.adam_beta2))
        return self.optimizer

    def create_scheduler(self, num_training_steps: int, optimizer=None):
        steps = authors_schedule_steps(len(self.train_dataset), self.args.per_device_train_batch_size,
                                       math.ceil(self.args.num_train_epochs))
        return super().create_scheduler(steps, optimizer)

    def get_train_dataloader(self) -> DataLoader:
        """With accumulation, the authors' windows (`CarriedWindowBatches`); a window counts every process's batches."""
        if self.args.gradient_accumulation_steps == 1:
            return super().get_train_dataloader()
        batches = CarriedWindowBatches(len(self.train_dataset), self.args.per_device_train_batch_size,
                                       self.args.gradient_accumulation_steps * self.args.world_size, self.args.seed)
        dataset = self._remove_unused_columns(self.train_dataset, description="Training")
        loader = DataLoader(dataset, batch_sampler=batches, collate_fn=self.data_collator,
                            num_workers=self.args.dataloader_num_workers, pin_memory=self.args.dataloader_pin_memory)
        return self.accelerator.prepare(loader)

    def _determine_best_metric(self, metrics: dict[str, float], trial) -> bool:
        """The authors' selection: the first evaluation sets the best; a later one at least as good replaces it."""
        name = self.args.metric_for_best_model
        value = metrics[name if name.startswith("eval_") else f"eval_{name}"]
        if self.state.best_metric is not None and value < self.state.best_metric:
            return False
        self.state.best_metric, self.state.best_global_step = value, self.state.global_step
        return True
