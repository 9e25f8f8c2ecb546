"""The authors' recipe (`--recipe authors`), each element against its definition: the AdamW update in float64
against a plain-Python reading of it, the decay set, the schedule and the accumulation windows step by step in a
real Trainer, the selection on scripted metrics, the threshold rule on crafted logits; and rankings from logits."""

import json
import math
import sys
import types

import numpy as np
import pytest
import torch
from conftest import NOTES, make_model
from datasets import Dataset
from transformers import TrainerCallback

from msmn.evaluation.metrics import authors_threshold, icd_metrics, logit_threshold, precision_at_k
from msmn.evaluation.metrics import probability_threshold, tune_threshold
from msmn.training.arguments import MSMNTrainingArguments
from msmn.training.authors_recipe import AuthorsAdamW, AuthorsRecipeTrainer, CarriedWindowBatches
from msmn.training.authors_recipe import authors_schedule_steps
from msmn.training.trainer import RDropTrainer, evaluation_metrics, note_collator


def adamw_by_hand(weights, gradients, lr, betas, eps, weight_decay):
    """transformers 4's AdamW (correct_bias=True) read literally, one float at a time."""
    beta1, beta2 = betas
    m, v, trajectory = [0.0] * len(weights), [0.0] * len(weights), []
    for t, step_gradients in enumerate(gradients, start=1):
        for i, g in enumerate(step_gradients):
            m[i] = beta1 * m[i] + (1 - beta1) * g
            v[i] = beta2 * v[i] + (1 - beta2) * g * g
            step_size = lr * math.sqrt(1 - beta2**t) / (1 - beta1**t)
            weights[i] = weights[i] - step_size * m[i] / (math.sqrt(v[i]) + eps)
            weights[i] = weights[i] - lr * weight_decay * weights[i]
        trajectory.append(list(weights))
    return trajectory


def test_adamw_update_is_the_authors_in_float64():
    generator = np.random.default_rng(0)
    start = generator.normal(size=6).tolist()
    gradients = generator.normal(scale=1e-3, size=(5, 6)).tolist()  # small gradients: eps matters
    decayed = torch.nn.Parameter(torch.tensor(start[:3], dtype=torch.float64))
    exempt = torch.nn.Parameter(torch.tensor(start[3:], dtype=torch.float64))
    optimizer = AuthorsAdamW([{"params": [decayed], "weight_decay": 0.01}, {"params": [exempt], "weight_decay": 0.0}],
                             lr=5e-4, betas=(0.9, 0.999), eps=1e-8)
    expected_decayed = adamw_by_hand(start[:3], [g[:3] for g in gradients], 5e-4, (0.9, 0.999), 1e-8, 0.01)
    expected_exempt = adamw_by_hand(start[3:], [g[3:] for g in gradients], 5e-4, (0.9, 0.999), 1e-8, 0.0)
    torch_adamw = torch.optim.AdamW([torch.nn.Parameter(torch.tensor(start[:3], dtype=torch.float64))], lr=5e-4,
                                    weight_decay=0.01)
    for step, step_gradients in enumerate(gradients):
        decayed.grad = torch.tensor(step_gradients[:3], dtype=torch.float64)
        exempt.grad = torch.tensor(step_gradients[3:], dtype=torch.float64)
        optimizer.step()
        assert decayed.tolist() == pytest.approx(expected_decayed[step], rel=1e-14, abs=1e-15)
        assert exempt.tolist() == pytest.approx(expected_exempt[step], rel=1e-14, abs=1e-15)
        torch_adamw.param_groups[0]["params"][0].grad = decayed.grad.clone()
        torch_adamw.step()
    # torch's AdamW is another update: the recipe is not it
    assert torch_adamw.param_groups[0]["params"][0].tolist() != pytest.approx(decayed.tolist(), rel=1e-9)


@pytest.mark.parametrize("layers, rnn_dim", [(1, 16), (2, 12)])
def test_decay_set_is_every_weight_and_no_bias_with_code_bias_weight(tokenizer, layers, rnn_dim):
    """The authors decay every parameter whose name in their model holds no "bias": every weight, none of the
    biases; their u of uᵀq is a weight (`b_linear.layers.0.weight`), our `code_bias.weight`."""
    model = make_model(tokenizer, num_lstm_layers=layers, rnn_dim=rnn_dim, hidden_size=16)
    trainer = AuthorsRecipeTrainer(model=model, args=MSMNTrainingArguments(output_dir="unused", report_to=[], eval_strategy="no",
                                                                                   load_best_model_at_end=False))
    names = [name for name, _ in model.named_parameters()]
    expected = {name for name in names if not name.rsplit(".", 1)[1].startswith("bias")}
    assert set(trainer.get_decay_parameter_names(model)) == expected
    assert "code_bias.weight" in expected and ("msmn.encoder.output_projection.weight" in expected) == (rnn_dim != 16)
    package = RDropTrainer(model=model, args=MSMNTrainingArguments(output_dir="unused", report_to=[], eval_strategy="no",
                                                                                   load_best_model_at_end=False))
    assert "code_bias.weight" not in package.get_decay_parameter_names(model)  # the Trainer's rule exempts it


@pytest.mark.parametrize("num_examples, batch_size, window, epochs", [(30, 4, 3, 4), (47, 2, 8, 5), (16, 4, 2, 3)])
def test_windows_carry_over_epoch_ends(num_examples, batch_size, window, epochs):
    """Trainer epochs hold whole windows; joined, they are the authors' epochs' batches joined, less the last
    window if it is partial; each authors' epoch is a fresh permutation in batches, the last one smaller."""
    batches = CarriedWindowBatches(num_examples, batch_size, window, seed=3)
    trainer_epochs = []
    for epoch in range(epochs):
        batches.set_epoch(epoch)
        trainer_epochs.append(list(batches))
        assert len(trainer_epochs[-1]) % window == 0 and len(trainer_epochs[-1]) <= len(batches)
    authors = [batch for epoch in range(epochs) for batch in batches.epoch_batches(epoch)]
    per_epoch = math.ceil(num_examples / batch_size)
    assert [batch for epoch in trainer_epochs for batch in epoch] == authors[: window * (epochs * per_epoch // window)]
    for epoch in range(epochs):
        one_epoch = batches.epoch_batches(epoch)
        assert sorted(i for batch in one_epoch for i in batch) == list(range(num_examples))
        assert [len(batch) for batch in one_epoch[:-1]] == [batch_size] * (per_epoch - 1)
        # the Trainer's evaluation after epoch e sees the authors' optimiser steps of their epoch e
        assert sum(len(e) for e in trainer_epochs[: epoch + 1]) // window == (epoch + 1) * per_epoch // window


class Recorder(TrainerCallback):
    def __init__(self):
        self.learning_rates, self.evaluated_at = [], []

    def on_optimizer_step(self, args, state, control, optimizer=None, **kwargs):
        self.learning_rates.append(optimizer.param_groups[0]["lr"])

    def on_evaluate(self, args, state, control, **kwargs):
        self.evaluated_at.append(state.global_step)


def test_trainer_steps_and_schedule_are_the_authors(tokenizer, tmp_path):
    """22 notes, 2 a batch, 4 batches a step, 3 epochs: 11 batches an epoch, 33 in all, so 8 optimiser steps
    (the authors' carry their partial windows; the last is never stepped), evaluations after steps 2, 5 and 8,
    and the rate falls linearly over 33 scheduled steps: after k steps lr·(1 − k/33)."""
    encoded = tokenizer([NOTES[i % 3] for i in range(22)], truncation=True)
    dataset = Dataset.from_dict({**encoded, "labels": [[float(i % 2), 1.0, 0.0, 0.0] for i in range(22)]})
    args = MSMNTrainingArguments(output_dir=str(tmp_path), per_device_train_batch_size=2, gradient_accumulation_steps=4,
                                 num_train_epochs=3, learning_rate=1e-3, save_strategy="no", load_best_model_at_end=False,
                                 report_to=[], rdrop_alpha=0.0, disable_tqdm=True, eval_strategy="epoch",
                                 metric_for_best_model="micro_auc")
    recorder = Recorder()
    trainer = AuthorsRecipeTrainer(model=make_model(tokenizer), args=args, train_dataset=dataset, eval_dataset=dataset,
                                   data_collator=note_collator(tokenizer), callbacks=[recorder],
                                   compute_metrics=evaluation_metrics)
    trainer.train()
    assert authors_schedule_steps(22, 2, 3) == 33
    assert trainer.state.global_step == 8
    assert recorder.evaluated_at == [2, 5, 8]
    assert [entry["epoch"] for entry in trainer.state.log_history if "eval_loss" in entry] == [1, 2, 3]
    assert recorder.learning_rates == pytest.approx([1e-3 * (1 - k / 33) for k in range(8)])
    assert isinstance(trainer.optimizer.optimizer if hasattr(trainer.optimizer, "optimizer") else trainer.optimizer,
                      AuthorsAdamW)


def test_full_settings_schedule_falls_to_seven_eighths():
    """MIMIC-III full: 47,723 notes, 2 a batch, 8 batches a step, 20 epochs: 59,655 steps over a schedule of
    477,240, so the last rate is 7/8 of the first."""
    total = authors_schedule_steps(47_723, 2, 20)
    steps = 20 * math.ceil(47_723 / 2) // 8
    assert (total, steps) == (477_240, 59_655)
    assert 1 - steps / total == pytest.approx(7 / 8, abs=1e-5)


def test_selection_keeps_the_later_epoch_on_a_tie():
    trainer = types.SimpleNamespace(args=types.SimpleNamespace(metric_for_best_model="precision_at_8"),
                                    state=types.SimpleNamespace(best_metric=None, best_global_step=None, global_step=0))
    kept = []
    for step, value in enumerate([0.50, 0.60, 0.60, 0.55, 0.60], start=1):
        trainer.state.global_step = step
        kept.append(AuthorsRecipeTrainer._determine_best_metric(trainer, {"eval_precision_at_8": value}, None))
    assert kept == [True, True, True, False, True]
    assert trainer.state.best_global_step == 5


def threshold_by_hand(logits, labels):
    """find_threshold_micro read literally: sorted ascending, at position i the positives strictly after i and the
    N − i scores from i on; the first best position's logit."""
    pairs = sorted(zip(logits.ravel().tolist(), labels.ravel().tolist()), key=lambda pair: pair[0])
    positives = sum(label for _, label in pairs)
    best, threshold = -1.0, None
    for i, (logit, _) in enumerate(pairs):
        correct = sum(label for _, label in pairs[i + 1 :])
        f1 = 2 * correct / ((len(pairs) - i) + positives)
        if f1 > best:
            best, threshold = f1, logit
    return threshold


def test_threshold_rule_is_the_authors():
    generator = np.random.default_rng(1)
    for _ in range(20):
        labels = generator.random((6, 5)) < 0.3
        logits = generator.normal(size=(6, 5)) + 2 * labels
        assert authors_threshold(logits, labels) == threshold_by_hand(logits, labels)
    # crafted: the rule counts one prediction too many, so it stops one score short of the best micro-F1
    logits, labels = np.array([[0.0, 1.0, 2.0, 3.0]]), np.array([[False, True, False, True]])
    threshold = authors_threshold(logits, labels)
    assert threshold == 0.0  # predicts 1, 2, 3: F1 0.8; the exact best (> 2.0: only 3) has F1 2/3
    assert icd_metrics(logits, labels, threshold)["micro_f1"] == pytest.approx(0.8)
    assert icd_metrics(logits, labels, tune_threshold(logits, labels))["micro_f1"] == pytest.approx(0.8)


def test_rankings_come_from_logits_above_saturation():
    """Logits above 20: float32 probabilities are all 1.0 there, so they cannot order these codes; logits can."""
    logits = np.array([[24.0, 21.0, 30.0, 22.0, -3.0], [20.5, 27.0, 23.0, 25.0, 1.0]])
    labels = np.array([[False, False, True, False, False], [False, True, False, True, False]])
    probabilities = torch.sigmoid(torch.tensor(logits, dtype=torch.float32)).numpy()
    assert (probabilities[:, :4] == 1.0).all()
    assert precision_at_k(labels, logits, 1)[0] == 1.0
    assert precision_at_k(labels, probabilities, 1)[0] == 0.0  # the tie goes to the first code, a wrong one
    metrics = icd_metrics(logits, labels, logit_threshold(0.5))
    assert metrics["precision_at_5"] == pytest.approx(0.3) and metrics["micro_auc"] == 1.0
    assert icd_metrics(probabilities, labels, 0.5)["micro_auc"] < 1.0
    assert tune_threshold(logits, labels) == 24.5  # midway between the best cut's neighbours: F1 1.0
    assert logit_threshold(probability_threshold(2.0)) == pytest.approx(2.0, rel=1e-12)


@pytest.mark.slow
def test_train_with_the_authors_recipe_and_vocabulary(corpus):
    """train.py --recipe authors, with accumulation, on the authors' vocabulary: the words of a gensim word2vec
    model (a pickle: --trust_pickle) that a word-count file lists, each with its own vector (at learning rate 0,
    so the saved rows are the built ones)."""
    from gensim.models import Word2Vec
    from safetensors.torch import load_file
    from synthetic_corpus import FILES, TINY_MODEL, run_train, synthetic_notes

    sentences = [note["text"].lower().split() for note in synthetic_notes(160, seed=1)] + [["vector", "only"]]
    Word2Vec(sentences, vector_size=16, min_count=1, sg=0, seed=0, workers=1, epochs=1).save(str(corpus / "w2v.model"))
    vectors = Word2Vec.load(str(corpus / "w2v.model")).wv
    listed = {word: 1 for word in vectors.index_to_key[::2]} | {"not_in_the_model": 3}
    (corpus / "word_count_dict.json").write_text(json.dumps(listed))
    run_arguments = [*FILES, "--output_dir", "out", "--num_train_epochs", "2", "--per_device_train_batch_size", "16",
                     "--gradient_accumulation_steps", "3", *TINY_MODEL, "--recipe", "authors",
                     "--word2vec", "w2v.model", "--vocabulary_words", "word_count_dict.json",
                     "--learning_rate", "0"]  # the weights stay as built: the embedding rows are the vectors
    refused = run_train(*run_arguments, cwd=corpus)
    assert refused.returncode != 0 and "--trust_pickle" in refused.stderr and "Traceback" not in refused.stderr
    result = run_train(*run_arguments, "--trust_pickle", cwd=corpus)
    assert result.returncode == 0, result.stderr[-3000:]
    vocab = json.loads((corpus / "out" / "tokenizer.json").read_text())["model"]["vocab"]
    expected = [word for word in vectors.index_to_key if word in listed]
    assert set(vocab) == {"[PAD]", "[UNK]", *expected}
    embedding = load_file(corpus / "out" / "model.safetensors")["msmn.encoder.word_embeddings.weight"]
    for word in expected:
        assert torch.equal(embedding[vocab[word]], torch.tensor(vectors[word]))
    training = json.loads((corpus / "out" / "training_args.json").read_text())
    assert training["recipe"] == "authors"
    dev = json.loads((corpus / "out" / "dev_results.json").read_text())
    test = json.loads((corpus / "out" / "test_results.json").read_text())
    assert 0 < test["threshold"] < 1 and "micro_f1" in dev


@pytest.mark.slow
def test_torchrun_keeps_the_authors_global_batch(corpus):
    """--recipe authors with 4 batches of 4 a step: one process accumulates 4, two processes 2 each (the recipe
    divides the accumulation), on the same windows of the same batches; 18 notes make 5 batches an epoch, so
    windows carry over epoch ends. Dropout off: the two runs end with the same weights."""
    from safetensors.torch import load_file
    from synthetic_corpus import ROOT, TINY_CONFIG, TINY_MODEL, run, run_train, synthetic_notes, write_jsonl

    write_jsonl(corpus / "small.jsonl.gz", synthetic_notes(18, seed=4))
    common = ["--train_file", "small.jsonl.gz", "--validation_file", "dev.jsonl.gz", "--test_file", "test.jsonl.gz",
              "--code_terms", "code_terms.json", "--num_train_epochs", "3", *TINY_MODEL, "--recipe", "authors",
              "--config_overrides", f"{TINY_CONFIG},embedding_dropout=0,lstm_dropout=0,representation_dropout=0",
              "--save_strategy", "no", "--load_best_model_at_end", "false", "--eval_strategy", "no",
              "--per_device_train_batch_size", "4", "--gradient_accumulation_steps", "4"]
    single = run_train(*common, "--output_dir", "single", cwd=corpus)
    assert single.returncode == 0, single.stderr[-3000:]
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--master_port=29534",
                str(ROOT / "train.py")]
    double = run([*torchrun, *common, "--output_dir", "double", "--ddp_backend", "gloo"], corpus, timeout=600)
    assert double.returncode == 0, double.stderr[-3000:]
    one, two = load_file(corpus / "single" / "model.safetensors"), load_file(corpus / "double" / "model.safetensors")
    for name in one:
        torch.testing.assert_close(two[name], one[name], rtol=1e-4, atol=1e-5)
