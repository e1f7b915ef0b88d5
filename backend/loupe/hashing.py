"""content_key(): the sha256 of canonical JSON, used as cache key and permalink id."""

import hashlib
import json
from typing import Any

from .errors import InvalidInput


def canonical_json(value: Any) -> str:
    """JSON with sorted keys and no whitespace: equal values give equal strings."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def content_key(value: Any) -> str:
    """Hex sha256 of `value`'s canonical JSON; the same request always gives the same key."""
    return hashlib.sha256(canonical_json(value).encode("utf-8")).hexdigest()


def check_encodable(value: Any, what: str = "The request") -> Any:
    """`value` unchanged if its JSON is valid UTF-8; InvalidInput naming the first lone surrogate
    (JSON's "\\ud800" decodes to one, and no storage, hash or tokenizer can take it) otherwise."""
    try:
        canonical_json(value).encode("utf-8")
    except UnicodeEncodeError as exc:
        bad = exc.object[exc.start : exc.end].encode("unicode_escape").decode()
        raise InvalidInput(f"{what} holds a lone UTF-16 surrogate ({bad}), which is not text; send valid Unicode.") from None
    except (ValueError, RecursionError) as exc:
        raise InvalidInput(f"{what} cannot be stored as JSON: {type(exc).__name__}.") from None
    return value
