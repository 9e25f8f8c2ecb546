"""The tokenizer equals a pure-Python reading of the rules of docs/model.md, "Tokenizer", with offsets into the original text."""

import re
import sys

import pytest
from transformers import AutoTokenizer

from modeling_msmn import build_tokenizer, build_vocabulary, split_words
from modeling_msmn.tokenization_msmn import build_code_term_ids, select_code_terms


def spec_tokens(text):
    """The tokenizer rules as the authors' code applies them: `\\w+` matches, numeric-only dropped, lower-cased."""
    return [
        (match.group().lower(), match.span())
        for match in re.finditer(r"\w+", text)
        if not match.group().isnumeric()
    ]


TEXTS = [
    "",
    "   \n\t ",
    "Hello, World!",
    "Admission Date:  [**2151-7-16**]       Discharge Date:  [**2151-8-4**]",
    "[**First Name3 (LF) 1283**] was seen by Dr. [**Last Name (STitle) 2222**].",
    "BP 120/80, HR 72, T 98.6F, 2mg q4h, 10-15mg, x2, 3rd day, 1st",
    "café CAFÉ cafe\u0301 naïve Straße ÆSIR ﬁnal",
    "İstanbul IŞIK ΟΔΟΣ ΣΑΣ. ΑΣ1 ΟΣ'Α Σ",
    "x² ½ Ⅻ ١٢٣ ١٢٣abc ２０２０ ＡＢＣ 三 十二",
    "中文病历 テスト 한국어 עברית العربية",
    "snake_case __init__ _ 12_34",
    "emoji 🙂 tab\there line\nbreak\r\nwindows\u00a0nbsp\u2009thin",
    "a\u0307b U\u0307 \u0307x",
    "Ωmega ωmega ǅ ǆ Ǆ",
]


@pytest.fixture(scope="module")
def open_tokenizer():
    """A tokenizer whose vocabulary holds every word of TEXTS, so ids map back to words."""
    words = sorted({word for text in TEXTS for word, _ in spec_tokens(text)})
    return build_tokenizer(["[PAD]", "[UNK]", *words])


@pytest.mark.parametrize("text", TEXTS)
def test_tokens_and_offsets_equal_spec(open_tokenizer, text):
    expected = spec_tokens(text)
    encoding = open_tokenizer(text, return_offsets_mapping=True)
    words = open_tokenizer.convert_ids_to_tokens(encoding["input_ids"])
    assert words == [word for word, _ in expected]
    assert encoding["offset_mapping"] == [span for _, span in expected]
    for (word, (start, end)) in expected:
        assert text[start:end].lower() == word
    assert split_words(text) == [word for word, _ in expected]


def test_every_code_point_matches_spec():
    """Each character inside a word, ending a word and standing alone, for all of Unicode."""
    characters = [chr(i) for i in range(sys.maxunicode + 1) if not 0xD800 <= i <= 0xDFFF]
    for start in range(0, len(characters), 50_000):
        text = " ".join(f"a{c}b x{c} {c}" for c in characters[start : start + 50_000])
        assert split_words(text) == [word for word, _ in spec_tokens(text)]


def test_unknown_words_truncation_and_padding():
    tokenizer = build_tokenizer(build_vocabulary(["the cough"]), model_max_length=3)
    assert tokenizer.convert_ids_to_tokens(tokenizer("The fever cough 12")["input_ids"]) == ["the", "[UNK]", "cough"]
    batch = tokenizer(["cough " * 10, "the"], truncation=True, padding=True)
    assert batch["input_ids"] == [[3, 3, 3], [2, 0, 0]]  # keeps the FIRST tokens; pads right with [PAD] = 0
    assert batch["attention_mask"] == [[1, 1, 1], [1, 0, 0]]
    assert "token_type_ids" not in batch


def test_vocabulary_order_and_min_count():
    vocab = build_vocabulary(["b a b c b a", "d"], min_count=2, extra_words=["z", "a"])
    assert vocab == ["[PAD]", "[UNK]", "b", "a", "z"]


def test_vocabulary_keeps_words_of_one_note_out():
    """A word repeated inside one note only (a name, an id) stays out at min_texts=2; a code-term word
    enters regardless."""
    notes = ["smith smith cough", "cough fever", "fever 12ab"]
    vocab = build_vocabulary(notes, min_texts=2, extra_words=["anaemia"])
    assert vocab == ["[PAD]", "[UNK]", "cough", "fever", "anaemia"]
    assert "smith" in build_vocabulary(notes) and "12ab" in build_vocabulary(notes)


def test_bad_vocabulary():
    with pytest.raises(ValueError, match="pad_token"):
        build_tokenizer(["[UNK]", "a"])
    with pytest.raises(ValueError, match="repeats"):
        build_tokenizer(["[PAD]", "[UNK]", "a", "a"])


def test_code_terms_cyclic_fill_and_seed():
    assert select_code_terms(["desc", "s1"], 4) == ["desc", "s1", "desc", "s1"]
    assert select_code_terms(["desc"], 3) == ["desc", "desc", "desc"]
    assert select_code_terms(["desc", "s1", "s2", "s3", "s4"], 3) == ["desc", "s1", "s2"]
    many = ["desc"] + [f"s{i}" for i in range(20)]
    seeded = select_code_terms(many, 4, seed=7)
    assert seeded == select_code_terms(many, 4, seed=7)
    assert seeded[0] == "desc" and set(seeded[1:]) <= set(many[1:]) and len(set(seeded)) == 4
    assert any(select_code_terms(many, 4, seed=s) != seeded for s in range(8, 12))


def test_code_term_ids_are_code_major(tokenizer):
    ids, terms = build_code_term_ids(
        tokenizer, ["J18.9", "R50.9"], {"J18.9": ["Pneumonia", "pneumonia NOS"], "R50.9": ["Fever"]}, 2, term_length=3
    )
    pneumonia, nos, fever = (tokenizer.convert_tokens_to_ids(w) for w in ("pneumonia", "nos", "fever"))
    assert ids == [[pneumonia, 0, 0], [pneumonia, nos, 0], [fever, 0, 0], [fever, 0, 0]]
    assert terms == [["Pneumonia", "pneumonia NOS"], ["Fever", "Fever"]]
    with pytest.raises(KeyError, match="no terms"):
        build_code_term_ids(tokenizer, ["J18.9", "X99"], {"J18.9": ["Pneumonia"]}, 2)


@pytest.mark.parametrize("pad, unk", [("[PAD]", "[UNK]"), ("**PAD**", "**UNK**")])
def test_a_note_that_spells_a_special_token_reads_the_word(tmp_path, pad, unk):
    # "[PAD]" in a note is the word "pad" (the authors' code and split_words read it so), never padding
    tokenizer = build_tokenizer([pad, unk, "pad", "unk", "fever"], unk_token=unk, pad_token=pad)
    text = f"fever {pad} {unk} {pad.lower()} PAD"
    tokenizer.save_pretrained(tmp_path)
    for loaded in (tokenizer, AutoTokenizer.from_pretrained(tmp_path)):
        encoding = loaded(text, return_offsets_mapping=True)
        assert loaded.convert_ids_to_tokens(encoding["input_ids"]) == split_words(text) == [
            "fever", "pad", "unk", "pad", "pad"]
        assert loaded.pad_token_id == 0 and loaded(["fever", "fever fever"], padding=True)["input_ids"][0] == [4, 0]
