"""Train MSMN, evaluate it like the paper, and save a self-contained checkpoint folder.

    python train.py                                   # preset codiesp-d-50: CodiEsp diagnoses, top 50 (English)
    python train.py --preset mimic3-50 --data_dir /path/to/mimic-iii --code_terms synonyms.json
    python train.py --dataset files --train_file train.jsonl --validation_file dev.jsonl --test_file test.jsonl \\
        --code_terms code_terms.json --output_dir msmn-model --config_overrides num_synonyms=8,score_function=dot
    python train.py config.json                       # every argument in a JSON (or YAML) file
    torchrun --nproc_per_node=4 train.py --preset mimic3-full ...

The data come from `datasets_scripts.load(--dataset, ...)`; a preset (`presets/NAME.json`) sets the
data and the hyper-parameters, and any argument given on the command line overrides it. Training
runs the Hugging Face Trainer with the R-Drop loss; after each epoch the dev set is evaluated and
the best epoch (by `--metric_for_best_model`) is kept; the global decision threshold is tuned on
dev, stored in the saved config and applied to test. The folder gets the weights, config,
tokenizer, model and pipeline code, `test_results.json` and a model card. Note text never reaches
the logs.
"""

import dataclasses
import functools
import logging
import os
import sys
from collections import Counter

import numpy as np
import torch
from transformers import set_seed
from transformers.training_args import ParallelMode

import datasets_scripts
from datasets_scripts import InputError
from datasets_scripts.synonyms.icd10cm import candidate_code_terms
from modeling_msmn import MSMNConfig, MSMNForSequenceClassification, build_code_term_ids, build_tokenizer
from modeling_msmn import build_vocabulary, split_words
from modeling_msmn.tokenization_msmn import PAD_TOKEN, UNK_TOKEN
from msmn.evaluation.metrics import authors_threshold, icd_metrics, label_matrix, logit_threshold, probability_threshold
from msmn.evaluation.metrics import test_report, tune_threshold
from msmn.training.arguments import DataArguments, MSMNTrainingArguments, check_output_dir, model_config, parse_arguments
from msmn.training.authors_recipe import AuthorsRecipeTrainer
from msmn.training.candidate_tuning import build_ranker
from msmn.training.saving import save_checkpoint
from msmn.training.trainer import RDropTrainer, evaluation_metrics, logits_and_labels, note_collator
from msmn.training.word2vec import SMALL_WORD2VEC_CORPUS, embedding_matrix, read_word2vec, read_word_list
from msmn.training.word2vec import vocabulary_of_vectors, word2vec_vectors

logger = logging.getLogger("msmn.train")


def setup(argv: list[str]) -> tuple[DataArguments, MSMNTrainingArguments]:
    """The arguments, checked against the machine and the launcher; logging and the seed set."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size > 1 and not torch.cuda.is_available():
        # Without it, transformers sets up no process group on CPU and each process trains alone.
        os.environ.setdefault("ACCELERATE_USE_CPU", "true")
    data_args, training_args = parse_arguments(argv)
    if world_size > 1 and training_args.parallel_mode != ParallelMode.DISTRIBUTED:
        raise InputError(
            f"{world_size} processes were launched, but the Trainer is not distributed ({training_args.parallel_mode}); "
            "check --ddp_backend and the torchrun environment."
        )
    if training_args.bf16 and training_args.device.type == "cpu" and not torch.ops.mkldnn._is_mkldnn_bf16_supported():
        raise InputError(
            "--bf16: this CPU has no bfloat16 arithmetic (AVX512-BF16 or AMX): oneDNN cannot run the LSTM under "
            "bf16 autocast, and bf16 matrix products run far slower than float32 here. Train without --bf16."
        )
    check_output_dir(training_args.output_dir, training_args.overwrite_output_dir,
                     training_args.resume_from_checkpoint is not None, training_args.process_index == 0)
    logging.basicConfig(level=logging.INFO if training_args.should_log else logging.WARNING)
    logging.getLogger("gensim").setLevel(logging.WARNING)
    set_seed(training_args.seed)
    return data_args, training_args


def load_data(data_args: DataArguments, settings: MSMNConfig):
    """The dataset's splits, cut to --max_*_samples."""
    data = datasets_scripts.load(data_args.dataset, num_synonyms=settings.num_synonyms, **data_args.dataset_options())
    data.limit(data_args.max_train_samples, data_args.max_eval_samples)
    return data


def trainer_settings(training_args: MSMNTrainingArguments, data) -> MSMNTrainingArguments:
    """The Trainer's arguments as the data call for: without dev, no epoch selection; P@k with k at least the
    number of codes cannot tell epochs apart, so micro_auc selects; the Hub upload is done once, at the end. The
    authors' recipe keeps their global batch over processes: their 2 × 8 accumulation is 2 × 1 on 8 processes."""
    changes = {"push_to_hub": False}
    accumulation, world_size = training_args.gradient_accumulation_steps, training_args.world_size
    if training_args.recipe == "authors" and world_size > 1 and accumulation > 1:
        if accumulation % world_size:
            raise InputError(f"--recipe authors: {world_size} processes cannot share --gradient_accumulation_steps "
                             f"{accumulation} evenly; launch a number of processes that divides it.")
        changes["gradient_accumulation_steps"] = accumulation // world_size
    if "validation" not in data.splits:
        changes.update(eval_strategy="no", load_best_model_at_end=False)
    selection = training_args.metric_for_best_model or ""
    if selection.startswith("precision_at_") and int(selection.rsplit("_", 1)[1]) >= len(data.codes):
        logger.warning("%s cannot tell models apart with %d codes: selecting the best epoch by micro_auc", selection, len(data.codes))
        changes["metric_for_best_model"] = "micro_auc"
    return dataclasses.replace(training_args, **changes)


def candidates(data_args: DataArguments, training_args: MSMNTrainingArguments, settings: MSMNConfig, data):
    """(code → terms of --candidate_codes, the code system's name, the candidates outside the label set:
    where extra negatives come from)."""
    candidate_terms, code_system = candidate_code_terms(data_args.candidate_codes, settings.num_synonyms)
    extra_negative_codes = sorted(set(candidate_terms) - set(data.codes))
    if training_args.extra_negative_codes and not extra_negative_codes:
        raise InputError(f"--extra_negative_codes draws codes of --candidate_codes outside the {len(data.codes)} "
                         "label codes, and there are none: add --candidate_codes icd10cm.")
    if (training_args.extra_negative_codes or candidate_terms) and settings.score_function == "linear":
        raise InputError("--candidate_codes, --extra_negative_codes: score_function=linear has weights per label code, "
                         "so it cannot score other codes; choose reference, biaffine or dot.")
    if candidate_terms and "validation" not in data.splits:
        raise InputError("--candidate_codes: the ranking's operating points are chosen on dev, and this dataset has no "
                         "validation split; give --validation_file.")
    return candidate_terms, code_system, extra_negative_codes


def candidate_ranker(trainer, data, candidate_terms: dict, code_system: str, term_seed: int | None):
    """The ranker of the label set and the candidates, its operating points chosen on dev (`build_ranker`)."""
    train_counts = Counter(code for codes in data.splits["train"]["gold_codes"] for code in codes)
    reference_texts = data.unlabelled_texts or list(data.splits["train"]["text"])
    logger.info("candidates: choosing on dev how to rank the %d label codes and the %s codes, %d in all (MSMN scores "
                "every candidate for each dev note once)", len(data.codes), code_system,
                len(set(candidate_terms) | set(data.codes)))
    ranker, _ = build_ranker(trainer.model, trainer.processing_class, candidate_terms, train_counts, reference_texts,
                             list(data.splits["validation"]["text"]), list(data.splits["validation"]["gold_codes"]),
                             code_system, term_seed, trainer.args.per_device_eval_batch_size)
    for name, point in ranker.operating_points.items():
        logger.info("candidates: operating point %s: λ %s, β %s, shortlist %s; dev %s", name, point.term_match_weight,
                    point.prior_weight, point.shortlist_size, point.dev)
    return ranker


def build_model(data_args: DataArguments, training_args: MSMNTrainingArguments, settings: MSMNConfig, data,
                candidate_terms):
    """(tokenizer, model with word2vec embeddings): the vocabulary (`vocabulary_and_vectors`), each code's M terms,
    the config."""
    vocab, vectors = vocabulary_and_vectors(data_args, data, candidate_terms)
    tokenizer = build_tokenizer(vocab, model_max_length=settings.max_note_tokens)
    term_ids, terms = build_code_term_ids(tokenizer, data.codes, data.code_terms, settings.num_synonyms,
                                          settings.term_length, data_args.term_seed_or_none())
    train_texts = data.splits["train"]["text"]
    config = model_config(
        data_args.config_overrides, vocab_size=len(vocab), pad_token_id=tokenizer.pad_token_id,
        id2label=dict(enumerate(data.codes)), code_terms=terms,
        code_descriptions=[data.code_terms[code][0] for code in data.codes],
        training_note_words=note_word_counts(tokenizer, train_texts),
    )
    model = MSMNForSequenceClassification(config, code_term_ids=term_ids)
    if vectors is None:
        word2vec_texts = list(train_texts) + (data.unlabelled_texts if data_args.word2vec_unlabelled_texts else [])
        epochs = data_args.word2vec_epochs or (10 if len(word2vec_texts) >= SMALL_WORD2VEC_CORPUS else 100)
        # each candidate term a sentence: its words get vectors, also those no note holds
        word2vec_texts += [term for terms in candidate_terms.values() for term in terms]
        vectors = word2vec_vectors(tokenizer, word2vec_texts, config.embedding_dim, training_args.seed, epochs,
                                   data_args.min_count, data_args.word2vec, data_args.trust_pickle)
    model.set_word_embeddings(embedding_matrix(vectors, vocab, config.embedding_dim, training_args.seed))
    return tokenizer, model


def vocabulary_and_vectors(data_args: DataArguments, data, candidate_terms) -> tuple[list[str], object]:
    """(vocabulary, word vectors or None). With --vocabulary_words, the authors' vocabulary: the words of the
    --word2vec vectors that it lists, and those vectors. Else the words of the training notes (--min_count,
    --min_notes) and of every code term, the candidates' too; their vectors come later (`word2vec_vectors`)."""
    if data_args.vocabulary_words is not None:
        vectors = read_word2vec(data_args.word2vec, data_args.trust_pickle)
        return vocabulary_of_vectors(vectors, read_word_list(data_args.vocabulary_words), PAD_TOKEN, UNK_TOKEN), vectors
    term_words = [word for code in data.codes for term in data.code_terms[code] for word in split_words(term)]
    term_words += [word for terms in candidate_terms.values() for term in terms for word in split_words(term)]
    vocab = build_vocabulary(data.splits["train"]["text"], data_args.min_count, term_words, min_texts=data_args.min_notes)
    return vocab, None


def note_word_counts(tokenizer, texts) -> dict[str, int]:
    """The 1st percentile and the median of the training notes' words: the pipeline flags a note shorter than
    99% of them."""
    counts = [len(ids) for ids in tokenizer(list(texts), add_special_tokens=False)["input_ids"]]
    return {"p1": int(np.percentile(counts, 1)), "median": int(np.median(counts))}


def encode_splits(data, tokenizer, config: MSMNConfig):
    """Token ids and multi-hot labels (notes × codes) of every split."""

    def encode(batch):
        encoded = tokenizer(batch["text"], truncation=True, max_length=config.max_note_tokens)
        encoded["labels"] = label_matrix(batch["labels"], data.codes, np.float32)
        return encoded

    return data.splits.map(encode, batched=True, remove_columns=data.splits["train"].column_names)


def evaluate(trainer, encoded, data, threshold_rule) -> tuple[dict, dict]:
    """(test report, dev metrics), both at the threshold `threshold_rule` picks on the dev logits; the config
    stores it as a probability. Without dev, the config's threshold applies."""
    results, dev_results = {}, {}
    threshold_on_logits = logit_threshold(trainer.model.config.threshold)
    if "validation" in encoded:  # every process predicts its share; the Trainer gathers them
        logits, labels = logits_and_labels(trainer.predict(encoded["validation"]))
        threshold_on_logits = threshold_rule(logits, labels)
        trainer.model.config.threshold = probability_threshold(threshold_on_logits)
        dev_results = icd_metrics(logits, labels, threshold_on_logits)
    if "test" in encoded:
        logits, labels = logits_and_labels(trainer.predict(encoded["test"]))
        train_codes = {code for document in data.splits["train"]["labels"] for code in document}
        results = test_report(logits, labels, data.splits["test"]["gold_codes"], data.codes, train_codes,
                              threshold_on_logits)
    return results, dev_results


def main(argv: list[str] | None = None) -> dict[str, float]:
    data_args, training_args = setup(sys.argv[1:] if argv is None else argv)
    settings = model_config(data_args.config_overrides)  # checked before the data are built
    data = load_data(data_args, settings)
    push_to_hub, training_args = training_args.push_to_hub, trainer_settings(training_args, data)
    candidate_terms, code_system, extra_negative_codes = candidates(data_args, training_args, settings, data)
    tokenizer, model = build_model(data_args, training_args, settings, data, candidate_terms)
    config = model.config
    extra_negative_term_ids = None  # (E, M, term_length): the codes extra negatives are drawn from
    if training_args.extra_negative_codes:
        extra_ids = build_code_term_ids(tokenizer, extra_negative_codes, candidate_terms, config.num_synonyms,
                                        config.term_length, data_args.term_seed_or_none())[0]
        extra_negative_term_ids = torch.tensor(extra_ids).view(len(extra_negative_codes), config.num_synonyms, -1)
    encoded = encode_splits(data, tokenizer, config)
    authors_recipe = training_args.recipe == "authors"
    threshold_rule = authors_threshold if authors_recipe else tune_threshold
    trainer = (AuthorsRecipeTrainer if authors_recipe else RDropTrainer)(
        model=model,
        args=training_args,
        train_dataset=encoded["train"],
        eval_dataset=encoded.get("validation"),
        data_collator=note_collator(tokenizer),
        processing_class=tokenizer,
        compute_metrics=functools.partial(evaluation_metrics, threshold_rule=threshold_rule),
        extra_negative_term_ids=extra_negative_term_ids,
    )
    trainer.train(resume_from_checkpoint=training_args.resume_from_checkpoint)
    results, dev_results = evaluate(trainer, encoded, data, threshold_rule)
    if trainer.is_world_process_zero():
        ranker = candidate_ranker(trainer, data, candidate_terms, code_system, data_args.term_seed_or_none()) if (
            candidate_terms) else None
        save_checkpoint(trainer, results, dev_results, data.card, data_args.min_notes, push_to_hub, ranker)
    return results


if __name__ == "__main__":
    try:
        main()
    except InputError as error:  # bad input: the message names the file or argument at fault and the fix
        sys.exit(f"error: {error}")
