"""Word-level tokenizer of MSMN and the per-code term ids built with it.

The rules of the authors' released code, which applies them with Python's `re` and `str`:
tokens are the `\\w+` matches of the raw text, tokens made only of numeric characters
(`str.isnumeric()`) are dropped, the rest are lower-cased (`str.lower()`).

Here they run inside a `tokenizers` pipeline, so that the tokenizer is saved beside the model
and returns offsets into the original text:

- normalizer: characters that Python does not count as word characters but whose lower-case
  form would be one (or that lower-casing can produce inside a word: U+0307 from "İ") become
  spaces; a Greek capital sigma that ends a word becomes "ς" (Python's final-sigma rule);
  then everything is lower-cased.
- pre-tokenizer: keeps the maximal runs of Python word characters that hold at least one
  non-numeric character (so digit-only runs are dropped whole), and discards the rest.
- model: WordLevel over the vocabulary, out-of-vocabulary words → the unknown token.
"""

import functools
import hashlib
import random
import re
import sys
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence

from tokenizers import Regex, Tokenizer, models, normalizers, pre_tokenizers
from transformers import PreTrainedTokenizerFast

PAD_TOKEN = "[PAD]"
UNK_TOKEN = "[UNK]"
MAX_NOTE_TOKENS = 4000
TERM_LENGTH = 30

_COMBINING_DOT_ABOVE = "\u0307"  # what "İ".lower() appends after "i"


def _character_class(characters: Iterable[str]) -> str:
    """An onig bracket expression matching exactly `characters`, as code point ranges."""
    code_points = sorted({ord(c) for c in characters})
    ranges, start, previous = [], code_points[0], code_points[0]
    for code_point in code_points[1:]:
        if code_point != previous + 1:
            ranges.append((start, previous))
            start = code_point
        previous = code_point
    ranges.append((start, previous))
    return "[" + "".join(f"\\x{{{a:X}}}" if a == b else f"\\x{{{a:X}}}-\\x{{{b:X}}}" for a, b in ranges) + "]"


@functools.cache
def _patterns() -> tuple[str, str, str]:
    """(characters that must become spaces, word-run pattern, final-sigma pattern)."""
    python_word = re.compile(r"\w")
    characters = [chr(i) for i in range(sys.maxunicode + 1) if not 0xD800 <= i <= 0xDFFF]
    word = [c for c in characters if python_word.match(c)] + [_COMBINING_DOT_ABOVE]
    # Non-word characters that `tokenizers`' Lowercase (a newer Unicode than Python's) turns into
    # word characters, e.g. letters assigned after this Python's Unicode version.
    lowercase = normalizers.Lowercase()
    non_word = [c for c in characters if not python_word.match(c) and c != _COMBINING_DOT_ABOVE]
    lowered = [lowercase.normalize_str(c) for c in non_word]
    to_space = [c for c, low in zip(non_word, lowered) if any(python_word.match(x) for x in low)]
    to_space.append(_COMBINING_DOT_ABOVE)
    word_class = _character_class(word)
    non_numeric_word_class = _character_class(c for c in word if not c.isnumeric())
    word_run = f"{word_class}*{non_numeric_word_class}{word_class}*"
    final_sigma = f"(?<=\\p{{Cased}})\u03a3(?![\\p{{Case_Ignorable}}&&{word_class}]*\\p{{Cased}})"
    return _character_class(to_space), word_run, final_sigma


def _backend_tokenizer(vocab: dict[str, int], unk_token: str) -> Tokenizer:
    to_space, word_run, final_sigma = _patterns()
    tokenizer = Tokenizer(models.WordLevel(vocab, unk_token=unk_token))
    tokenizer.normalizer = normalizers.Sequence(
        [
            normalizers.Replace(Regex(to_space), " "),
            normalizers.Replace(Regex(final_sigma), "\u03c2"),
            normalizers.Lowercase(),
        ]
    )
    tokenizer.pre_tokenizer = pre_tokenizers.Split(Regex(word_run), behavior="removed", invert=True)
    return tokenizer


def build_tokenizer(
    vocab: Sequence[str],
    unk_token: str = UNK_TOKEN,
    pad_token: str = PAD_TOKEN,
    model_max_length: int = MAX_NOTE_TOKENS,
) -> PreTrainedTokenizerFast:
    """A `PreTrainedTokenizerFast` over `vocab` (token id = position in `vocab`).

    `vocab` must hold `unk_token` and `pad_token`. Truncation keeps the first tokens of a note,
    padding goes to the right; no special tokens are added around a note. A note that spells a
    special token ("[PAD]", or "**PAD**" in a converted vocabulary) reads it as the word it holds
    ("pad"), as the authors' code does: special tokens are only ever made by padding.
    """
    vocab = list(vocab)
    duplicates = [word for word, count in Counter(vocab).items() if count > 1]
    if duplicates:
        raise ValueError(f"build_tokenizer: the vocabulary repeats {len(duplicates)} words, e.g. {duplicates[:3]}.")
    for name, token in (("unk_token", unk_token), ("pad_token", pad_token)):
        if token not in vocab:
            raise ValueError(f"build_tokenizer: {name} {token!r} is not in the vocabulary; add it (see build_vocabulary).")
    backend = _backend_tokenizer({word: index for index, word in enumerate(vocab)}, unk_token)
    return PreTrainedTokenizerFast(
        tokenizer_object=backend,
        unk_token=unk_token,
        pad_token=pad_token,
        model_max_length=model_max_length,
        padding_side="right",
        truncation_side="right",
        model_input_names=["input_ids", "attention_mask"],
        split_special_tokens=True,
    )


def vocabulary_sha256(tokenizer: PreTrainedTokenizerFast) -> str:
    """SHA-256 of the tokenizer's words in id order (one per line): what the embedding rows mean."""
    words = tokenizer.convert_ids_to_tokens(list(range(len(tokenizer))))
    return hashlib.sha256("\n".join(words).encode("utf-8")).hexdigest()


@functools.cache
def _word_splitter() -> Tokenizer:
    return _backend_tokenizer({UNK_TOKEN: 0}, UNK_TOKEN)


def split_words(text: str, tokenizer: PreTrainedTokenizerFast | None = None) -> list[str]:
    """The tokens of `text` under those rules (what the tokenizer looks up in its vocabulary), as
    `tokenizer`'s own normalizer and pre-tokenizer split it (by default, those built here)."""
    splitter = _word_splitter() if tokenizer is None else tokenizer.backend_tokenizer
    normalized = splitter.normalizer.normalize_str(text)
    return [word for word, _ in splitter.pre_tokenizer.pre_tokenize_str(normalized)]


def build_vocabulary(
    texts: Iterable[str],
    min_count: int = 1,
    extra_words: Iterable[str] = (),
    pad_token: str = PAD_TOKEN,
    unk_token: str = UNK_TOKEN,
    min_texts: int = 1,
) -> list[str]:
    """`[pad_token, unk_token]`, then the words of `texts` seen at least `min_count` times in all
    and in at least `min_texts` distinct texts (most frequent first, ties in first-seen order), then
    the `extra_words` (e.g. the words of all code terms) not already present.

    `min_texts` keeps out the words of a single note (a name that escaped de-identification, an
    id): they would otherwise be published with the tokenizer."""
    counts, text_counts = Counter(), Counter()
    for text in texts:
        words = split_words(text)
        counts.update(words)
        text_counts.update(set(words))
    vocab = [pad_token, unk_token]
    vocab += [
        word for word, count in counts.most_common()
        if count >= min_count and text_counts[word] >= min_texts and word not in (pad_token, unk_token)
    ]
    seen = set(vocab)
    for word in extra_words:
        if word not in seen:
            seen.add(word)
            vocab.append(word)
    return vocab


def select_code_terms(terms: Sequence[str], num_synonyms: int, seed: int | None = None) -> list[str]:
    """The M terms of one code: its description, then M−1 synonyms, filled cyclically.

    `terms` is `[description, synonym, ...]`. With a `seed`, the synonyms are shuffled with it
    before the first M−1 are taken; without one, they are taken in the given order (the reference
    code takes a prefix of a list it had shuffled beforehand).
    """
    if not terms:
        raise ValueError("select_code_terms: a code needs at least its description.")
    description, synonyms = terms[0], list(terms[1:])
    if seed is not None:
        random.Random(seed).shuffle(synonyms)
    pool = [description] + synonyms[: num_synonyms - 1]
    return [pool[j % len(pool)] for j in range(num_synonyms)]


def build_code_term_ids(
    tokenizer: PreTrainedTokenizerFast,
    codes: Sequence[str],
    code_terms: Mapping[str, Sequence[str]],
    num_synonyms: int,
    term_length: int = TERM_LENGTH,
    seed: int | None = 0,
) -> tuple[list[list[int]], list[list[str]]]:
    """Token ids of every code's M terms, code-major: row c·M + j is term j of `codes[c]`.

    `code_terms` maps each code to `[description, synonym, ...]`. Each term is tokenised like a
    note, cut at `term_length` tokens and padded. Returns (ids: C·M rows of `term_length`,
    terms: C lists of M strings). The seed makes the choice of synonyms reproducible; it is derived
    per code from `seed` and the code, so adding a code does not change the others' choice.
    """
    missing = [code for code in codes if not code_terms.get(code)]
    if missing:
        raise KeyError(
            f"build_code_term_ids: {len(missing)} codes have no terms, e.g. {missing[:5]}; give each code at "
            "least its description (python -m datasets_scripts.code_synonyms builds code → [description, synonyms…])."
        )
    selected = [
        select_code_terms(code_terms[code], num_synonyms, None if seed is None else f"{seed}:{code}")
        for code in codes
    ]
    flat_terms = [term for terms in selected for term in terms]
    encoded = tokenizer(
        flat_terms, truncation=True, max_length=term_length, padding="max_length", return_attention_mask=False
    )
    return encoded["input_ids"], selected


__all__ = [
    "PAD_TOKEN",
    "UNK_TOKEN",
    "build_code_term_ids",
    "build_tokenizer",
    "build_vocabulary",
    "select_code_terms",
    "split_words",
]
