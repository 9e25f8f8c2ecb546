"""Ranking codes beyond the label set: every code of a code system (e.g. all of ICD-10-CM), those never
seen in training included.

MSMN's score with `score_function` reference, biaffine or dot has no parameter of its own per code, so
the model scores any code from its terms. A candidate's score adds two parts that do not come from
the note's attention:

    score(note, code) = MSMN logit + λ · term match + β · log(1 + the code's train count)

    term match: the TF-IDF cosine between the note and the closest of the code's terms, over the
        words of the MSMN tokenizer (and, with `longest_ngram=2`, pairs of adjacent words); sublinear
        term frequency, IDF over one document per candidate code (its terms) and some unlabelled texts;
    train count: how often the code is gold in the training notes (the prior MSMN's score lacks).

(λ, β) are an operating point chosen on dev; a checkpoint stores two: "best_map" (the best dev MAP)
and "unseen" (for codes absent from training). Ranking runs in two stages: the term match and the
prior of every candidate are cheap (one sparse product), MSMN's attention is not; so it re-scores the
label set and the `shortlist_size` candidates outside it with the highest first-stage score.

The candidates live in the checkpoint folder beside the weights (`CANDIDATES_FILE`,
`CANDIDATE_TENSORS_FILE`); `CandidateRanker.from_pretrained` reads them, `save_pretrained` writes them.
Only numpy, torch and safetensors: the folder's remote code needs nothing else.
"""

import json
import math
import os
from dataclasses import asdict, dataclass, field

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from .modeling_msmn import MSMNCodeEncoding, sequence_lengths

CANDIDATES_FILE = "candidate_codes.json"
CANDIDATE_TENSORS_FILE = "candidate_codes.safetensors"
ENCODING_CHUNK_CODES = 4096  # candidate codes encoded per encoder call: bounds the memory of the encoding


class TermMatcher:
    """TF-IDF vectors of token-id sequences, over the words (and adjacent word pairs) of the tokenizer.

    A feature is a word id w (key w) or a pair of adjacent word ids (a, b) (key (a + 1)·V + b, V the
    vocabulary size); the ids in `ignored_ids` (padding, the unknown word) are no feature and break
    pairs. Only the features of the IDF table count (those of the documents it was fitted on).
    """

    def __init__(self, idf_keys: np.ndarray, idf_values: np.ndarray, vocab_size: int, longest_ngram: int,
                 ignored_ids: list[int]):
        self.idf_keys = np.asarray(idf_keys, dtype=np.int64)  # sorted
        self.idf_values = np.asarray(idf_values, dtype=np.float64)
        self.vocab_size, self.longest_ngram, self.ignored_ids = vocab_size, longest_ngram, list(ignored_ids)

    def features(self, token_ids: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(row, key, count) of each distinct feature of each row of `token_ids` (n, L), padded with an
        ignored id; ordered by row, then key."""
        token_ids = np.asarray(token_ids, dtype=np.int64)
        is_word = ~np.isin(token_ids, self.ignored_ids)
        rows = np.broadcast_to(np.arange(len(token_ids))[:, None], token_ids.shape)
        row_parts, key_parts = [rows[is_word]], [token_ids[is_word]]
        if self.longest_ngram == 2:
            is_pair = is_word[:, :-1] & is_word[:, 1:]
            row_parts.append(rows[:, 1:][is_pair])
            key_parts.append((token_ids[:, :-1][is_pair] + 1) * self.vocab_size + token_ids[:, 1:][is_pair])
        num_keys = (self.vocab_size + 1) * self.vocab_size
        combined, counts = np.unique(np.concatenate(row_parts) * num_keys + np.concatenate(key_parts), return_counts=True)
        return combined // num_keys, combined % num_keys, counts

    @classmethod
    def fit(cls, parts: list[tuple[np.ndarray, np.ndarray]], num_documents: int, vocab_size: int, longest_ngram: int,
            ignored_ids: list[int]):
        """The IDF table over `num_documents` documents made of token-id rows: each part is (token_ids
        (n, L), the document of each row (n,)); idf = ln((1 + D) / (1 + document frequency)) + 1."""
        matcher = cls(np.zeros(0), np.zeros(0), vocab_size, longest_ngram, ignored_ids)
        documents, keys = [], []
        for token_ids, document_of_row in parts:
            rows, part_keys, _ = matcher.features(token_ids)
            documents.append(np.asarray(document_of_row)[rows])
            keys.append(part_keys)
        documents, keys = np.concatenate(documents), np.concatenate(keys)
        num_keys = (vocab_size + 1) * vocab_size
        distinct = np.unique(documents * num_keys + keys) % num_keys  # each key once per document
        matcher.idf_keys, frequencies = np.unique(distinct, return_counts=True)
        matcher.idf_values = np.log((1 + num_documents) / (1 + frequencies)) + 1
        return matcher

    def vectors(self, token_ids: np.ndarray, dtype=torch.float32) -> torch.Tensor:
        """L2-normalised (1 + ln tf)·idf vectors of the rows of `token_ids` (n, L): sparse (n, F)."""
        rows, keys, counts = self.features(token_ids)
        columns = np.searchsorted(self.idf_keys, keys).clip(max=max(len(self.idf_keys) - 1, 0))
        known = self.idf_keys[columns] == keys if len(self.idf_keys) else np.zeros(len(keys), dtype=bool)
        rows, columns, counts = rows[known], columns[known], counts[known]
        values = (1 + np.log(counts)) * self.idf_values[columns]
        norms = np.sqrt(np.bincount(rows, weights=values**2, minlength=len(token_ids)))
        values = values / norms[rows]
        indices = torch.from_numpy(np.stack([rows, columns]))  # ordered by row, then column: coalesced
        return torch.sparse_coo_tensor(indices, torch.from_numpy(values).to(dtype), size=(len(token_ids), len(self.idf_keys)),
                                       is_coalesced=True, check_invariants=False)


def term_match(term_vectors: torch.Tensor, note_vectors: torch.Tensor, num_synonyms: int) -> torch.Tensor:
    """(B, C) cosine between each note and the closest of each code's terms.

    term_vectors: sparse (C·M, F), code-major; note_vectors: sparse (B, F)."""
    cosines = term_vectors @ note_vectors.to_dense().T  # (C·M, B)
    return cosines.view(-1, num_synonyms, cosines.shape[1]).amax(dim=1).T


@dataclass
class RankedNotes:
    """scores: (B, K) candidate scores; msmn_logits: (B, K) MSMN's logit of each, NaN where MSMN did not
    re-score it; note_states: (B, N, d) the encoder states of the notes."""

    scores: torch.Tensor
    msmn_logits: torch.Tensor
    note_states: torch.Tensor


@dataclass
class OperatingPoint:
    """(λ, β) of the candidate score, with how it ranks: `shortlist_size` candidates outside the label set
    re-scored by MSMN, a code predicted above `threshold` (on the score); `dev` holds its dev figures."""

    term_match_weight: float
    prior_weight: float
    shortlist_size: int | None = None  # None: every candidate (the exhaustive ranking)
    threshold: float | None = None
    dev: dict = field(default_factory=dict)


class CandidateRanker:
    """The label set's codes, then `extra_codes` (candidates outside it), ranked by the candidate score.

    extra_term_ids: (E·M, term_length) token ids of the extra codes' M terms, code-major (as
        `build_code_term_ids` makes them); extra_terms, extra_descriptions: their strings.
    train_counts: (L + E,) each candidate's count of gold assignments in the training notes.
    """

    def __init__(self, extra_codes, extra_descriptions, extra_terms, extra_term_ids: torch.Tensor,
                 train_counts: torch.Tensor, matcher: TermMatcher, operating_points: dict, code_system: str,
                 num_labels: int):
        self.extra_codes, self.extra_descriptions, self.extra_terms = list(extra_codes), extra_descriptions, extra_terms
        self.extra_term_ids, self.train_counts, self.matcher = extra_term_ids, train_counts, matcher
        self.operating_points = {name: point if isinstance(point, OperatingPoint) else OperatingPoint(**point)
                                 for name, point in operating_points.items()}
        self.code_system, self.num_labels = code_system, num_labels
        self._encoding = None  # (model, MSMNCodeEncoding of every candidate)
        self._term_vectors = None  # (matcher, the term vectors of every candidate)

    # ------------------------------------------------------------------ saving and loading

    def save_pretrained(self, folder) -> None:
        description = {
            "code_system": self.code_system, "num_labels": self.num_labels, "vocab_size": self.matcher.vocab_size,
            "longest_ngram": self.matcher.longest_ngram, "ignored_ids": self.matcher.ignored_ids,
            "operating_points": {name: asdict(point) for name, point in self.operating_points.items()},
            "codes": self.extra_codes, "descriptions": self.extra_descriptions, "terms": self.extra_terms,
        }
        tensors = {"term_ids": self.extra_term_ids.to(torch.int32).contiguous(),
                   "train_counts": self.train_counts.to(torch.int64),
                   "idf_keys": torch.from_numpy(self.matcher.idf_keys),
                   "idf_values": torch.from_numpy(self.matcher.idf_values)}
        # each file through a .partial one, renamed when whole: an earlier file is never half-overwritten
        description_path, tensors_path = (os.path.join(folder, name) for name in (CANDIDATES_FILE, CANDIDATE_TENSORS_FILE))
        with open(description_path + ".partial", "w", encoding="utf-8") as file:
            json.dump(description, file, ensure_ascii=False)
        save_file(tensors, tensors_path + ".partial")
        os.replace(tensors_path + ".partial", tensors_path)
        os.replace(description_path + ".partial", description_path)

    @classmethod
    def from_pretrained(cls, description_path: str, tensors_path: str, config):
        """The ranker saved beside a model whose config is `config`; a clear error if it does not fit."""
        try:
            with open(description_path, encoding="utf-8") as file:
                description = json.load(file)
            tensors = load_file(tensors_path)
            extra_term_ids = tensors["term_ids"].long()
            missing = {"codes", "descriptions", "terms", "num_labels", "vocab_size", "longest_ngram", "ignored_ids",
                       "operating_points", "code_system"} - set(description)
            if missing or {"train_counts", "idf_keys", "idf_values"} - set(tensors):
                raise ValueError(f"missing {sorted(missing)}")
        except (OSError, ValueError, KeyError, TypeError, SafetensorError) as error:
            raise ValueError(f"The checkpoint's candidate codes ({description_path}, {tensors_path}) cannot be "
                             f"read ({type(error).__name__}: {error}); save them again with train.py "
                             "--candidate_codes.") from None
        num_extra = len(description["codes"])
        expected = (num_extra * config.num_synonyms, config.term_length)
        if (description["num_labels"] != config.num_labels or description["vocab_size"] != config.vocab_size
                or tuple(extra_term_ids.shape) != expected or len(tensors["train_counts"]) != config.num_labels + num_extra):
            raise ValueError(
                f"The checkpoint's candidate codes were saved for another model ({description['num_labels']} label "
                f"codes, vocabulary {description['vocab_size']}, term ids {tuple(extra_term_ids.shape)}); this one has "
                f"{config.num_labels} codes, vocabulary {config.vocab_size}, and needs term ids {expected}. Save the "
                "candidates with the model they were chosen for (train.py --candidate_codes).")
        matcher = TermMatcher(tensors["idf_keys"].numpy(), tensors["idf_values"].numpy(), description["vocab_size"],
                              description["longest_ngram"], description["ignored_ids"])
        return cls(description["codes"], description["descriptions"], description["terms"], extra_term_ids,
                   tensors["train_counts"], matcher, description["operating_points"], description["code_system"],
                   description["num_labels"])

    # ------------------------------------------------------------------ the codes

    def codes(self, config) -> list[str]:
        """Every candidate: the label set in label order, then the extra codes."""
        return [config.id2label[index] for index in range(config.num_labels)] + self.extra_codes

    @property
    def num_candidates(self) -> int:
        """How many codes the ranker ranks: the label set and the extra codes."""
        return self.num_labels + len(self.extra_codes)

    def code_table(self, config) -> tuple[list[str], list[str], list[list[str]]]:
        """(codes, descriptions, terms) of every candidate, the label set first, as `codes` orders them."""
        descriptions = list(config.code_descriptions or [""] * config.num_labels) + list(self.extra_descriptions)
        terms = list(config.code_terms or [[description] for description in descriptions[: config.num_labels]])
        return self.codes(config), descriptions, terms + list(self.extra_terms)

    def point(self, name: str) -> OperatingPoint:
        if name not in self.operating_points:
            raise ValueError(f"operating_point {name!r}: this checkpoint stores {sorted(self.operating_points)}.")
        return self.operating_points[name]

    def encoding(self, model) -> MSMNCodeEncoding:
        """The synonym queries and code vectors of every candidate, computed once for `model` (in
        evaluation, without gradients: the cache does not follow changes of its weights): the label
        set's from the model's cache, the extra codes' in chunks."""
        if self._encoding is None or self._encoding[0] is not model:
            msmn = model.msmn
            no_codes = torch.zeros(0, dtype=torch.long, device=msmn.code_term_ids.device)
            with torch.no_grad():
                label_encoding = msmn.code_encoding()
                queries, vectors = [label_encoding.synonym_queries], [label_encoding.code_vectors]
                for chunk in self.extra_term_ids.to(no_codes.device).split(ENCODING_CHUNK_CODES * model.config.num_synonyms):
                    encoding = msmn.encode_codes(no_codes, extra_code_term_ids=chunk)
                    queries.append(encoding.synonym_queries)
                    vectors.append(encoding.code_vectors)
            self._encoding = (model, MSMNCodeEncoding(synonym_queries=torch.cat(queries), code_vectors=torch.cat(vectors)))
        return self._encoding[1]

    def term_vectors(self, model) -> torch.Tensor:
        """(C·M, F) sparse TF-IDF vectors of every candidate's terms, computed once per term matcher."""
        if self._term_vectors is None or self._term_vectors[0] is not self.matcher:
            all_term_ids = torch.cat([model.msmn.code_term_ids.cpu(), self.extra_term_ids]).numpy()
            self._term_vectors = (self.matcher, self.matcher.vectors(all_term_ids, dtype=model.dtype))
        return self._term_vectors[1]

    def first_stage(self, model, input_ids: torch.Tensor, point: OperatingPoint) -> torch.Tensor:
        """(B, L + E) λ·term match + β·log(1 + train count) of every candidate."""
        term_vectors = self.term_vectors(model)
        note_vectors = self.matcher.vectors(input_ids.cpu().numpy(), dtype=term_vectors.dtype)
        return point.term_match_weight * term_match(term_vectors, note_vectors, model.config.num_synonyms) + (
            point.prior_weight * self.prior(term_vectors.dtype))

    def prior(self, dtype=torch.float32) -> torch.Tensor:
        """(L + E,) log(1 + train count) of every candidate: the prior that β weighs."""
        return torch.log1p(self.train_counts.to(dtype))

    def msmn_logits(self, model, note_states: torch.Tensor, attention_mask: torch.Tensor,
                    candidates: torch.Tensor) -> torch.Tensor:
        """(c,) MSMN's logits of one note (note_states (1, N, d), attention_mask (1, N)) for `candidates`,
        indices among all candidates."""
        encoding = self.encoding(model)
        candidates = candidates.to(encoding.code_vectors.device)
        representations = model.msmn.attention(note_states, attention_mask, encoding.synonym_queries[candidates])
        return model.score(representations, encoding.code_vectors[candidates])[0]

    def rank(self, model, input_ids: torch.Tensor, attention_mask: torch.Tensor, point: OperatingPoint,
             candidates: torch.Tensor | None = None) -> "RankedNotes":
        """The candidate scores of a batch of notes (right-padded input_ids and attention_mask (B, N)) under
        `point`: MSMN re-scores the label set and the point's shortlist (`shortlist`), and every other
        candidate gets a score below theirs, in first-stage order (`ranked_scores`); or, with
        `candidates` (c,), the scores of those candidates alone, each re-scored."""
        input_ids, attention_mask = model.msmn.checked_inputs(input_ids, attention_mask)  # as the model's forward
        first_stage = self.first_stage(model, input_ids, point).to(model.device)
        note_states = model.msmn.encoder(input_ids, sequence_lengths(attention_mask))
        scores, logits = [], []
        for note, note_first_stage in enumerate(first_stage):
            scored = shortlist(note_first_stage, self.num_labels, point.shortlist_size) if candidates is None else candidates
            note_logits = self.msmn_logits(model, note_states[note : note + 1], attention_mask[note : note + 1], scored)
            if candidates is None:
                scores.append(ranked_scores(note_first_stage, scored, note_logits))
                logits.append(torch.full_like(note_first_stage, math.nan).index_put((scored,), note_logits))
            else:
                scores.append(note_first_stage[scored] + note_logits)
                logits.append(note_logits)
        return RankedNotes(torch.stack(scores), torch.stack(logits), note_states)

    def synonym_queries(self, model, candidates: torch.Tensor) -> torch.Tensor:
        """(c, M, d/M) the attention queries of `candidates`, for their evidence."""
        return self.encoding(model).synonym_queries[candidates]


def shortlist(first_stage: torch.Tensor, num_labels: int, size: int | None) -> torch.Tensor:
    """(L + s,) the candidates MSMN re-scores for one note: the label set, then the `size` (None: all)
    others with the highest first-stage score (ties: the earlier candidate)."""
    extra_order = torch.argsort(first_stage[num_labels:], descending=True, stable=True)
    extra = extra_order if size is None else extra_order[:size]
    return torch.cat([torch.arange(num_labels, device=first_stage.device), num_labels + extra])


def ranked_scores(first_stage: torch.Tensor, candidates: torch.Tensor, msmn_logits: torch.Tensor) -> torch.Tensor:
    """(L + E,) one note's scores: first stage + MSMN logit for `candidates`; below all of them, in
    first-stage order, the candidates MSMN did not re-score."""
    scored = first_stage[candidates] + msmn_logits
    scores = first_stage - first_stage.max() + scored.min() - 1
    scores[candidates] = scored
    return scores
