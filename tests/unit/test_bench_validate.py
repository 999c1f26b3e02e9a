"""The benchmark's validators accept correct answers and reject broken ones.

The benchmarks themselves stay out of CI, but their "zero validator errors"
target is only worth something if ``bench/validate.py`` really catches wrong
event order, usage mismatches, missing terminators and bad JSON.  The valid
bodies are the fake upstream's own answers; each broken one changes one thing.
"""

from __future__ import annotations

import sys
from pathlib import Path

import msgspec
import pytest

BENCH = Path(__file__).resolve().parents[2] / "bench"
sys.path.insert(0, str(BENCH))

import upstream  # noqa: E402
import validate  # noqa: E402

JSON = "application/json"
SSE = "text/event-stream; charset=utf-8"


def _events(body: bytes) -> list[bytes]:
    """An SSE body split into its frames (each ends with a blank line)."""
    return [f + b"\n\n" for f in body.split(b"\n\n") if f]


def _join(frames: list[bytes]) -> bytes:
    return b"".join(frames)


def _anthropic_frames() -> list[bytes]:
    return _events(upstream.anthropic_sse())


def _replace_json(body: bytes, change) -> bytes:
    obj = msgspec.json.decode(body)
    change(obj)
    return msgspec.json.encode(obj)


def _frame_index(frames: list[bytes], name: bytes) -> int:
    return next(i for i, f in enumerate(frames) if f.startswith(b"event: " + name + b"\n"))


# --- valid answers ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("validator", "ctype", "body"),
    [
        (validate.validate_anthropic_json, JSON, upstream.anthropic_json()),
        (validate.validate_anthropic_sse, SSE, upstream.anthropic_sse()),
        (validate.validate_openai_json, JSON, upstream.openai_json()),
        (validate.validate_openai_sse, SSE, upstream.openai_sse()),
    ],
    ids=["anthropic-json", "anthropic-sse", "openai-json", "openai-sse"],
)
def test_the_fake_upstreams_answers_are_valid(validator, ctype, body):
    assert validator(200, ctype, body) == []


def test_openai_stream_without_usage_chunk_is_valid_when_not_asked_for():
    body = upstream.openai_sse(usage=False)
    assert validate.validate_openai_sse(200, SSE, body, expect_usage=False) == []
    assert any("usage chunks" in e for e in validate.validate_openai_sse(200, SSE, body))


def test_anthropic_stream_with_crlf_line_ends_is_valid():
    body = upstream.anthropic_sse().replace(b"\n", b"\r\n")
    assert validate.validate_anthropic_sse(200, SSE, body) == []


# --- broken answers: status, content type, JSON ----------------------------------------


def test_http_error_and_wrong_content_type_are_rejected():
    assert validate.validate_anthropic_json(500, JSON, b'{"type":"error"}')
    errors = validate.validate_openai_json(200, "text/plain", upstream.openai_json())
    assert any("content-type" in e for e in errors)


@pytest.mark.parametrize(
    "validator", [validate.validate_anthropic_json, validate.validate_openai_json]
)
@pytest.mark.parametrize("body", [b'{"type": "message", ', b"[1, 2]", b""])
def test_bad_json_is_rejected(validator, body):
    errors = validator(200, JSON, body)
    assert errors and any("JSON" in e for e in errors)


def test_anthropic_stream_event_data_that_is_not_json_is_rejected():
    frames = _anthropic_frames()
    i = _frame_index(frames, b"content_block_delta")
    frames[i] = b'event: content_block_delta\ndata: {"type": "content_block_delta", \n\n'
    errors = validate.validate_anthropic_sse(200, SSE, _join(frames))
    assert any("not JSON" in e for e in errors)


def test_openai_stream_chunk_that_is_not_json_is_rejected():
    frames = _events(upstream.openai_sse())
    frames[3] = b"data: {oops\n\n"
    errors = validate.validate_openai_sse(200, SSE, _join(frames))
    assert any("not JSON" in e for e in errors)


# --- broken answers: content and usage ------------------------------------------------


def test_anthropic_json_text_and_usage_mismatch_are_rejected():
    def change(msg):
        msg["content"][0]["text"] += "!"
        msg["usage"]["output_tokens"] = 19

    errors = validate.validate_anthropic_json(
        200, JSON, _replace_json(upstream.anthropic_json(), change)
    )
    assert any("text mismatch" in e for e in errors)
    assert any("output_tokens" in e for e in errors)


def test_openai_json_usage_mismatch_is_rejected():
    def change(obj):
        obj["usage"]["total_tokens"] = 44

    body = _replace_json(upstream.openai_json(), change)
    errors = validate.validate_openai_json(200, JSON, body)
    assert errors == ["openai completion: usage.total_tokens=44, expected 45"]


def test_anthropic_stream_usage_mismatch_is_rejected():
    frames = _anthropic_frames()
    i = _frame_index(frames, b"message_delta")
    frames[i] = frames[i].replace(b'"output_tokens":20', b'"output_tokens":2')
    errors = validate.validate_anthropic_sse(200, SSE, _join(frames))
    assert any("usage.output_tokens=2," in e for e in errors)


def test_anthropic_stream_missing_input_tokens_is_rejected():
    frames = _anthropic_frames()
    frames[0] = frames[0].replace(b'"input_tokens":25', b'"input_tokens":0')
    errors = validate.validate_anthropic_sse(200, SSE, _join(frames))
    assert any("input_tokens=0" in e for e in errors)


def test_openai_stream_usage_mismatch_is_rejected():
    body = upstream.openai_sse().replace(b'"completion_tokens":20', b'"completion_tokens":21')
    errors = validate.validate_openai_sse(200, SSE, body)
    assert any("usage.completion_tokens=21" in e for e in errors)


def test_lost_stream_chunk_is_a_text_mismatch():
    frames = _anthropic_frames()
    del frames[_frame_index(frames, b"content_block_delta") + 3]
    errors = validate.validate_anthropic_sse(200, SSE, _join(frames))
    assert any("text mismatch" in e for e in errors)


# --- broken answers: event order ------------------------------------------------------


def test_anthropic_stream_without_message_start_first_is_rejected():
    frames = _anthropic_frames()
    frames[0], frames[1] = frames[1], frames[0]
    errors = validate.validate_anthropic_sse(200, SSE, _join(frames))
    assert any("expected message_start first" in e for e in errors)


def test_anthropic_stream_missing_block_stop_is_rejected():
    frames = _anthropic_frames()
    del frames[_frame_index(frames, b"content_block_stop")]
    errors = validate.validate_anthropic_sse(200, SSE, _join(frames))
    assert any("expected content_block_stop" in e for e in errors)


def test_anthropic_stream_message_delta_before_block_stop_is_rejected():
    frames = _anthropic_frames()
    stop, delta = (
        _frame_index(frames, b"content_block_stop"),
        _frame_index(frames, b"message_delta"),
    )
    frames[stop], frames[delta] = frames[delta], frames[stop]
    assert validate.validate_anthropic_sse(200, SSE, _join(frames))


def test_anthropic_event_name_must_match_data_type():
    frames = _anthropic_frames()
    i = _frame_index(frames, b"content_block_stop")
    frames[i] = frames[i].replace(b"event: content_block_stop", b"event: content_block_end")
    errors = validate.validate_anthropic_sse(200, SSE, _join(frames))
    assert any("does not match data type" in e for e in errors)


def test_anthropic_events_after_message_stop_are_rejected():
    frames = _anthropic_frames()
    frames.append(frames[_frame_index(frames, b"content_block_delta")])
    errors = validate.validate_anthropic_sse(200, SSE, _join(frames))
    assert any("after message_stop" in e for e in errors)


def test_openai_stream_with_two_finish_reasons_is_rejected():
    frames = _events(upstream.openai_sse())
    finish = next(i for i, f in enumerate(frames) if b'"finish_reason":"stop"' in f)
    frames.insert(finish, frames[finish])
    errors = validate.validate_openai_sse(200, SSE, _join(frames))
    assert any("finish_reasons" in e for e in errors)


def test_openai_data_after_done_is_rejected():
    frames = _events(upstream.openai_sse())
    frames.append(frames[1])
    errors = validate.validate_openai_sse(200, SSE, _join(frames))
    assert any("after [DONE]" in e for e in errors)


# --- broken answers: missing terminators ----------------------------------------------


def test_anthropic_stream_without_message_stop_is_rejected():
    frames = _anthropic_frames()
    del frames[_frame_index(frames, b"message_stop")]
    errors = validate.validate_anthropic_sse(200, SSE, _join(frames))
    assert any("expected message_stop" in e for e in errors)


def test_openai_stream_without_done_is_rejected():
    body = upstream.openai_sse().replace(b"data: [DONE]\n\n", b"")
    errors = validate.validate_openai_sse(200, SSE, body)
    assert any("[DONE]" in e for e in errors)


@pytest.mark.parametrize(
    ("validator", "body"),
    [
        (validate.validate_anthropic_sse, upstream.anthropic_sse()),
        (validate.validate_openai_sse, upstream.openai_sse()),
    ],
    ids=["anthropic", "openai"],
)
def test_stream_cut_inside_the_last_event_is_rejected(validator, body):
    errors = validator(200, SSE, body[:-1])
    assert any("unterminated" in e for e in errors)


def test_truncated_stream_is_rejected():
    body = upstream.anthropic_sse()
    errors = validate.validate_anthropic_sse(200, SSE, body[: len(body) // 2])
    assert errors
