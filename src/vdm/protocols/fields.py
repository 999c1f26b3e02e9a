"""Validation shared by every client protocol's decoder: one JSON object in,
and one wording for a field of the wrong type (``messages.0.content:
expected string or array, got integer``).

JSON nesting is bounded by the decoder itself: msgspec stops with a
``RecursionError`` where the interpreter's recursion limit would be passed
(about 900 levels of arrays and objects here), which is a 400
(:func:`too_deep`), never a 500.  Any later ``RecursionError`` while a request
is served (a document just under that depth re-encoded deeper in the stack)
is the same 400 at each door's boundary.  Checking a lower depth explicitly
would mean walking every decoded body, as costly as decoding it.
"""

from __future__ import annotations

from typing import Any

import msgspec

from vdm.errors import InvalidRequest

_decoder = msgspec.json.Decoder()
_TYPE_NAMES = {
    bool: "boolean",
    int: "integer",
    float: "number",
    str: "string",
    list: "array",
    dict: "object",
}


def decode_json_object(body: bytes) -> dict[str, Any]:
    """Parse a request body that must be one JSON object."""
    if not body:
        raise InvalidRequest("request body is empty; expected a JSON object")
    try:
        value = _decoder.decode(body)
    except (msgspec.DecodeError, UnicodeDecodeError) as exc:
        raise InvalidRequest(f"request body is not valid JSON: {exc}") from exc
    except RecursionError:
        raise too_deep("request body") from None
    if not isinstance(value, dict):
        raise InvalidRequest("request body must be a JSON object")
    return value


def too_deep(where: str) -> InvalidRequest:
    """The error for JSON (or a request built from it) nested too deeply to handle."""
    return InvalidRequest(f"{where}: arrays and objects are nested too deeply")


def type_name(value: Any) -> str:
    """A JSON value's type as JSON names it."""
    if value is None:
        return "null"
    return _TYPE_NAMES.get(type(value), type(value).__name__)


def fail(path: str, expected: str, value: Any) -> InvalidRequest:
    return InvalidRequest(f"{path}: expected {expected}, got {type_name(value)}")


def require_model(body: dict[str, Any]) -> str:
    """The request's ``model``: required, a non-empty string (every door)."""
    model = body.get("model")
    if model is None:
        raise InvalidRequest("model: field required")
    if not isinstance(model, str) or not model:
        raise fail("model", "non-empty string", model)
    return model
