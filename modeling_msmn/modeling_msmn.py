"""MSMN: Multiple Synonyms Matching Network for automatic ICD coding (Yuan, Tan & Huang, ACL 2022).

Data flow, top to bottom, as the paper's method section describes it:
    text encoder (embedding → BiLSTM → projection)      note_states     (B, N, d)
    synonym encoding (same encoder over code terms)     synonym_vectors (C, M, d)
    multi-synonym attention (one head per synonym)      code_representations (B, C, d)
    score (code-conditioned, class-independent)         logits (B, C)
    loss (mean binary cross-entropy)

B notes, N tokens, C codes, M synonyms per code (= attention heads), d hidden size.
"""

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from transformers import PreTrainedModel
from transformers import initialization as init
from transformers.modeling_outputs import SequenceClassifierOutput
from transformers.utils import ModelOutput

from .configuration_msmn import MSMNConfig


class MSMNBiLSTM(nn.Module):
    """Bidirectional LSTM with packed-sequence semantics, built from padded unidirectional LSTMs.

    The backward direction starts at each sequence's last real token and padding positions output
    zeros, as with `pack_padded_sequence`, whose CPU backward is quadratic in N. Each
    direction of each layer is one `nn.LSTM`; the backward one reads every sequence reversed within
    its own length.
    """

    def __init__(self, input_size: int, hidden_size: int, num_layers: int, dropout: float):
        super().__init__()
        layer_inputs = [input_size] + [2 * hidden_size] * (num_layers - 1)
        self.forward_layers = nn.ModuleList(nn.LSTM(size, hidden_size, batch_first=True) for size in layer_inputs)
        self.backward_layers = nn.ModuleList(nn.LSTM(size, hidden_size, batch_first=True) for size in layer_inputs)
        self.dropout = nn.Dropout(dropout)

    def forward(self, inputs: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        # inputs: (B, N, input_size); lengths: (B,) ≥ 1 → (B, N, 2·hidden_size), zeros at padding
        positions = torch.arange(inputs.shape[1], device=inputs.device)
        is_real = positions < lengths[:, None]  # (B, N)
        # Position t of a sequence of length L reads position L−1−t; padding stays in place.
        reversed_positions = torch.where(is_real, lengths[:, None] - 1 - positions, positions)

        def reverse_in_length(states):
            return states.gather(1, reversed_positions[..., None].expand_as(states))

        states = inputs
        for layer, (forward_lstm, backward_lstm) in enumerate(zip(self.forward_layers, self.backward_layers)):
            if layer > 0:
                states = self.dropout(states)
            forward_states, _ = forward_lstm(states)
            backward_states, _ = backward_lstm(reverse_in_length(states))
            states = torch.cat([forward_states, reverse_in_length(backward_states)], dim=-1)
            states = states * is_real[..., None]
        return states


class MSMNTextEncoder(nn.Module):
    """Embedding → dropout → BiLSTM → Linear(R, d) when R ≠ d; shared by notes and code terms."""

    def __init__(self, config: MSMNConfig):
        super().__init__()
        self.word_embeddings = nn.Embedding(config.vocab_size, config.embedding_dim, padding_idx=config.pad_token_id)
        self.embedding_dropout = nn.Dropout(config.embedding_dropout)
        self.lstm = MSMNBiLSTM(
            config.embedding_dim,
            config.rnn_dim // 2,
            config.num_lstm_layers,
            config.lstm_dropout if config.num_lstm_layers > 1 else 0.0,
        )
        self.output_projection = (
            nn.Linear(config.rnn_dim, config.hidden_size) if config.rnn_dim != config.hidden_size else None
        )

    def forward(self, input_ids: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        # input_ids: (B, N), lengths: (B,) → (B, N, d)
        embeddings = self.embedding_dropout(self.word_embeddings(input_ids))
        states = self.lstm(embeddings, lengths)
        if self.output_projection is not None:
            states = self.output_projection(states)  # padding positions get the bias, as in the reference
        return states


def sequence_lengths(attention_mask: torch.Tensor) -> torch.Tensor:
    """Real tokens per row of a right-padded mask, at least 1 (the reference clamps 0 to 1)."""
    lengths = attention_mask.sum(dim=1)
    positions = torch.arange(attention_mask.shape[1], device=attention_mask.device)
    if not torch.equal(attention_mask.bool(), positions < lengths[:, None]):
        raise ValueError(
            "MSMN expects right-padded inputs: every attention_mask row must be ones then zeros. "
            "Tokenize with padding_side='right' (the MSMN tokenizer's default)."
        )
    return lengths.clamp(min=1)


def synonym_attention_weights(
    synonym_queries: torch.Tensor, note_keys: torch.Tensor, is_padding: torch.Tensor
) -> torch.Tensor:
    """Softmax over tokens of ⟨Z_j[b, n], U_cj⟩ (no 1/√d scaling), padding masked.

    synonym_queries: (M, c, d/M); note_keys: (B, M, N, d/M); is_padding: (B, 1, 1, N) → (B, M, c, N).
    An all-padding note gets uniform weights, as the reference's −1e6 mask gives.
    """
    scores = torch.matmul(synonym_queries, note_keys.transpose(-1, -2))
    scores.masked_fill_(is_padding, torch.finfo(scores.dtype).min)
    return torch.softmax(scores, dim=-1)


class SynonymAttentionFunction(torch.autograd.Function):
    """One chunk of codes: v[b, c] = max_j Σ_n α[b, j, c, n] H[b, n], with a lean backward.

    Saves the output and its winning heads (B, c, d; heads as uint8) and recomputes the attention
    weights α in the backward pass, instead of keeping B×M×c×N weights (or recomputing the whole
    chunk, value product included, as activation checkpointing would). Gradients equal autograd's
    through `max(dim).values` (the gradient goes to the head `max` returned). Under autocast (bf16
    training), the backward pass recomputes in the forward pass's autocast dtype.
    """

    @staticmethod
    def forward(ctx, synonym_queries, note_keys, note_states, is_padding):
        batch_size, num_tokens, hidden_size = note_states.shape
        num_heads, chunk_codes, _ = synonym_queries.shape
        weights = synonym_attention_weights(synonym_queries, note_keys, is_padding)
        per_synonym = torch.bmm(weights.view(batch_size, -1, num_tokens), note_states)  # (B, M·c, d)
        values, best_head = per_synonym.view(batch_size, num_heads, chunk_codes, hidden_size).max(dim=1)
        ctx.save_for_backward(synonym_queries, note_keys, note_states, is_padding, values, best_head.to(torch.uint8))
        ctx.device_type = note_states.device.type
        ctx.autocast_dtype = torch.get_autocast_dtype(ctx.device_type) if torch.is_autocast_enabled(ctx.device_type) else None
        return values

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_values):
        with torch.autocast(ctx.device_type, dtype=ctx.autocast_dtype, enabled=ctx.autocast_dtype is not None):
            synonym_queries, note_keys, note_states, is_padding, values, best_head = ctx.saved_tensors
            batch_size, num_tokens, hidden_size = note_states.shape
            num_heads, chunk_codes, _ = synonym_queries.shape
            weights = synonym_attention_weights(synonym_queries, note_keys, is_padding)  # (B, M, c, N)
            # Only the winning head of each value gets its gradient: (B, M, c, d)
            grad_per_synonym = grad_values.new_zeros(batch_size, num_heads, chunk_codes, hidden_size)
            grad_per_synonym.scatter_(1, best_head.long().unsqueeze(1), grad_values.unsqueeze(1))
            # Softmax backward needs Σ_n ∂α·α = ∂A·A per head; A equals the saved values where the head won.
            weighted_sum = (grad_per_synonym * values.unsqueeze(1)).sum(dim=-1, keepdim=True)  # (B, M, c, 1)
            grad_per_synonym = grad_per_synonym.view(batch_size, -1, hidden_size)  # (B, M·c, d)
            flat_weights = weights.view(batch_size, -1, num_tokens)  # (B, M·c, N)
            grad_note_states = torch.bmm(flat_weights.transpose(1, 2), grad_per_synonym)
            grad_weights = torch.bmm(grad_per_synonym, note_states.transpose(1, 2)).view_as(weights)
            # softmax backward, then the mask's: masked scores get no gradient
            grad_scores = grad_weights.sub_(weighted_sum).mul_(weights)
            grad_scores.masked_fill_(is_padding, 0.0)
            grad_queries = torch.matmul(grad_scores, note_keys).sum(dim=0)  # (M, c, d/M)
            grad_note_keys = torch.matmul(grad_scores.transpose(-1, -2), synonym_queries)  # (B, M, N, d/M)
            return grad_queries, grad_note_keys, grad_note_states, None


class MSMNMultiSynonymAttention(nn.Module):
    """Each code attends over the note once per synonym; the M results are max-pooled (the paper's
    multi-synonyms attention).

    Keys are the heads of Z = tanh(W_H H + b_H), queries the projected synonym vectors
    U = W_Q Q + b_Q, values the full note states H. Computed in the "fold" layout: scores as
    (B, M, C, N), softmax over the contiguous token axis, and the value product as one
    (B, M·C, N) @ (B, N, d) matmul. With gradients, each chunk runs `SynonymAttentionFunction`,
    which recomputes the attention weights in the backward pass rather than storing them. When the
    score tensor would exceed `config.attention_memory_budget_mb`, codes are processed in chunks,
    so memory stays bounded whatever C is.
    """

    def __init__(self, config: MSMNConfig):
        super().__init__()
        self.num_heads = config.num_synonyms
        self.head_dim = config.hidden_size // config.num_synonyms
        self.memory_budget_bytes = config.attention_memory_budget_mb * 2**20
        self.note_projection = nn.Linear(config.hidden_size, config.hidden_size)  # W_H
        self.synonym_projection = nn.Linear(config.hidden_size, self.head_dim)  # W_Q, shared by all synonyms
        self.representation_dropout = nn.Dropout(config.representation_dropout)

    def note_keys(self, note_states: torch.Tensor) -> torch.Tensor:
        # Z = tanh(W_H H + b_H) split into heads: (B, N, d) → (B, M, N, d/M)
        batch_size, num_tokens, _ = note_states.shape
        note_keys = torch.tanh(self.note_projection(note_states))
        return note_keys.view(batch_size, num_tokens, self.num_heads, self.head_dim).transpose(1, 2)

    def forward(
        self, note_states: torch.Tensor, attention_mask: torch.Tensor, synonym_queries: torch.Tensor
    ) -> torch.Tensor:
        # note_states: (B, N, d); attention_mask: (B, N); synonym_queries: (C, M, d/M) → (B, C, d)
        batch_size, num_tokens, _ = note_states.shape
        num_codes = synonym_queries.shape[0]
        note_keys = self.note_keys(note_states)  # (B, M, N, d/M)
        queries = synonym_queries.transpose(0, 1)  # (M, C, d/M)
        is_padding = ~attention_mask.bool()[:, None, None, :]  # (B, 1, 1, N)

        def attend(queries_chunk: torch.Tensor) -> torch.Tensor:
            # (M, c, d/M) → (B, c, d)
            if torch.is_grad_enabled() and (note_states.requires_grad or queries_chunk.requires_grad):
                return SynonymAttentionFunction.apply(queries_chunk, note_keys, note_states, is_padding)
            weights = synonym_attention_weights(queries_chunk, note_keys, is_padding)
            per_synonym = torch.bmm(weights.view(batch_size, -1, num_tokens), note_states)  # (B, M·c, d)
            return per_synonym.view(batch_size, self.num_heads, queries_chunk.shape[1], -1).max(dim=1).values

        score_bytes_per_code = batch_size * self.num_heads * num_tokens * note_states.element_size()
        if score_bytes_per_code * num_codes <= self.memory_budget_bytes:
            code_representations = attend(queries)
        else:
            chunk_size = max(1, int(self.memory_budget_bytes // score_bytes_per_code))
            code_representations = torch.cat([attend(chunk) for chunk in queries.split(chunk_size, dim=1)], dim=1)
        return self.representation_dropout(code_representations)

    def evidence(
        self, note_states: torch.Tensor, attention_mask: torch.Tensor, synonym_queries: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Which tokens and which synonyms made each code's representation v, to explain a prediction.

        Dimension k of v[b, c] is Σ_n α[b, j_k, c, n] H[b, n, k], with j_k the head that won its
        max-pooling. Returns
            token_weights (B, C, N): the weights behind v averaged over its d dimensions, each dimension
                with the weights of its winning head; they sum to 1 over a note's tokens.
            synonym_shares (B, C, M): the fraction of the d dimensions that each synonym's head won.
        Not chunked: call it for the few codes to explain (e.g. the predicted ones), with
        note_states and synonym_queries as `forward` takes them.
        """
        weights = synonym_attention_weights(
            synonym_queries.transpose(0, 1), self.note_keys(note_states), ~attention_mask.bool()[:, None, None, :]
        )  # (B, M, C, N)
        per_synonym = torch.matmul(weights, note_states[:, None])  # (B, M, C, d)
        winning_head = per_synonym.max(dim=1).indices  # (B, C, d), the head `forward`'s max-pooling takes
        synonym_shares = F.one_hot(winning_head, self.num_heads).to(weights.dtype).mean(dim=2)  # (B, C, M)
        token_weights = torch.einsum("bmcn,bcm->bcn", weights, synonym_shares)
        return token_weights, synonym_shares


@dataclass
class MSMNCodeEncoding(ModelOutput):
    """The note-independent side of MSMN, computed from the code terms.

    synonym_vectors: (C, M, d) max-pooled encoder states of each code's M terms.
    synonym_queries: (C, M, d/M) the attention queries W_Q Q + b_Q.
    code_vectors: (C, d) max over the M synonym vectors: the code's representation q_c.
    """

    synonym_vectors: torch.Tensor | None = None
    synonym_queries: torch.Tensor | None = None
    code_vectors: torch.Tensor | None = None


@dataclass
class MSMNModelOutput(ModelOutput):
    """note_states: (B, N, d); code_representations: (B, C, d) the per-code note representations v;
    code_vectors: (C, d) the code representations q."""

    note_states: torch.Tensor | None = None
    code_representations: torch.Tensor | None = None
    code_vectors: torch.Tensor | None = None


class MSMNPreTrainedModel(PreTrainedModel):
    config: MSMNConfig
    config_class = MSMNConfig
    base_model_prefix = "msmn"
    main_input_name = "input_ids"
    accepts_loss_kwargs = False

    @torch.no_grad()
    def _init_weights(self, module):
        """PyTorch's default initialisation, except the embedding (N(0, 1), PAD row zero) and W_H
        (xavier-uniform), as in the reference code. Word vectors are loaded after construction."""
        if isinstance(module, nn.Embedding):
            init.normal_(module.weight, mean=0.0, std=1.0)
            if module.padding_idx is not None and not getattr(module.weight, "_is_hf_initialized", False):
                init.zeros_(module.weight[module.padding_idx])
        elif isinstance(module, nn.LSTM):
            bound = 1.0 / math.sqrt(module.hidden_size)
            for parameter in module.parameters():
                init.uniform_(parameter, -bound, bound)
        elif isinstance(module, nn.Linear):
            init.kaiming_uniform_(module.weight, a=math.sqrt(5))
            if module.bias is not None:
                bound = 1.0 / math.sqrt(module.in_features)
                init.uniform_(module.bias, -bound, bound)
        elif isinstance(module, MSMNModel):
            # Here rather than on the attention module: transformers skips custom modules that own
            # no parameters themselves. Children are initialised first, so this overrides the default.
            init.xavier_uniform_(module.attention.note_projection.weight)

    def set_word_embeddings(self, vectors: torch.Tensor) -> None:
        """Replaces the word embedding with `vectors` (vocab_size × embedding_dim), e.g. word2vec
        rows in tokenizer order; the PAD row is set to zero."""
        embedding = self.get_input_embeddings()
        if tuple(vectors.shape) != tuple(embedding.weight.shape):
            raise ValueError(
                f"set_word_embeddings: vectors have shape {tuple(vectors.shape)}, the embedding needs "
                f"{tuple(embedding.weight.shape)} (vocab_size × embedding_dim)."
            )
        with torch.no_grad():
            embedding.weight.copy_(vectors)
            embedding.weight[embedding.padding_idx].zero_()


def checked_code_term_ids(code_term_ids, config: MSMNConfig) -> torch.Tensor:
    """`code_term_ids` as a (C·M, term_length) tensor, after checking it against the config."""
    term_ids = torch.as_tensor(code_term_ids, dtype=torch.long)
    expected = (config.num_labels * config.num_synonyms, config.term_length)
    if tuple(term_ids.shape) != expected:
        raise ValueError(
            f"code_term_ids has shape {tuple(term_ids.shape)}, expected (num_labels × num_synonyms, term_length) = "
            f"{expected}, code-major. Build them with modeling_msmn.build_code_term_ids for these codes, this "
            "num_synonyms and this term_length."
        )
    if term_ids.numel() and not (0 <= int(term_ids.min()) and int(term_ids.max()) < config.vocab_size):
        raise ValueError(
            f"code_term_ids hold ids outside the vocabulary [0, {config.vocab_size}): the term ids and the "
            "tokenizer do not belong together."
        )
    return term_ids


class MSMNModel(MSMNPreTrainedModel):
    """Encoder, synonym encoder and multi-synonym attention: per-code note representations.

    `code_term_ids`: the token ids of every code's M terms, (C·M, term_length), code-major (row c·M + j
    is term j of code c; `build_code_term_ids` makes them). A persistent buffer, saved with the weights:
    `from_pretrained` reads them from there, so only a new model is given them.
    """

    def __init__(self, config: MSMNConfig, code_term_ids=None):
        super().__init__(config)
        self.encoder = MSMNTextEncoder(config)
        self.attention = MSMNMultiSynonymAttention(config)
        term_ids = torch.full((config.num_labels * config.num_synonyms, config.term_length), config.pad_token_id)
        if code_term_ids is not None:
            term_ids = checked_code_term_ids(code_term_ids, config)
        self.register_buffer("code_term_ids", term_ids)
        self._code_encoding_cache = None
        self.post_init()

    def get_input_embeddings(self) -> nn.Embedding:
        return self.encoder.word_embeddings

    def set_input_embeddings(self, value: nn.Embedding):
        self.encoder.word_embeddings = value

    def encode_terms(self, term_ids: torch.Tensor | None = None) -> torch.Tensor:
        """Each code term's encoder states, max-pooled over positions: (C·M, d), code-major; or those of
        `term_ids` (e.g. the terms of some codes, or of codes outside the set), pooled as within the set.

        Reference mode pools over padding positions too, up to the length of the longest term (the
        width of the reference's `pad_packed_sequence` output, not all `term_length` positions);
        `mask_synonym_padding` pools over real tokens only.

        Computed in buckets of terms of equal length, each bucket one encoder call without padding
        (padding every term to the longest made most LSTM positions padding), then, in reference
        mode, the max with the padding positions' output (zero, or the output projection's bias)
        for every term shorter than the longest. This equals pooling the padded terms exactly.
        Without dropout (evaluation), each distinct term is encoded once.
        """
        is_term_token = self.code_term_ids != self.config.pad_token_id
        if not is_term_token.any():
            raise ValueError(
                "MSMN has no code terms: every code_term_ids row is padding. Give a new model its term ids, "
                "MSMNForSequenceClassification(config, code_term_ids=build_code_term_ids(tokenizer, codes, ...)[0])."
            )
        longest = int(sequence_lengths(is_term_token).max())  # the whole code set's longest term: the pooling width
        term_ids = self.code_term_ids if term_ids is None else term_ids
        distinct_row = None
        if not self.training:  # no dropout: equal terms get equal vectors
            term_ids, distinct_row = torch.unique(term_ids, dim=0, return_inverse=True)
        lengths = sequence_lengths(term_ids != self.config.pad_token_id)  # (T,) ≥ 1: an empty term reads one PAD
        # What a padding position outputs, (d,): zero from the LSTM, then the output projection's bias
        projection = self.encoder.output_projection
        padding_output = projection.bias if projection is not None else self.code_term_ids.new_zeros(
            self.config.hidden_size, dtype=self.encoder.word_embeddings.weight.dtype)
        pooled_buckets, bucket_rows = [], []
        for length in lengths.unique().tolist():
            rows = (lengths == length).nonzero().squeeze(1)
            term_states = self.encoder(term_ids[rows, :length], lengths[rows])  # (rows, length, d), no padding
            pooled = term_states.max(dim=1).values
            if length < longest and not self.config.mask_synonym_padding:
                # max over (term, padding) like max over positions: the gradient goes to one of them
                pooled = torch.stack([pooled, padding_output.expand_as(pooled)]).max(dim=0).values
            pooled_buckets.append(pooled)
            bucket_rows.append(rows)
        term_vectors = torch.cat(pooled_buckets)[torch.argsort(torch.cat(bucket_rows))]  # back to row order
        return term_vectors if distinct_row is None else term_vectors[distinct_row]

    def encode_codes(
        self, code_indices: torch.Tensor | None = None, extra_code_term_ids: torch.Tensor | None = None
    ) -> MSMNCodeEncoding:
        """Synonym vectors, attention queries and code vectors from the code terms (the paper's encoding of code synonyms), of every
        code or of the codes at `code_indices` (c,); then those of the codes whose term ids are
        `extra_code_term_ids` (e·M, term_length), code-major like `code_term_ids` (codes outside the
        code set, e.g. a training step's negatives drawn from all ICD-10-CM)."""
        num_synonyms = self.config.num_synonyms
        term_ids = None
        if code_indices is not None:  # the M rows of each chosen code
            term_ids = self.code_term_ids.view(self.config.num_labels, num_synonyms, -1)[code_indices].flatten(0, 1)
        if extra_code_term_ids is not None:
            if extra_code_term_ids.dim() != 2 or extra_code_term_ids.shape[0] % num_synonyms or (
                    extra_code_term_ids.shape[1] != self.code_term_ids.shape[1]):
                raise ValueError(
                    f"extra_code_term_ids has shape {tuple(extra_code_term_ids.shape)}: expected (codes × "
                    f"{num_synonyms} terms, {self.code_term_ids.shape[1]} tokens), as build_code_term_ids makes them."
                )
            term_ids = torch.cat([self.code_term_ids if term_ids is None else term_ids, extra_code_term_ids])
        synonym_vectors = self.encode_terms(term_ids).view(-1, num_synonyms, self.config.hidden_size)
        return MSMNCodeEncoding(
            synonym_vectors=synonym_vectors,
            synonym_queries=self.attention.synonym_projection(synonym_vectors),
            code_vectors=synonym_vectors.max(dim=1).values,
        )

    def code_encoding(self) -> MSMNCodeEncoding:
        """`encode_codes()`, cached while the model evaluates without gradients.

        The cache is keyed by the storage and version counter of every weight and buffer, so any
        change of weights (an optimiser step, `load_state_dict`, `.to()`) recomputes it; switching
        back to training drops it.
        """
        if self.training or torch.is_grad_enabled():
            self._code_encoding_cache = None
            return self.encode_codes()
        key = tuple((tensor.data_ptr(), tensor._version) for tensor in (*self.parameters(), *self.buffers()))
        if self._code_encoding_cache is None or self._code_encoding_cache[0] != key:
            self._code_encoding_cache = (key, self.encode_codes())
        return self._code_encoding_cache[1]

    def train(self, mode: bool = True):
        self._code_encoding_cache = None
        return super().train(mode)

    def set_codes(
        self,
        codes: list[str],
        code_term_ids: list[list[int]],
        code_terms: list[list[str]] | None = None,
        code_descriptions: list[str] | None = None,
    ) -> None:
        """Replaces the code set: the model scores any code from its terms (class-independent score)."""
        self.config.id2label = dict(enumerate(codes))
        self.config.label2id = {code: index for index, code in enumerate(codes)}
        self.config.code_terms = code_terms
        self.config.code_descriptions = code_descriptions
        self.config.validate_msmn()
        self.code_term_ids = checked_code_term_ids(code_term_ids, self.config).to(self.code_term_ids.device)
        self._code_encoding_cache = None

    def checked_inputs(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(input_ids, attention_mask) as the encoder reads them, or a clear error: a batch of empty notes
        gets one padding position to attend to, a missing mask is where input_ids is not the PAD id."""
        if input_ids.dim() != 2 or input_ids.shape[0] == 0:
            raise ValueError(f"MSMN expects input_ids of shape (batch ≥ 1, tokens), got {tuple(input_ids.shape)}.")
        if input_ids.shape[1] == 0:  # a batch of empty notes: one padding position to attend to
            input_ids = input_ids.new_full((input_ids.shape[0], 1), self.config.pad_token_id)
            attention_mask = None if attention_mask is None else attention_mask.new_zeros(input_ids.shape)
        if input_ids.min() < 0 or input_ids.max() >= self.config.vocab_size:
            raise ValueError(
                f"input_ids hold ids outside the vocabulary [0, {self.config.vocab_size}): "
                f"min {int(input_ids.min())}, max {int(input_ids.max())}. Use the tokenizer saved with this model."
            )
        if attention_mask is None:
            attention_mask = (input_ids != self.config.pad_token_id).long()
        elif attention_mask.shape != input_ids.shape:
            raise ValueError(
                f"attention_mask has shape {tuple(attention_mask.shape)}, input_ids {tuple(input_ids.shape)}."
            )
        return input_ids, attention_mask

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        code_encoding: MSMNCodeEncoding | None = None,
        code_indices: torch.Tensor | None = None,
        extra_code_term_ids: torch.Tensor | None = None,
    ) -> MSMNModelOutput:
        r"""
        input_ids: (B, N) right-padded token ids of the notes.
        attention_mask: (B, N) 1 on real tokens; by default, where input_ids is not the PAD id.
        code_encoding: a precomputed `encode_codes()` to reuse (e.g. across the two R-Drop passes).
        code_indices: (c,) represent only these codes (e.g. a training step's sampled codes), in this order.
        extra_code_term_ids: (e·M, term_length) then represent e codes outside the code set from these
            term ids (see `encode_codes`).
        """
        input_ids, attention_mask = self.checked_inputs(input_ids, attention_mask)
        if code_encoding is None and code_indices is None and extra_code_term_ids is None:
            code_encoding = self.code_encoding()
        elif code_encoding is None:
            code_encoding = self.encode_codes(code_indices, extra_code_term_ids)
        note_states = self.encoder(input_ids, sequence_lengths(attention_mask))
        code_representations = self.attention(note_states, attention_mask, code_encoding.synonym_queries)
        return MSMNModelOutput(
            note_states=note_states,
            code_representations=code_representations,
            code_vectors=code_encoding.code_vectors,
        )


class MSMNForSequenceClassification(MSMNPreTrainedModel):
    """MSMN with its score: one logit per code, sigmoid probabilities, mean BCE loss (the paper's classification and training)."""

    def __init__(self, config: MSMNConfig, code_term_ids=None):
        super().__init__(config)
        self.msmn = MSMNModel(config, code_term_ids)
        hidden_size = config.hidden_size
        if config.score_function == "reference":
            self.code_weight = nn.Linear(hidden_size, hidden_size)  # w_c = W q_c + b_W
            self.code_bias = nn.Linear(hidden_size, 1)  # s_c = u·q_c + b_u
        elif config.score_function == "biaffine":
            self.code_weight = nn.Linear(hidden_size, hidden_size, bias=False)  # w_c = W q_c
        elif config.score_function == "linear":
            self.per_code_classifier = nn.Linear(hidden_size, config.num_labels)  # row c: w_c, bias b_c
        self.post_init()

    def get_input_embeddings(self) -> nn.Embedding:
        return self.msmn.get_input_embeddings()

    def set_input_embeddings(self, value: nn.Embedding):
        self.msmn.set_input_embeddings(value)

    def set_codes(self, codes, code_term_ids, code_terms=None, code_descriptions=None) -> None:
        """See `MSMNModel.set_codes`; not available with per-code weights (score_function="linear")."""
        if self.config.score_function == "linear":
            raise ValueError(
                "set_codes: score_function='linear' has trained weights per code, so it cannot score new codes."
            )
        self.msmn.set_codes(codes, code_term_ids, code_terms, code_descriptions)

    def score(
        self, code_representations: torch.Tensor, code_vectors: torch.Tensor, code_indices: torch.Tensor | None = None
    ) -> torch.Tensor:
        # code_representations v: (B, C, d); code_vectors q: (C, d) → logits (B, C)
        score_function = self.config.score_function
        if score_function == "reference":
            return torch.einsum("bcd,cd->bc", code_representations, self.code_weight(code_vectors)) + self.code_bias(
                code_vectors
            ).squeeze(-1)
        if score_function == "biaffine":
            return torch.einsum("bcd,cd->bc", code_representations, self.code_weight(code_vectors))
        if score_function == "dot":
            return torch.einsum("bcd,cd->bc", code_representations, code_vectors)
        weight, bias = self.per_code_classifier.weight, self.per_code_classifier.bias
        if code_indices is not None:
            weight, bias = weight[code_indices], bias[code_indices]
        return torch.einsum("bcd,cd->bc", code_representations, weight) + bias

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        code_encoding: MSMNCodeEncoding | None = None,
        code_indices: torch.Tensor | None = None,
        extra_code_term_ids: torch.Tensor | None = None,
    ) -> SequenceClassifierOutput:
        r"""
        labels: (B, C) multi-hot code labels in label order (with `code_indices`: (B, c), in their
            order; with `extra_code_term_ids`, then one column per extra code); gives the mean
            BCE-with-logits loss.
        code_indices: (c,) score only these codes: logits (B, c) equal to those columns of all codes' logits.
        extra_code_term_ids: (e·M, term_length) then score e codes outside the code set from their term ids:
            e more logits per note, as if `set_codes` had added these codes (not with score_function="linear").
        """
        if extra_code_term_ids is not None and self.config.score_function == "linear":
            raise ValueError(
                "extra_code_term_ids: score_function='linear' has trained weights per code, so it cannot score "
                "codes outside its code set."
            )
        outputs = self.msmn(input_ids, attention_mask=attention_mask, code_encoding=code_encoding,
                            code_indices=code_indices, extra_code_term_ids=extra_code_term_ids)
        logits = self.score(outputs.code_representations, outputs.code_vectors, code_indices)
        loss = None
        if labels is not None:
            if labels.shape != logits.shape:
                raise ValueError(
                    f"labels have shape {tuple(labels.shape)}, expected (batch, num_codes) = {tuple(logits.shape)} "
                    "(multi-hot, in the model's label order)."
                )
            loss = F.binary_cross_entropy_with_logits(logits, labels.to(logits.dtype))
        return SequenceClassifierOutput(loss=loss, logits=logits)


__all__ = [
    "MSMNBiLSTM",
    "MSMNCodeEncoding",
    "MSMNForSequenceClassification",
    "MSMNModel",
    "MSMNModelOutput",
    "MSMNMultiSynonymAttention",
    "MSMNPreTrainedModel",
    "MSMNTextEncoder",
]
