"""Token ids as the text they stand for, whitespace kept: what every view shows as a token.

A tokenizer's pieces mark whitespace in their own way: byte-level BPE (GPT-2, Llama 3, Qwen) maps
bytes to printable characters (`Ġ` a space, `Ċ` a newline); SentencePiece-style tokenizers write a
space as `▁` and unknown bytes as `<0xNN>`. Decoding one token alone loses that (SentencePiece
strips the leading space), so the prompt would read "Jack.Wecanplay". Here each piece is turned
back into its own text by the tokenizer's decoder kind, read once from the fast tokenizer.
"""

import json
import re
from collections.abc import Callable
from functools import lru_cache
from typing import Any

from .errors import TooLong

_BYTE_PIECE = re.compile(r"<0x([0-9A-Fa-f]{2})>")
MAX_BACKTRACK = 256  # characters a cut moves back to reach a token boundary (longer than any token)


@lru_cache(maxsize=1)
def _byte_decoder() -> dict[str, int]:
    from transformers.convert_slow_tokenizer import bytes_to_unicode

    return {char: byte for byte, char in bytes_to_unicode().items()}


def decoder_kind(tokenizer: Any) -> str:
    """`byte_level`, `metaspace` (SentencePiece's ▁) or `other` (e.g. WordPiece), from the fast
    tokenizer's decoder (a Sequence is searched)."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is None:
        return "other"
    found: set[str] = set()

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            kind = node.get("type")
            if kind == "ByteLevel":
                found.add("byte_level")
            elif kind == "Metaspace" or (kind == "Replace" and node.get("pattern", {}).get("String") == "▁"):
                found.add("metaspace")
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(json.loads(backend.to_str()).get("decoder"))
    return "byte_level" if "byte_level" in found else "metaspace" if "metaspace" in found else "other"


def _bytes_text(raw: bytes) -> str:
    """UTF-8 text, with the bytes of a partial character shown as \\xNN rather than a lossy U+FFFD."""
    return raw.decode("utf-8", errors="backslashreplace")


def token_texts(tokenizer: Any, kind: str, ids: list[int]) -> list[str]:
    """The text of each token id, whitespace kept (see the module doc); special tokens as named."""
    special = set(tokenizer.all_special_ids)
    pieces = tokenizer.convert_ids_to_tokens(ids)
    decoder = _byte_decoder()
    out = []
    for token_id, piece in zip(ids, pieces):
        if piece is None or token_id in special:
            out.append(piece if piece is not None else tokenizer.decode([token_id]))
        elif kind == "byte_level" and all(char in decoder for char in piece):
            out.append(_bytes_text(bytes(decoder[char] for char in piece)))
        elif kind == "metaspace":
            byte = _BYTE_PIECE.fullmatch(piece)
            out.append(_bytes_text(bytes([int(byte.group(1), 16)])) if byte else piece.replace("▁", " "))
        else:
            out.append(tokenizer.decode([token_id]))
    return out


def first_tokens(text: str, ids_of: Callable[[str], list[int]], special: set[int], limit: int) -> tuple[str, list[int]]:
    """The longest prefix of `text` with at most `limit` tokens that are exactly the first tokens of
    the whole text (`ids_of` as the model tokenizes, BOS or [CLS] ... [SEP] included), and those ids.

    A cut inside a word can tokenize differently from the same characters in the whole text (" hel"
    alone is not the start of " hello"), so the cut is found by bisection on characters, then moved
    back until the prefix's ids (trailing special tokens aside) begin the whole text's."""
    whole = ids_of(text)
    if len(whole) <= limit:
        return text, whole
    low, high = 0, len(text)  # ids_of(text[:low]) fits; text[:high] does not
    while high - low > 1:
        mid = (low + high) // 2
        low, high = (mid, high) if len(ids_of(text[:mid])) <= limit else (low, mid)
    for end in range(low, max(low - MAX_BACKTRACK, 0), -1):
        ids = ids_of(text[:end])
        body = list(ids)
        while body and body[-1] in special and len(body) > 1:
            body.pop()  # an encoder's [SEP] closes the prefix, not the whole text
        if len(ids) <= limit and whole[: len(body)] == body:
            return text[:end], ids
    raise TooLong(f"No prefix of the text tokenizes as its first {limit} tokens.")
