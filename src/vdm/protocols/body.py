"""Rewriting a JSON request body for passthrough with the fewest bytes touched.

The passthrough fast path forwards the client's body as it came, so fields
the gateway does not know (and ``cache_control``, thinking signatures...)
arrive byte for byte.  Only the model name changes; when the original model
string occurs exactly once as the value of a ``"model"`` key, the new name is
spliced in; otherwise the parsed body is re-encoded.
"""

from __future__ import annotations

import re
from typing import Any

import msgspec

_encode = msgspec.json.Encoder().encode


def _model_pattern(model: str) -> re.Pattern[bytes]:
    quoted = msgspec.json.encode(model)
    return re.compile(rb'(?<!\\)"model"\s*:\s*' + re.escape(quoted))


def rewrite(body: bytes, parsed: dict[str, Any], changes: dict[str, Any]) -> bytes:
    """``body`` with top-level ``changes`` applied (``parsed`` is its decode).

    Keys whose value is unchanged cost nothing; a model change alone is a
    splice; anything else re-encodes.
    """
    changes = {k: v for k, v in changes.items() if parsed.get(k) != v}
    if not changes:
        return body
    if changes.keys() == {"model"} and isinstance(parsed.get("model"), str):
        matches = list(_model_pattern(parsed["model"]).finditer(body))
        if len(matches) == 1:
            m = matches[0]
            return b"".join(
                (body[: m.start()], b'"model":', _encode(changes["model"]), body[m.end() :])
            )
    return _encode({**parsed, **changes})
