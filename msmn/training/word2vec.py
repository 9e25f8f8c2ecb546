"""Word embeddings for training: word2vec CBOW vectors trained on the notes (cached in word2vec's
binary format, which runs no code when read), or read from a file the user gives, and the embedding
matrix in the tokenizer's order."""

import hashlib
import logging
from pathlib import Path

import numpy as np
import torch

from datasets_scripts import InputError
from datasets_scripts.files import write_atomically
from modeling_msmn import split_words

logger = logging.getLogger("msmn.train")

# Word2vec from a few hundred notes needs many more passes: on CodiEsp's 500 Spanish training notes
# (no background set), dev P@5 after 8 epochs is 0.16, 0.28 and 0.39 with 10, 30 and 100 passes.
SMALL_WORD2VEC_CORPUS = 2000
# what gensim's word2vec reader raises on a damaged, truncated or foreign file
UNREADABLE_WORD2VEC = (ValueError, EOFError, UnicodeDecodeError)


def word2vec_vectors(tokenizer, texts: list[str], embedding_dim: int, seed: int, epochs: int, min_count: int,
                     word2vec_file: Path | None = None, trust_pickle: bool = False):
    """Word2vec CBOW vectors of the vocabulary's words, trained on `texts` (`epochs` passes) and cached by
    their content; or those of `word2vec_file` (a gensim model only with `trust_pickle`)."""
    from gensim.models import KeyedVectors, Word2Vec

    if word2vec_file is not None:
        return read_word2vec(word2vec_file, trust_pickle)
    from datasets import config as datasets_config

    vocab = tokenizer.convert_ids_to_tokens(range(len(tokenizer)))
    digest = hashlib.sha256(f"{embedding_dim}:{min_count}:{epochs}:{seed}".encode())
    digest.update("\n".join(sorted(vocab)).encode())
    for text in texts:
        digest.update(hashlib.sha256(text.encode()).digest())
    # word2vec binary format: reading it runs no code, unlike a gensim pickle
    cache = Path(datasets_config.HF_DATASETS_CACHE) / "msmn_word2vec" / f"{digest.hexdigest()[:20]}.bin"
    if cache.is_file():
        try:
            vectors = KeyedVectors.load_word2vec_format(str(cache), binary=True)
            logger.info("word2vec: vectors read from the cache %s", cache)
            return vectors
        except UNREADABLE_WORD2VEC:
            logger.warning("word2vec: the cache %s is damaged; training the vectors again", cache)
    logger.info("word2vec: %d passes over %d texts", epochs, len(texts))
    sentences = [split_words(text, tokenizer) for text in texts]  # as the saved tokenizer splits them
    model = Word2Vec(sentences, vector_size=embedding_dim, window=5, min_count=min_count, sg=0, epochs=epochs,
                     seed=seed, workers=1)
    kept = [word for word in vocab if word in model.wv.key_to_index]  # no word outside the vocabulary is cached
    vectors = KeyedVectors(embedding_dim)
    if kept:
        vectors.add_vectors(kept, model.wv[kept])
        for word in kept:
            vectors.set_vecattr(word, "count", model.wv.get_vecattr(word, "count"))
    write_atomically(cache, lambda file: vectors.save_word2vec_format(file.name, binary=True))  # gensim opens the path
    return vectors


def read_word2vec(path: Path, trust_pickle: bool):
    """Vectors of a word2vec text (.txt, .vec) or binary (.bin) file; a gensim model (.model, .kv) only
    with `trust_pickle`, since gensim stores those as pickles."""
    from gensim.models import KeyedVectors, Word2Vec

    if not path.is_file():
        raise InputError(f"--word2vec {path}: no such file (a word2vec text file .txt/.vec or binary file .bin).")
    if path.suffix in (".txt", ".vec", ".bin"):
        try:
            return KeyedVectors.load_word2vec_format(str(path), binary=path.suffix == ".bin")
        except UNREADABLE_WORD2VEC as error:
            raise InputError(f"--word2vec {path}: not a readable word2vec {'binary' if path.suffix == '.bin' else 'text'} "
                             f"file ({type(error).__name__}); check the file, or save the vectors with gensim's "
                             "save_word2vec_format.") from None
    if not trust_pickle:
        raise InputError(
            f"--word2vec {path} is not a word2vec text (.txt, .vec) or binary (.bin) file: it is read as a pickled "
            "gensim model. Loading it runs pickle, which can execute arbitrary code. If you trust the file, run again "
            "with --trust_pickle, or save its vectors with gensim's save_word2vec_format and pass that file."
        )
    loaded = Word2Vec.load(str(path)) if path.suffix == ".model" else KeyedVectors.load(str(path))
    return getattr(loaded, "wv", loaded)


def read_word_list(path: Path) -> set[str]:
    """The words of a JSON list of words, or of a JSON object word → count (the authors' word_count_dict.json)."""
    import json

    try:
        words = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise InputError(f"--vocabulary_words {path}: no such file.") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise InputError(f"--vocabulary_words {path}: not a JSON file ({type(error).__name__}); give a JSON list of "
                         "words or an object word → count.") from None
    if not isinstance(words, (list, dict)) or not all(isinstance(word, str) for word in words):
        raise InputError(f"--vocabulary_words {path}: give a JSON list of words or an object word → count.")
    return set(words)


def vocabulary_of_vectors(vectors, listed_words: set[str], pad_token: str, unk_token: str) -> list[str]:
    """The authors' vocabulary: the words of the word2vec vectors that `listed_words` holds (in the vectors'
    order), after [PAD] and [UNK]. Their own special words (**UNK**, **PAD**, **MASK**) play no part here."""
    words = [word for word in vectors.index_to_key if word in listed_words and word not in (pad_token, unk_token)]
    if not words:
        raise InputError("--vocabulary_words: none of its words has a vector in --word2vec; are they the files of one "
                         "recipe (a word2vec model and the word list of the same notes)?")
    return [pad_token, unk_token, *words]


def embedding_matrix(vectors, vocab: list[str], embedding_dim: int, seed: int) -> torch.Tensor:
    """Rows in tokenizer order: the word's vector, else N(0, 1) (unknown words, [UNK])."""
    if vectors.vector_size != embedding_dim:
        raise InputError(f"word2vec vectors have size {vectors.vector_size}; the config's embedding_dim is {embedding_dim}.")
    matrix = torch.randn(len(vocab), embedding_dim, generator=torch.Generator().manual_seed(seed))
    found = [(index, word) for index, word in enumerate(vocab) if word in vectors.key_to_index]
    if found:
        rows, words = zip(*found)
        matrix[list(rows)] = torch.from_numpy(np.stack([vectors[word] for word in words])).float()
    logger.info("word2vec: %d of %d vocabulary words have a vector", len(found), len(vocab))
    return matrix
