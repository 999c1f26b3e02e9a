"""Usage for every streamed Chat Completions answer, asked or not.

A client that streams without ``stream_options.include_usage`` (aider, many
scripts) is answered by the upstream without usage: its tokens would escape
the TPM windows, the totals and the spend.  So the gateway asks for it anyway
(:func:`asking_usage`), reads it with the stream's usage tap, and takes the
extra chunk out before it reaches a client that did not ask for it
(:func:`hide_usage_chunks`).  The chunk taken out is the one the API adds for
``include_usage``: ``"choices": []`` and a ``usage`` object.  A provider that
puts usage in a chunk with choices keeps it there (nothing else to take out);
the ``"usage": null`` the API adds to the other chunks is relayed as sent.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import msgspec

_decoder = msgspec.json.Decoder()
_NEEDLE = b'"usage"'
# The API's other chunks say "usage": null; only the last one has usage and no choices.
_NULL_USAGE = b'"usage":null'
_NULL_USAGE_SPACED = b'"usage": null'


def asked_usage(parsed: Mapping[str, Any]) -> bool:
    """Whether the client's body asks for the usage chunk itself."""
    options = parsed.get("stream_options")
    return isinstance(options, dict) and options.get("include_usage") is True


def asking_usage(parsed: dict[str, Any]) -> dict[str, Any] | None:
    """The ``stream_options`` that ask for usage, for a streamed request that
    does not (None: it asks already, or does not stream)."""
    if parsed.get("stream") is not True or asked_usage(parsed):
        return None
    options = parsed.get("stream_options")
    return {**(options if isinstance(options, dict) else {}), "include_usage": True}


def unasked(parsed: Mapping[str, Any]) -> Callable[[bytes], bytes] | None:
    """What to keep from the client of a stream it asked no usage of."""
    if parsed.get("stream") is not True or asked_usage(parsed):
        return None
    return hide_usage_chunks


def hide_usage_chunks(frames: bytes) -> bytes:
    """``frames`` (whole SSE frames) without the usage-only chunks."""
    if _NEEDLE not in frames or b"\r" in frames:
        return frames  # (CRLF framing: left as sent, a rare upstream)
    parts = frames.split(b"\n\n")
    kept = [part for part in parts if _NEEDLE not in part or not _usage_only(part)]
    return frames if len(kept) == len(parts) else b"\n\n".join(kept)


def _usage_only(frame: bytes) -> bool:
    if _NULL_USAGE in frame or _NULL_USAGE_SPACED in frame:
        return False  # every other chunk of such a stream: no decode for it
    data = b"\n".join(
        line[5:].lstrip(b" ") for line in frame.split(b"\n") if line.startswith(b"data:")
    )
    try:
        chunk = _decoder.decode(data)
    except (msgspec.DecodeError, UnicodeDecodeError):
        return False
    return (
        isinstance(chunk, dict)
        and not chunk.get("choices")
        and isinstance(chunk.get("usage"), dict)
    )
