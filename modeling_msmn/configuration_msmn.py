"""Configuration of MSMN (Yuan, Tan & Huang, "Code Synonyms Do Matter: Multiple Synonyms Matching
Network for Automatic ICD Coding", ACL 2022).

The defaults are the MIMIC-III top-50 setting of the authors' released code ("reference" mode).
Every place where that code differs from the paper's equations is a named switch
(`score_function`, `mask_synonym_padding`).
"""

from transformers import PreTrainedConfig

SCORE_FUNCTIONS = ("reference", "biaffine", "dot", "linear")
# The classes that serve a saved folder, for each Auto class: the one place this is written. The
# config carries it (so a folder re-saved after loading through any one Auto class still names all
# three), and `modeling_msmn/__init__.py` registers the classes from it (which copies their code).
AUTO_MAP = {
    "AutoConfig": "configuration_msmn.MSMNConfig",
    "AutoModel": "modeling_msmn.MSMNModel",
    "AutoModelForSequenceClassification": "modeling_msmn.MSMNForSequenceClassification",
}


class MSMNConfig(PreTrainedConfig):
    r"""
    Args:
        vocab_size: number of rows of the word embedding (the tokenizer's vocabulary size).
        pad_token_id: id of the padding token; its embedding row is zero and never trained.
        embedding_dim: width of the word embedding (100 in the paper, word2vec CBOW).
        rnn_dim: output width R of the BiLSTM, both directions together (R/2 per direction).
        num_lstm_layers: stacked BiLSTM layers.
        hidden_size: width d of the note states and synonym vectors; a Linear(R, d) follows the
            LSTM when `rnn_dim != hidden_size`.
        num_synonyms: M, the number of terms per code and of attention heads; divides `hidden_size`.
        term_length: tokens per code term (longer terms are cut, shorter ones padded).
        max_note_tokens: a note keeps its first `max_note_tokens` tokens.
        embedding_dropout: dropout after the word embedding.
        lstm_dropout: dropout between stacked LSTM layers.
        representation_dropout: dropout on the per-code note representations.
        score_function: "reference" (the released code: vᵀ(Wq + b_w) + uᵀq + b_u), "biaffine"
            (the paper: vᵀWq), "dot" (vᵀq) or "linear" (vᵀw_c + b_c with per-code weights).
        mask_synonym_padding: max-pool code terms over their real tokens only (the reference pools
            over padding positions too).
        attention_memory_budget_mb: when the attention score tensor of a batch (B×M×C×N floats)
            would exceed this many MiB, codes are processed in chunks (each recomputing its attention
            weights in the backward pass rather than storing them).
        code_terms: the M term strings of each code (description first), code-major like the model's
            `code_term_ids` buffer (their token ids, saved with the weights).
        code_descriptions: one description per code, in label order.
        threshold: decision threshold on the sigmoid probability (tuned on dev by training).
        vocabulary_sha256: SHA-256 of the tokenizer's words in id order, saved with the checkpoint: a
            tokenizer.json of another checkpoint is refused (None in checkpoints saved before it).
        training_note_words: words of the training notes — {"p1": 1st percentile, "median": ...}; a
            note with fewer words than the 1st percentile is flagged short (None: not recorded).
    """

    model_type = "msmn"

    vocab_size: int = 2
    pad_token_id: int = 0
    embedding_dim: int = 100
    rnn_dim: int = 512
    num_lstm_layers: int = 1
    hidden_size: int = 512
    num_synonyms: int = 8
    term_length: int = 30
    max_note_tokens: int = 4000
    embedding_dropout: float = 0.2
    lstm_dropout: float = 0.1
    representation_dropout: float = 0.2
    score_function: str = "reference"
    mask_synonym_padding: bool = False
    attention_memory_budget_mb: float = 128.0
    code_terms: list[list[str]] | None = None
    code_descriptions: list[str] | None = None
    threshold: float = 0.5
    vocabulary_sha256: str | None = None
    training_note_words: dict[str, int] | None = None

    def __post_init__(self, **kwargs):
        if self.problem_type is None:
            self.problem_type = "multi_label_classification"
        # Folders of earlier versions also list the term ids here; they live in the weights.
        kwargs.pop("code_term_ids", None)
        super().__post_init__(**kwargs)
        if getattr(self, "auto_map", None) is None:
            self.auto_map = dict(AUTO_MAP)  # every Auto class loads a saved folder with trust_remote_code=True
        if self.label2id is None and self.id2label is not None:
            self.label2id = {label: index for index, label in self.id2label.items()}
        self.validate_msmn()

    def validate_msmn(self):
        """Rejects settings the model cannot run with, naming the field at fault."""
        sizes = ("vocab_size", "embedding_dim", "rnn_dim", "num_lstm_layers", "hidden_size", "num_synonyms",
                 "term_length", "max_note_tokens")
        for name in sizes:
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 1:
                raise ValueError(f"MSMNConfig: {name} ({getattr(self, name)!r}) must be a positive integer.")
        for name in ("embedding_dropout", "lstm_dropout", "representation_dropout", "threshold"):
            if isinstance(getattr(self, name), bool) or not isinstance(getattr(self, name), (int, float)):
                raise ValueError(f"MSMNConfig: {name} ({getattr(self, name)!r}) must be a number.")
        for name in ("embedding_dropout", "lstm_dropout", "representation_dropout"):
            if not 0.0 <= getattr(self, name) < 1.0:
                raise ValueError(f"MSMNConfig: {name} ({getattr(self, name)}) is a probability, in [0, 1).")
        if self.hidden_size % self.num_synonyms != 0:
            raise ValueError(
                f"MSMNConfig: hidden_size ({self.hidden_size}) must be divisible by num_synonyms "
                f"({self.num_synonyms}): each synonym is one attention head of width hidden_size/num_synonyms."
            )
        if self.rnn_dim % 2 != 0:
            raise ValueError(f"MSMNConfig: rnn_dim ({self.rnn_dim}) must be even (rnn_dim/2 per LSTM direction).")
        if self.score_function not in SCORE_FUNCTIONS:
            raise ValueError(
                f"MSMNConfig: unknown score_function {self.score_function!r}; choose one of {SCORE_FUNCTIONS}."
            )
        if self.problem_type != "multi_label_classification":
            raise ValueError(
                f"MSMNConfig: problem_type must be 'multi_label_classification' (ICD coding is multi-label), "
                f"got {self.problem_type!r}."
            )
        if not 0 <= self.pad_token_id < self.vocab_size:
            raise ValueError(
                f"MSMNConfig: pad_token_id ({self.pad_token_id}) must be an id of the vocabulary "
                f"(vocab_size={self.vocab_size})."
            )
        if not 0.0 < self.threshold < 1.0:
            raise ValueError(f"MSMNConfig: threshold ({self.threshold}) is a probability, strictly between 0 and 1.")
        if self.code_terms is not None and [len(terms) for terms in self.code_terms] != [self.num_synonyms] * self.num_labels:
            raise ValueError(
                f"MSMNConfig: code_terms must hold num_synonyms={self.num_synonyms} terms for each of the "
                f"{self.num_labels} codes."
            )
        if self.code_descriptions is not None and len(self.code_descriptions) != self.num_labels:
            raise ValueError(
                f"MSMNConfig: code_descriptions has {len(self.code_descriptions)} entries for {self.num_labels} codes."
            )


__all__ = ["MSMNConfig"]
