"""Rewriting a JSON request body for passthrough with the fewest bytes touched.

The passthrough fast path forwards the client's body as it came, so fields
the gateway does not know (and ``cache_control``, thinking signatures...)
arrive byte for byte.  Only the model name changes; when the original model
string occurs exactly once as the value of a ``"model"`` key, the new name is
spliced in; otherwise the parsed body is re-encoded.

A splice must hit the *top-level* key, and the byte search cannot tell a
nested ``"model"`` key from it when the top-level key or value is written
with escapes (``"mod\\u0065l"``): the spliced body is checked by decoding
only its top-level model (a skip-parse, about as cheap as the byte search).
"""

from __future__ import annotations

from typing import Any

import msgspec

_encode = msgspec.json.Encoder().encode

# Found with bytes.find: a regex with a look-behind tried every position and
# cost milliseconds on a long conversation.
_MODEL_KEY = b'"model"'
_BACKSLASH = 0x5C


class _TopModel(msgspec.Struct):
    model: Any = None


_top_model = msgspec.json.Decoder(_TopModel)


def rewrite(body: bytes, parsed: dict[str, Any], changes: dict[str, Any]) -> bytes:
    """``body`` with top-level ``changes`` applied (``parsed`` is its decode).

    Keys whose value is unchanged cost nothing; a model change alone is a
    splice; anything else re-encodes.
    """
    changes = {k: v for k, v in changes.items() if parsed.get(k) != v}
    if not changes:
        return body
    if (
        changes.keys() == {"model"}
        and isinstance(parsed.get("model"), str)
        and isinstance(changes["model"], str)
    ):
        spliced = _splice_model(body, parsed["model"], changes["model"])
        if spliced is not None:
            return spliced
    return _encode({**parsed, **changes})


def _model_pairs(body: bytes) -> list[tuple[int, int]]:
    """(start of the key, start of the string value) of every ``"model": "``."""
    pairs = []
    start = body.find(_MODEL_KEY)
    while start >= 0:
        # a quote after a backslash is an escaped quote inside some string
        if start == 0 or body[start - 1] != _BACKSLASH:
            i = start + len(_MODEL_KEY)
            while i < len(body) and body[i] in b" \t\r\n":
                i += 1
            if i < len(body) and body[i] == 0x3A:  # ":"
                i += 1
                while i < len(body) and body[i] in b" \t\r\n":
                    i += 1
                if i < len(body) and body[i] == 0x22:  # '"': a string value
                    pairs.append((start, i))
        start = body.find(_MODEL_KEY, start + 1)
    return pairs


def _splice_model(body: bytes, old: str, new: str) -> bytes | None:
    quoted = _encode(old)
    pairs = _model_pairs(body)
    hits = [(key, value) for key, value in pairs if body.startswith(quoted, value)]
    if len(hits) != 1:
        return None
    key, value = hits[0]
    out = b"".join((body[:key], b'"model":', _encode(new), body[value + len(quoted) :]))
    try:
        top = _top_model.decode(out).model
    except msgspec.DecodeError:
        return None
    return out if top == new else None
