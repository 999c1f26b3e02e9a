"""Renaming the model in passthrough bodies, both ways, with the fewest bytes touched.

The passthrough fast path forwards the client's body as it came, so fields
the gateway does not know (and ``cache_control``, thinking signatures...)
arrive byte for byte.  Only the model name changes; when the original model
string occurs exactly once as the value of a ``"model"`` key, the new name is
spliced in; otherwise the parsed body is re-encoded.

A splice must hit the *top-level* key, and the byte search cannot tell a
nested ``"model"`` key from it when the top-level key or value is written
with escapes (``"mod\\u0065l"``): the spliced body is checked by decoding
only its top-level model (a skip-parse, about as cheap as the byte search).

The answer goes the other way: it names the model the *client* asked for,
not the upstream's (Claude Code drops its thinking blocks from the history
when the answer's model differs from the one it asked for; converted answers
name the client's model too).  A whole answer gets the same splice
(:func:`rename_answer`); a stream is renamed as it passes, by
:class:`StreamRenamer`: in the first event only (Anthropic's
``message_start``), or in every chunk (OpenAI chat chunks and the Responses
``response.*`` events each carry ``model``) by one ``bytes.replace`` of the
exact ``"model":"<upstream>"`` token, learnt from the first chunk that has it.
A ``"model": "`` token with both quotes unescaped can only be a key and its
string value, never text inside a string (where every quote is escaped).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import msgspec

_encode = msgspec.json.Encoder().encode

# Found with bytes.find: a regex with a look-behind tried every position and
# cost milliseconds on a long conversation.
_MODEL_KEY = b'"model"'
_COMPACT_KEY = b'"model":'
_UNICODE_ESCAPE = b"\\u"
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


def rename_answer(body: bytes, new: str, old: Any = None) -> bytes:
    """A JSON answer naming ``new`` as its top-level ``model`` where it named
    ``old`` (read from ``body`` when not given): a splice, or a re-encode when
    the splice is unsafe.  An answer with no model string is left as it is."""
    if old is None:
        try:
            old = _top_model.decode(body).model
        except (msgspec.DecodeError, msgspec.ValidationError):
            return body
    if not isinstance(old, str) or old == new:
        return body
    spliced = _splice_model(body, old, new)
    if spliced is not None:
        return spliced
    return _encode({**msgspec.json.decode(body), "model": new})


class StreamRenamer:
    """Names ``model`` in an SSE stream's frames (fed whole frames, in order).

    ``every=False``: the first ``"model"`` of the first frames only (the first
    event's), then :attr:`done`.  ``every=True``: the first frames that name a
    model teach the exact token they name it with; from then on every frames
    is one ``replace`` of that token (none when it already names the client's
    model: :attr:`done`).  An empty name (Azure's first chunk) is renamed but
    not learnt.
    """

    __slots__ = ("_every", "_new", "_token", "done")

    def __init__(self, model: str, *, every: bool) -> None:
        self._new = b'"model":' + _encode(model)
        self._every = every
        self._token: bytes | None = None
        self.done = False  # nothing more to rename: the caller may stop calling

    def __call__(self, frames: bytes) -> bytes:
        token = self._token
        if token is not None:
            return frames.replace(token, self._new)
        return self._learn(frames)

    def _learn(self, frames: bytes) -> bytes:
        """Rename up to the first non-empty name (``every``: learn its token and
        replace the rest at once); the first event's name only, otherwise."""
        new = self._new
        out: list[bytes] = []
        done = 0  # frames[:done] is in out
        for key, value, end in _model_tokens(frames):
            out += (frames[done:key], new)
            done = end
            if not self._every:
                break
            if end - value > 2:  # (an empty name, '""', is not learnt)
                token = self._token = frames[key:end]
                self.done = token == new
                out.append(frames[end:].replace(token, new))
                return b"".join(out)
        if not self._every:
            self.done = True
        if not out:
            return frames
        out.append(frames[done:])
        return b"".join(out)


def _model_tokens(body: bytes) -> Iterator[tuple[int, int, int]]:
    """Where each ``"model": "<string>"`` token is: (start of the key, start of
    the value, end of the value)."""
    for key, value in _model_pairs(body):
        end = _string_end(body, value)
        if end > 0:
            yield key, value, end


def _string_end(body: bytes, start: int) -> int:
    """The index after the closing quote of the JSON string opening at ``start`` (-1: none)."""
    i = start + 1
    while True:
        quote = body.find(b'"', i)
        if quote < 0:
            return -1
        slashes = 0
        while body[quote - 1 - slashes] == _BACKSLASH:
            slashes += 1
        if slashes % 2 == 0:
            return quote + 1
        i = quote + 1


def _model_pairs(body: bytes) -> Iterator[tuple[int, int]]:
    """(start of the key, start of the string value) of every ``"model": "``."""
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
                    yield start, i
        start = body.find(_MODEL_KEY, start + 1)


def _splice_model(body: bytes, old: str, new: str) -> bytes | None:
    """``body`` naming ``new`` where its top-level ``model`` (read by the caller)
    names ``old``; None when no splice is safe."""
    quoted = _encode(old)
    # The usual body: one "model" token in all its bytes, written compactly, and
    # no \u escape anywhere (none can spell the key or the name another way).
    # Then that token is the top-level key the caller read: splice it, no decode.
    compact = _COMPACT_KEY + quoted
    at = body.find(compact)
    if (
        at > 0
        and body.find(_MODEL_KEY, at + len(compact)) < 0
        and body.find(_MODEL_KEY, 0, at) < 0
        and body.find(_UNICODE_ESCAPE) < 0
    ):
        return b"".join((body[:at], _COMPACT_KEY, _encode(new), body[at + len(compact) :]))
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
