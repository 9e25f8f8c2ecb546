"""The converter reproduces the authors' IcdModel (docs/model.md, "Parity with the authors' code") logit for logit."""

import re

import pytest
import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence
from transformers import AutoModelForSequenceClassification, AutoTokenizer

from modeling_msmn.convert_authors_checkpoint import AUTHORS_SPECIAL_TOKENS, convert_authors_state_dict, main

WORDS = ["patient", "acute", "myocardial", "infarction", "fever", "cough", "pneumonia", "diabetes", "the", "with"]
CODES = ["250.00", "410.71", "486", "780.60"]
NOTES = ["The patient with acute myocardial infarction 12 and fever", "Cough, pneumonia!", "diabetes"]


class Layers(nn.Module):
    def __init__(self, in_features, out_features):
        super().__init__()
        self.layers = nn.ModuleList([nn.Linear(in_features, out_features)])


class AuthorsIcdModel(nn.Module):
    """Their MultiLabelMultiHeadLAATV2 IcdModel, written out from their code, with their names."""

    def __init__(self, vocab_size, rnn_dim, num_layers, hidden_size, num_heads, num_codes):
        super().__init__()
        self.num_heads = num_heads
        self.encoder = nn.Module()
        self.encoder.word_encoder = nn.Module()
        self.encoder.word_encoder.word_embedding = nn.Embedding(vocab_size, 6, padding_idx=vocab_size - 2)
        self.encoder.combiner = nn.Module()
        self.encoder.combiner.combine_lstm = nn.LSTM(6, rnn_dim // 2, num_layers, bidirectional=True, batch_first=True)
        if rnn_dim != hidden_size:
            self.encoder.combiner.reduce_linear = nn.Linear(rnn_dim, hidden_size)
        self.decoder = nn.Module()
        self.decoder.W = nn.Linear(hidden_size, hidden_size)
        self.decoder.u_reduce = nn.Linear(hidden_size, hidden_size // num_heads)
        self.decoder.w_linear = Layers(hidden_size, hidden_size)
        self.decoder.b_linear = Layers(hidden_size, 1)
        self.decoder.final = nn.Linear(hidden_size, num_codes)  # unused
        self.decoder.U = nn.Linear(hidden_size, 7)  # unused
        with torch.no_grad():
            for parameter in self.parameters():
                parameter.normal_(0, 0.5)

    def encode(self, word_ids, word_mask):
        embeds = self.encoder.word_encoder.word_embedding(word_ids)
        lengths = word_mask.sum(1).clamp(min=1)
        packed = pack_padded_sequence(embeds, lengths, batch_first=True, enforce_sorted=False)
        hidden, _ = pad_packed_sequence(self.encoder.combiner.combine_lstm(packed)[0], batch_first=True)
        if hasattr(self.encoder.combiner, "reduce_linear"):
            hidden = self.encoder.combiner.reduce_linear(hidden)
        return hidden

    def forward(self, word_ids, word_mask, c_input_word, c_word_mask):
        label_feat = self.encode(c_input_word, c_word_mask).max(dim=1)[0]  # over all 30 positions
        h = self.encode(word_ids, word_mask)
        word_mask = word_mask[:, : h.shape[1]]
        z = torch.tanh(self.decoder.W(h))
        batch_size, seq_length, att_dim = z.shape
        z_reshape = z.reshape(batch_size, seq_length, self.num_heads, att_dim // self.num_heads)
        label_count = label_feat.shape[0] // self.num_heads
        u_reshape = self.decoder.u_reduce(label_feat.reshape(label_count, self.num_heads, att_dim))
        score = torch.einsum("abcd,ecd->aebc", z_reshape, u_reshape)
        score = score.masked_fill(~word_mask.bool().unsqueeze(1).unsqueeze(-1).expand_as(score), -1e6)
        alpha = torch.softmax(score, dim=2)
        m = torch.einsum("abd,aebc->aedc", h, alpha).max(-1)[0]
        q = label_feat.reshape(label_count, self.num_heads, -1).max(1)[0]
        w = self.decoder.w_linear.layers[0](q)
        b = self.decoder.b_linear.layers[0](q)
        return torch.einsum("blh,lh->bl", m, w) + b.squeeze(-1)


def authors_ids(text, vocab, length=None):
    """Their tokenisation: \\w+, numeric dropped, lower-cased, OOV → **UNK**, padded with **PAD**."""
    index = {word: i for i, word in enumerate(vocab)}
    ids = [index.get(w.lower(), index["**UNK**"]) for w in re.findall(r"\w+", text) if not w.isnumeric()]
    length = length or len(ids)
    return ids[:length] + [index["**PAD**"]] * (length - len(ids[:length]))


def authors_batch(texts, vocab, length=None):
    length = length or max(len(authors_ids(t, vocab)) for t in texts)
    ids = torch.tensor([authors_ids(t, vocab, length) for t in texts])
    return ids, (ids != vocab.index("**PAD**")).long()


def build(rnn_dim, num_layers, hidden_size, num_heads, seed=0):
    torch.manual_seed(seed)
    vocab = WORDS + list(AUTHORS_SPECIAL_TOKENS)
    authors = AuthorsIcdModel(len(vocab), rnn_dim, num_layers, hidden_size, num_heads, len(CODES)).double().eval()
    terms = [["acute myocardial infarction", "fever"], ["pneumonia", "cough cough"], ["diabetes", "zzz"], ["", "fever"]]
    term_texts = [terms[c][j % 2] for c in range(len(CODES)) for j in range(num_heads)]
    term_ids, term_mask = authors_batch(term_texts, vocab, length=30)
    return authors, vocab, term_ids, term_mask


@pytest.mark.parametrize(
    "rnn_dim,num_layers,hidden_size,num_heads", [(16, 1, 16, 8), (8, 2, 16, 4)], ids=["top50-shape", "full-shape"]
)
def test_converted_logits_equal_authors_model(rnn_dim, num_layers, hidden_size, num_heads, tmp_path):
    authors, vocab, term_ids, term_mask = build(rnn_dim, num_layers, hidden_size, num_heads)
    note_ids, note_mask = authors_batch(NOTES, vocab)
    with torch.no_grad():
        expected = authors(note_ids, note_mask, term_ids, term_mask)

    model = convert_authors_state_dict(authors.state_dict(), WORDS, CODES, term_ids).double()
    assert model.config.num_lstm_layers == num_layers and model.config.num_synonyms == num_heads
    assert model.config.id2label == dict(enumerate(CODES)) and model.config.pad_token_id == len(WORDS) + 1
    with torch.no_grad():
        torch.testing.assert_close(model(input_ids=note_ids, attention_mask=note_mask).logits, expected, rtol=1e-12, atol=1e-12)

    # Through the command line: a plain state dict, the written folder and its tokenizer.
    torch.save(authors.float().state_dict(), tmp_path / "best_epoch.pt")
    torch.save(term_ids, tmp_path / "c_input_word.pt")
    (tmp_path / "words.txt").write_text("\n".join(WORDS) + "\n")
    (tmp_path / "codes.txt").write_text("\n".join(CODES) + "\n")
    main(["--checkpoint", str(tmp_path / "best_epoch.pt"), "--words", str(tmp_path / "words.txt"),
          "--codes", str(tmp_path / "codes.txt"), "--term-ids", str(tmp_path / "c_input_word.pt"),
          "--output", str(tmp_path / "converted")])
    tokenizer = AutoTokenizer.from_pretrained(tmp_path / "converted", trust_remote_code=True)
    loaded = AutoModelForSequenceClassification.from_pretrained(tmp_path / "converted", trust_remote_code=True)
    inputs = tokenizer(NOTES, padding=True, return_tensors="pt")
    assert torch.equal(inputs["input_ids"], note_ids)
    with torch.no_grad():
        torch.testing.assert_close(loaded(**inputs).logits.double(), expected, rtol=1e-4, atol=1e-4)


def test_pickled_model_needs_trust(tmp_path):
    authors, vocab, term_ids, _ = build(16, 1, 16, 8)
    authors.c_input_word = term_ids
    torch.save(authors, tmp_path / "epoch3.pth")
    (tmp_path / "words.txt").write_text("\n".join(WORDS))
    (tmp_path / "codes.txt").write_text("\n".join(CODES))
    arguments = ["--checkpoint", str(tmp_path / "epoch3.pth"), "--words", str(tmp_path / "words.txt"),
                 "--codes", str(tmp_path / "codes.txt"), "--output", str(tmp_path / "out")]
    with pytest.raises(SystemExit, match="--trust-pickle"):
        main(arguments)
    assert not (tmp_path / "out").exists()
    main(arguments + ["--trust-pickle"])  # term ids come from the pickled model's c_input_word
    loaded = AutoModelForSequenceClassification.from_pretrained(tmp_path / "out")
    assert torch.equal(loaded.msmn.code_term_ids, term_ids)


def test_bad_state_dicts():
    authors, vocab, term_ids, _ = build(8, 2, 16, 4)
    state_dict = authors.state_dict()
    with pytest.raises(ValueError, match="embedding has 13 rows"):
        convert_authors_state_dict(state_dict, WORDS[:-1], CODES, term_ids)
    missing = {k: v for k, v in state_dict.items() if k != "decoder.b_linear.layers.0.bias"}
    with pytest.raises(ValueError, match="missing.*b_linear"):
        convert_authors_state_dict(missing, WORDS, CODES, term_ids)
    misshaped = {**state_dict, "decoder.w_linear.layers.0.weight": torch.zeros(16, 8)}
    with pytest.raises(ValueError, match="w_linear.layers.0.weight has shape"):
        convert_authors_state_dict(misshaped, WORDS, CODES, term_ids)
    with pytest.raises(ValueError, match="term ids have shape"):
        convert_authors_state_dict(state_dict, WORDS, CODES[:3], term_ids)
    with pytest.raises(ValueError, match="no 'decoder.W.weight'"):
        convert_authors_state_dict({k: v for k, v in state_dict.items() if not k.startswith("decoder.W.")}, WORDS, CODES, term_ids)


def test_missing_or_damaged_files_are_named_not_taken_for_pickles(tmp_path):
    torch.save({"weight": torch.zeros(3)}, tmp_path / "state.pt")
    whole = (tmp_path / "state.pt").read_bytes()
    (tmp_path / "truncated.pt").write_bytes(whole[: len(whole) // 2])
    (tmp_path / "empty.pt").write_bytes(b"")
    (tmp_path / "words.txt").write_text("\n".join(WORDS))
    lists = ["--words", str(tmp_path / "words.txt"), "--codes", str(tmp_path / "words.txt"), "--output", str(tmp_path / "out")]
    for name, message in [("missing.pt", "missing.pt: no such file"),
                          ("truncated.pt", "truncated.pt: damaged, truncated or not a torch file"),
                          ("empty.pt", "empty.pt: damaged, truncated or not a torch file (0 bytes")]:
        for trust in [[], ["--trust-pickle"]]:
            with pytest.raises(SystemExit, match=re.escape(message)) as error:
                main(["--checkpoint", str(tmp_path / name), *lists, *trust])
            assert "pickled model" not in str(error.value)
    with pytest.raises(SystemExit, match="codes.txt: no such file"):
        main(["--checkpoint", str(tmp_path / "state.pt"), *lists[:2], "--codes", str(tmp_path / "codes.txt"), *lists[4:]])
    assert not (tmp_path / "out").exists()
