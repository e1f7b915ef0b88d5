"""Token texts keep their whitespace, on the two tokenizer families the project builds."""

import codecs

import pytest

from loupe.tokens import decoder_kind, token_texts

from .tiny_models import _tokenizer, sentencepiece_tokenizer

TEXTS = [
    "When Mary and John went to the store, John gave a drink to Mary.",
    "  two spaces,\ta tab and\na newline",
    "café — naïve ☕ unknown: zq",
]


@pytest.fixture(scope="module", params=["byte_level", "metaspace"])
def tokenizer(request):
    return (_tokenizer if request.param == "byte_level" else sentencepiece_tokenizer)()


@pytest.mark.parametrize("text", TEXTS)
def test_joined_token_texts_are_the_decoded_text(tokenizer, text):
    kind = decoder_kind(tokenizer)
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    joined = "".join(token_texts(tokenizer, kind, ids))
    decoded = tokenizer.decode(ids)
    if "\\x" in joined:  # a character split over tokens shows as its bytes, losslessly
        joined = codecs.escape_decode(joined.encode("utf-8"))[0].decode("utf-8")
    # SentencePiece writes the text's start as a space (`▁When`) and its decoder strips that one space
    assert joined == decoded or (kind == "metaspace" and joined == " " + decoded), (joined, decoded)
    assert joined.replace(" ", "") != joined or " " not in text  # spaces survive


def test_each_family_is_recognised_and_marks_spaces_its_own_way():
    bpe, sp = _tokenizer(), sentencepiece_tokenizer()
    assert decoder_kind(bpe) == "byte_level" and decoder_kind(sp) == "metaspace"
    sp_ids = sp("Jack. We can play", add_special_tokens=False)["input_ids"]
    assert any(piece.startswith("▁") for piece in sp.convert_ids_to_tokens(sp_ids))
    texts = token_texts(sp, "metaspace", sp_ids)
    assert "".join(texts) == " Jack. We can play" and not any("▁" in t for t in texts)
    bpe_ids = bpe(" the cat", add_special_tokens=False)["input_ids"]
    assert "".join(token_texts(bpe, "byte_level", bpe_ids)) == " the cat"


def test_bytes_of_a_split_character_show_as_escapes_and_specials_by_name():
    sp = sentencepiece_tokenizer()
    ids = sp("☕", add_special_tokens=True)["input_ids"]  # not in the vocabulary: byte fallback
    texts = token_texts(sp, "metaspace", ids)
    assert texts[0] == "<s>" and "\\xe2" in "".join(texts[1:])
