"""The usage chunk the gateway asked for is kept from a client that did not."""

from __future__ import annotations

import json

import pytest

from vdm.protocols.openai_usage import asking_usage, hide_usage_chunks, unasked


def frame(chunk: dict, spaced: bool) -> bytes:
    text = json.dumps(chunk) if spaced else json.dumps(chunk, separators=(",", ":"))
    return b"data: " + text.encode() + b"\n\n"


@pytest.mark.parametrize("spaced", [False, True])
def test_only_the_usage_chunk_is_taken_out(spaced: bool) -> None:
    delta = {"choices": [{"index": 0, "delta": {"content": 'say "usage":null'}}], "usage": None}
    last = {"choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}], "usage": None}
    usage = {"choices": [], "usage": {"prompt_tokens": 3, "completion_tokens": 2}}
    frames = frame(delta, spaced) + frame(last, spaced) + frame(usage, spaced)
    assert hide_usage_chunks(frames) == frame(delta, spaced) + frame(last, spaced)
    assert hide_usage_chunks(frame(delta, spaced)) == frame(delta, spaced)
    # a provider that puts usage beside its choices keeps it there
    inline = {"choices": [{"index": 0, "delta": {}}], "usage": {"prompt_tokens": 3}}
    assert hide_usage_chunks(frame(inline, spaced)) == frame(inline, spaced)


def test_usage_is_asked_only_of_streams_that_did_not_ask() -> None:
    assert asking_usage({"stream": True}) == {"include_usage": True}
    assert asking_usage({"stream": True, "stream_options": {"x": 1}}) == {
        "x": 1,
        "include_usage": True,
    }
    assert asking_usage({"stream": True, "stream_options": {"include_usage": True}}) is None
    assert asking_usage({"stream": False}) is None
    assert unasked({"stream": True}) is hide_usage_chunks
    assert unasked({"stream": True, "stream_options": {"include_usage": True}}) is None
