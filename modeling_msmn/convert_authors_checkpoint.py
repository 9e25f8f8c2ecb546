"""Convert a checkpoint of the authors' code (GanjinZero/ICD-MSMN, `IcdModel`) to an MSMN folder.

Their checkpoints hold neither the vocabulary nor the code list (both are built by their data
preparation and not released with the weights): give
their word list (in their order; `**UNK**`, `**PAD**`, `**MASK**` are appended unless already
last), their sorted code list and their synonym ids `c_input_word` (C·M × 30, code-major; read
from the pickled model when it carries them).

    python -m modeling_msmn.convert_authors_checkpoint --checkpoint best_epoch.pth \\
        --words words.txt --codes codes.txt --output msmn-mimic3-50 [--term-ids c_input_word.pt]

A plain state-dict file loads with `torch.load(weights_only=True)`. Their released `.pth` files
are whole pickled models: loading one runs pickle, which can execute code, and needs their
repository on PYTHONPATH; the command does it only with `--trust-pickle`.
"""

import argparse
import pickle
import re
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

import torch

from .configuration_msmn import MSMNConfig
from .modeling_msmn import MSMNForSequenceClassification
from .pipeline_msmn import ICDCodingPipeline
from .tokenization_msmn import build_tokenizer

AUTHORS_SPECIAL_TOKENS = ("**UNK**", "**PAD**", "**MASK**")
UNUSED_PREFIXES = ("decoder.final.", "decoder.U.")  # present in their checkpoints, never used in `forward`
EMBEDDING_KEY = "encoder.word_encoder.word_embedding.weight"
LSTM_PREFIX = "encoder.combiner.combine_lstm."


def bidirectional_lstm_key_map(source_prefix: str, target_prefix: str, num_layers: int) -> dict[str, str]:
    """Parameter names of a bidirectional `nn.LSTM` → those of `MSMNBiLSTM` (one LSTM per direction and layer)."""
    mapping = {}
    for layer in range(num_layers):
        for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"):
            mapping[f"{source_prefix}{name}_l{layer}"] = f"{target_prefix}forward_layers.{layer}.{name}_l0"
            mapping[f"{source_prefix}{name}_l{layer}_reverse"] = f"{target_prefix}backward_layers.{layer}.{name}_l0"
    return mapping


def authors_key_map(num_layers: int, has_output_projection: bool) -> dict[str, str]:
    """The parameter names of the authors' `IcdModel` (decoder `MultiLabelMultiHeadLAATV2`) → ours."""
    mapping = {EMBEDDING_KEY: "msmn.encoder.word_embeddings.weight"}
    mapping |= bidirectional_lstm_key_map(LSTM_PREFIX, "msmn.encoder.lstm.", num_layers)
    pairs = {
        "decoder.W.": "msmn.attention.note_projection.",
        "decoder.u_reduce.": "msmn.attention.synonym_projection.",
        "decoder.w_linear.layers.0.": "code_weight.",
        "decoder.b_linear.layers.0.": "code_bias.",
    }
    if has_output_projection:
        pairs["encoder.combiner.reduce_linear."] = "msmn.encoder.output_projection."
    for source, target in pairs.items():
        mapping[source + "weight"] = target + "weight"
        mapping[source + "bias"] = target + "bias"
    return mapping


def authors_vocabulary(words: Sequence[str]) -> list[str]:
    words = list(words)
    if tuple(words[-3:]) != AUTHORS_SPECIAL_TOKENS:
        words += AUTHORS_SPECIAL_TOKENS
    return words


def convert_authors_state_dict(
    state_dict: Mapping[str, torch.Tensor],
    words: Sequence[str],
    codes: Sequence[str],
    term_ids,
    **config_overrides,
) -> MSMNForSequenceClassification:
    """An `MSMNForSequenceClassification` that computes the same logits as the authors' `IcdModel`.

    The architecture (vocabulary, LSTM width and layers, d, M) is read from the tensor shapes;
    `config_overrides` set anything else of `MSMNConfig` (e.g. dropouts, code_descriptions).
    """
    state_dict = {key: value for key, value in state_dict.items() if not key.startswith(UNUSED_PREFIXES)}
    for key in (EMBEDDING_KEY, LSTM_PREFIX + "weight_hh_l0", "decoder.W.weight", "decoder.u_reduce.weight"):
        if key not in state_dict:
            raise ValueError(
                f"convert_authors_state_dict: the state dict has no {key!r}; is it a MultiLabelMultiHeadLAATV2 "
                "IcdModel of GanjinZero/ICD-MSMN (trained with --est_cls 1)?"
            )
    vocab = authors_vocabulary(words)
    vocab_size, embedding_dim = state_dict[EMBEDDING_KEY].shape
    if len(vocab) != vocab_size:
        raise ValueError(
            f"convert_authors_state_dict: {len(vocab)} words (with {', '.join(AUTHORS_SPECIAL_TOKENS)}) but the "
            f"embedding has {vocab_size} rows; the word list must be the one the checkpoint was trained with."
        )
    num_layers = len([key for key in state_dict if re.fullmatch(re.escape(LSTM_PREFIX) + r"weight_ih_l\d+", key)])
    rnn_dim = 2 * state_dict[LSTM_PREFIX + "weight_hh_l0"].shape[1]
    hidden_size = state_dict["decoder.W.weight"].shape[0]
    num_synonyms = hidden_size // state_dict["decoder.u_reduce.weight"].shape[0]
    term_ids = torch.as_tensor(term_ids, dtype=torch.long)
    if term_ids.dim() != 2 or term_ids.shape[0] != len(codes) * num_synonyms:
        raise ValueError(
            f"convert_authors_state_dict: term ids have shape {tuple(term_ids.shape)}, expected "
            f"({len(codes)} codes × {num_synonyms} synonyms, term length) = ({len(codes) * num_synonyms}, 30)."
        )
    config = MSMNConfig(
        vocab_size=vocab_size,
        pad_token_id=vocab.index("**PAD**"),
        embedding_dim=embedding_dim,
        rnn_dim=rnn_dim,
        num_lstm_layers=num_layers,
        hidden_size=hidden_size,
        num_synonyms=num_synonyms,
        term_length=term_ids.shape[1],
        id2label=dict(enumerate(codes)),
        **config_overrides,
    )
    model = MSMNForSequenceClassification(config, code_term_ids=term_ids)
    model.load_state_dict(renamed_state_dict(state_dict, model, term_ids), strict=True)
    return model.eval()


def renamed_state_dict(state_dict: Mapping[str, torch.Tensor], model: MSMNForSequenceClassification, term_ids):
    """The authors' tensors under `model`'s names, with the term ids, each checked against its shape."""
    config = model.config
    mapping = authors_key_map(config.num_lstm_layers, has_output_projection=config.rnn_dim != config.hidden_size)
    unexpected = sorted(set(state_dict) - set(mapping))
    missing = sorted(set(mapping) - set(state_dict))
    if unexpected or missing:
        raise ValueError(
            f"convert_authors_state_dict: state dict does not match the architecture read from its shapes "
            f"(layers={config.num_lstm_layers}, rnn_dim={config.rnn_dim}, d={config.hidden_size}, "
            f"M={config.num_synonyms}): missing {missing[:5]}, unexpected {unexpected[:5]}."
        )
    ours = model.state_dict()
    converted = {"msmn.code_term_ids": term_ids}
    for source, target in mapping.items():
        if state_dict[source].shape != ours[target].shape:
            raise ValueError(
                f"convert_authors_state_dict: {source} has shape {tuple(state_dict[source].shape)}, "
                f"expected {tuple(ours[target].shape)}."
            )
        converted[target] = state_dict[source]
    return converted


def load_checkpoint(path: Path, trust_pickle: bool) -> tuple[dict, torch.Tensor | None]:
    """(state dict, term ids or None) from a state-dict file or, with trust_pickle, a pickled IcdModel."""
    try:
        loaded = load_tensors(path)
    except pickle.UnpicklingError as error:  # weights_only refuses anything but tensors and plain containers
        if not trust_pickle:
            raise SystemExit(
                f"{path} is not a plain state dict: it is a pickled model. Loading it runs pickle, which can "
                "execute arbitrary code, and needs the authors' repository (GanjinZero/ICD-MSMN) on PYTHONPATH. "
                f"If you trust the file, run again with --trust-pickle. ({type(error).__name__})"
            ) from None
        loaded = load_pickled_model(path)
    if isinstance(loaded, Mapping):
        return dict(loaded), None
    term_ids = getattr(loaded, "c_input_word", None)
    return loaded.state_dict(), None if term_ids is None else torch.as_tensor(term_ids)


def load_pickled_model(path: Path):
    """torch.load(path, weights_only=False): runs pickle, only with --trust-pickle."""
    try:
        return torch.load(path, map_location="cpu", weights_only=False)
    except ModuleNotFoundError as error:
        raise SystemExit(f"{path}: the pickled model needs the module {error.name!r}: put the authors' repository "
                         "(GanjinZero/ICD-MSMN) on PYTHONPATH.") from None
    except Exception as error:
        raise SystemExit(f"{path}: damaged or truncated pickle ({type(error).__name__}). Download it again.") from None


def load_tensors(path: Path):
    """torch.load(path, weights_only=True), with a clear error for a missing or damaged file; a pickle that
    needs more than tensors and plain containers raises pickle.UnpicklingError."""
    if not path.is_file():
        raise SystemExit(f"{path}: no such file.")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        raise
    except Exception as error:  # torch raises RuntimeError, EOFError, KeyError… on a file it cannot read
        raise SystemExit(
            f"{path}: damaged, truncated or not a torch file ({path.stat().st_size:,} bytes; {type(error).__name__}). "
            "Download it again."
        ) from None


def read_lines(path: Path) -> list[str]:
    if not path.is_file():
        raise SystemExit(f"{path}: no such file.")
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError:
        raise SystemExit(f"{path}: not UTF-8 text; it should hold one entry per line.") from None
    if not lines:
        raise SystemExit(f"{path} is empty: it should hold one entry per line.")
    return lines


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkpoint", type=Path, required=True, help="their state dict or pickled .pth")
    parser.add_argument("--words", type=Path, required=True, help="their word list, one word per line, in order")
    parser.add_argument("--codes", type=Path, required=True, help="their code list, one code per line, in order")
    parser.add_argument("--term-ids", type=Path, help="c_input_word as a tensor file, if the checkpoint lacks it")
    parser.add_argument("--output", type=Path, required=True, help="folder to write the MSMN checkpoint to")
    parser.add_argument("--trust-pickle", action="store_true", help="allow loading a pickled model (runs pickle)")
    args = parser.parse_args(argv)

    words, codes = read_lines(args.words), read_lines(args.codes)  # the small files first: bad input fails fast
    state_dict, term_ids = load_checkpoint(args.checkpoint, args.trust_pickle)
    if args.term_ids is not None:
        try:
            term_ids = load_tensors(args.term_ids)
        except pickle.UnpicklingError:
            raise SystemExit(f"{args.term_ids}: not a plain tensor file; save c_input_word with torch.save.") from None
    if term_ids is None:
        raise SystemExit("The checkpoint carries no c_input_word: give the synonym ids with --term-ids.")
    model = convert_authors_state_dict(state_dict, words, codes, term_ids)
    tokenizer = build_tokenizer(authors_vocabulary(words), unk_token="**UNK**", pad_token="**PAD**")
    ICDCodingPipeline(model=model, tokenizer=tokenizer).save_pretrained(args.output)
    print(f"Wrote {args.output}: {model.config.num_labels} codes, vocabulary {model.config.vocab_size}.", file=sys.stderr)


if __name__ == "__main__":
    main()
