"""protocols.body.rewrite: the passthrough body keeps every byte but the model;
anything the splice cannot do safely re-encodes, and the result is always
the same JSON with the change applied."""

from __future__ import annotations

import json
from typing import Any

import pytest

from vdm.protocols.body import StreamRenamer, rename_answer, rewrite

# A Claude Code style body written by hand: odd spacing, key order, unicode
# escapes, cache_control, a thinking signature, fields the gateway never heard of.
BODY = (
    b'{\n  "max_tokens" :  4096,\n'
    b'  "messages":[{"role":"user","content":[{"type":"text","text":"caf\\u00e9 \\ud83d\\ude00 '
    b'\\"quoted\\" \\\\ back\\/slash","cache_control":{"type":"ephemeral","ttl":"1h"}}]},'
    b'{"role":"assistant","content":[{"type":"thinking","thinking":"hmm","signature":'
    b'"EqQBCkYIBxgCKkA+/=="},{"type":"text","text":"ok"}]}],\n'
    b'  "model"   :   "claude-sonnet-4-5",\n'
    b'  "context_management": {"edits": [{"type": "clear_tool_uses_20250919"}]},\n'
    b'  "output_config": {"effort": "high"}, "temperature": 1.0, "big": 12345678901234567890,\n'
    b'  "stream":true}'
)


def parsed_of(body: bytes) -> dict[str, Any]:
    return json.loads(body)


def splice_parts(body: bytes, old: str) -> tuple[bytes, bytes]:
    """The bytes before the model key and after its value."""
    key = body.index(b'"model"')
    value = body.index(json.dumps(old).encode(), key)
    return body[:key], body[value + len(json.dumps(old)) :]


def test_unchanged_model_returns_the_same_bytes_object() -> None:
    parsed = parsed_of(BODY)
    assert rewrite(BODY, parsed, {"model": "claude-sonnet-4-5"}) is BODY
    assert rewrite(BODY, parsed, {}) is BODY
    assert rewrite(BODY, parsed, {"model": "claude-sonnet-4-5", "max_tokens": 4096}) is BODY


@pytest.mark.parametrize(
    "new", ["claude-x", "a", "x" * 300, "modèle-ü", 'we"ird\\name', "claude-sonnet-4-5-long-suffix"]
)
def test_model_splice_keeps_every_other_byte(new: str) -> None:
    out = rewrite(BODY, parsed_of(BODY), {"model": new})
    before, after = splice_parts(BODY, "claude-sonnet-4-5")
    assert out.startswith(before)
    assert out.endswith(after)
    middle = out[len(before) : len(out) - len(after)]
    assert json.loads(b"{" + middle + b"}") == {"model": new}
    assert json.loads(out) == {**parsed_of(BODY), "model": new}
    # everything the gateway does not understand is there verbatim
    for piece in (
        b'"signature":"EqQBCkYIBxgCKkA+/=="',
        b'"ttl":"1h"',
        b"\\u00e9",
        b"\\ud83d\\ude00",
        b"\\/slash",
        b'"max_tokens" :  4096',
        b'"context_management": {"edits"',
        b"12345678901234567890",
    ):
        assert piece in out


def test_model_key_first_last_and_compact() -> None:
    for body in (
        b'{"model":"m1","max_tokens":1}',
        b'{"max_tokens":1,"model":"m1"}',
        b'{ "model" : "m1" }',
        b'{"messages":[],"model":\n\t"m1"\n}',
    ):
        out = rewrite(body, parsed_of(body), {"model": "m2"})
        assert json.loads(out) == {**parsed_of(body), "model": "m2"}
        before, after = splice_parts(body, "m1")
        assert out.startswith(before) and out.endswith(after)


def test_model_string_inside_message_text_is_left_alone() -> None:
    # the model name, and even '"model": "<name>"', appear JSON-escaped in a text
    body = (
        b'{"messages":[{"role":"user","content":"use {\\"model\\": \\"claude-x\\"} '
        b'and \\"model\\":\\"claude-x\\""}],"model":"claude-x","max_tokens":5}'
    )
    parsed = parsed_of(body)
    out = rewrite(body, parsed, {"model": "gpt-4o"})
    assert json.loads(out) == {**parsed, "model": "gpt-4o"}
    assert json.loads(out)["messages"] == parsed["messages"]


def test_nested_model_key_with_the_same_value() -> None:
    # a real second "model" key, inside a tool input in the history
    body = (
        b'{"model": "claude-x", "max_tokens": 5, "messages": [{"role": "assistant", '
        b'"content": [{"type": "tool_use", "id": "t1", "name": "Task", '
        b'"input": {"model": "claude-x", "prompt": "p"}}]}]}'
    )
    parsed = parsed_of(body)
    out = rewrite(body, parsed, {"model": "gpt-4o"})
    result = json.loads(out)
    assert result["model"] == "gpt-4o"
    assert result["messages"][0]["content"][0]["input"] == {"model": "claude-x", "prompt": "p"}
    assert result == {**parsed, "model": "gpt-4o"}


@pytest.mark.parametrize(
    "top",
    [
        b'"model": "claude\\u002dx"',  # the value written with an escape
        b'"mod\\u0065l": "claude-x"',  # the key written with an escape
        b'"model": "\\u0063laude-x"',
    ],
)
@pytest.mark.parametrize("nested_first", [True, False])
def test_top_level_model_written_with_escapes_and_a_nested_plain_one(
    top: bytes, nested_first: bool
) -> None:
    """Only one '"model": "claude-x"' is in the bytes, and it is the nested one:
    splicing it would change the wrong field and forward the old model."""
    nested = b'"metadata": {"model": "claude-x"}'
    inner = [nested, top] if nested_first else [top, nested]
    body = b"{" + b", ".join([*inner, b'"max_tokens": 5', b'"messages": []']) + b"}"
    parsed = parsed_of(body)
    assert parsed["model"] == "claude-x" and parsed["metadata"] == {"model": "claude-x"}
    out = rewrite(body, parsed, {"model": "gpt-4o"})
    assert json.loads(out) == {**parsed, "model": "gpt-4o"}


def test_non_ascii_model_written_escaped_by_the_client() -> None:
    body = json.dumps({"model": "modèle", "max_tokens": 5, "messages": []}).encode()
    assert b"\\u00e8" in body  # Python's json escapes it; msgspec would not
    out = rewrite(body, parsed_of(body), {"model": "m"})
    assert json.loads(out) == {"model": "m", "max_tokens": 5, "messages": []}


def test_max_tokens_change_re_encodes() -> None:
    parsed = parsed_of(BODY)
    out = rewrite(BODY, parsed, {"model": "claude-x", "max_tokens": 1024})
    assert json.loads(out) == {**parsed, "model": "claude-x", "max_tokens": 1024}
    out = rewrite(BODY, parsed, {"model": "claude-sonnet-4-5", "max_tokens": 1024})
    assert json.loads(out) == {**parsed, "max_tokens": 1024}
    assert out != BODY


def test_new_top_level_key_is_added() -> None:
    body = b'{"model":"m","messages":[]}'
    out = rewrite(body, parsed_of(body), {"max_tokens": 7})
    assert json.loads(out) == {"model": "m", "messages": [], "max_tokens": 7}


def test_duplicate_top_level_model_keys() -> None:
    body = b'{"model":"a","messages":[],"model":"a"}'
    out = rewrite(body, parsed_of(body), {"model": "b"})
    assert json.loads(out)["model"] == "b"
    assert b'"a"' not in out


# ---------------------------------------------------------------- answers: the client's model


ANSWER = (
    b'{"id":"msg_1","type":"message","role":"assistant","model" : "claude-x-2099",'
    b'"content":[{"type":"thinking","thinking":"say \\"model\\":\\"claude-x-2099\\"",'
    b'"signature":"sig+/=="},{"type":"text","text":"caf\\u00e9"}],"usage":{"input_tokens":1}}'
)


def test_answer_splice_keeps_every_other_byte() -> None:
    expected = ANSWER.replace(b'"model" : "claude-x-2099"', b'"model":"claude-sonnet-4-5"')
    assert rename_answer(ANSWER, "claude-sonnet-4-5", "claude-x-2099") == expected
    assert rename_answer(ANSWER, "claude-sonnet-4-5") == expected  # the old name read from it
    assert rename_answer(ANSWER, "claude-x-2099", "claude-x-2099") is ANSWER
    assert rename_answer(ANSWER, "claude-x-2099") is ANSWER


@pytest.mark.parametrize(
    "answer", [b'{"id":"x","model":null}', b'{"id":"x"}', b"[1,2]", b'"model"', b'{"model":3}']
)
def test_answer_without_a_model_name_is_left_as_it_is(answer: bytes) -> None:
    assert rename_answer(answer, "asked") is answer


@pytest.mark.parametrize(
    "answer",
    [
        # the same name again, in a tool's input: two candidates, re-encoded
        b'{"model":"up","content":[{"type":"tool_use","input":{"model":"up"}}]}',
        b'{"content":[{"type":"tool_use","input":{"model":"up"}}],"model":"up"}',
        # the top-level key written with an escape, a nested plain one
        b'{"content":[{"type":"tool_use","input":{"model":"up"}}],"mod\\u0065l":"up"}',
        b'{"model":"\\u0075p","content":[{"input":{"model":"up"}}]}',
    ],
)
def test_answer_nested_model_keys_are_left_alone(answer: bytes) -> None:
    out = json.loads(rename_answer(answer, "asked", "up"))
    assert out == {**json.loads(answer), "model": "asked"}


def test_stream_first_event_only() -> None:
    rename = StreamRenamer("claude-sonnet-4-5", every=False)
    first = (
        b'event: message_start\ndata: {"type":"message_start","message":{"id":"m",'
        b'"model": "claude-x-2099","content":[]}}\n\n'
        b'event: content_block_start\ndata: {"type":"content_block_start","index":0,'
        b'"content_block":{"type":"tool_use","input":{"model": "claude-x-2099"}}}\n\n'
    )
    out = rename(first)
    assert rename.done
    assert out == first.replace(b'"model": "claude-x-2099"', b'"model":"claude-sonnet-4-5"', 1)
    assert out.count(b'"model": "claude-x-2099"') == 1  # the tool's input is untouched


@pytest.mark.parametrize(
    ("upstream", "token"),
    [
        ("gpt-4o-2024-08-06", b'"model":"gpt-4o-2024-08-06"'),
        ("gpt-4o-2024-08-06", b'"model" :  "gpt-4o-2024-08-06"'),
        ('we"ird\\name', b'"model":"we\\"ird\\\\name"'),
        ("ends-in\\", b'"model":"ends-in\\\\"'),
    ],
)
def test_stream_every_chunk_by_the_token_learnt(upstream: str, token: bytes) -> None:
    def frame(extra: bytes = b"") -> bytes:
        return b'data: {"id":"c",' + token + b',"choices":[' + extra + b"]}\n\n"

    text = json.dumps({"content": f'"model":"{upstream}"'}).encode()  # escaped: text, not a key
    rename = StreamRenamer("fast", every=True)
    new = b'"model":"fast"'
    assert rename(frame() + frame()) == (frame() + frame()).replace(token, new)
    assert not rename.done
    for later in (frame(text), frame() * 3, b"data: [DONE]\n\n"):
        assert rename(later) == later.replace(token, new)
    out = rename(frame(text))
    assert text in out and out.count(new) == 1


def test_stream_every_chunk_an_empty_name_is_renamed_not_learnt() -> None:
    rename = StreamRenamer("fast", every=True)
    azure = b'data: {"model":"","choices":[],"prompt_filter_results":[]}\n\n'
    assert rename(azure) == azure.replace(b'"model":""', b'"model":"fast"')
    real = b'data: {"model":"gpt-4o","choices":[]}\n\n'
    assert rename(real) == real.replace(b'"model":"gpt-4o"', b'"model":"fast"')
    assert rename(real) == real.replace(b'"model":"gpt-4o"', b'"model":"fast"')


def test_stream_every_chunk_already_named_as_asked() -> None:
    rename = StreamRenamer("gpt-4o", every=True)
    frame = b'data: {"model":"gpt-4o","choices":[]}\n\n'
    assert rename(frame) == frame
    assert rename.done  # nothing to replace in the chunks to come


def test_stream_no_model_yet_keeps_looking() -> None:
    rename = StreamRenamer("fast", every=True)
    assert rename(b"data: {}\n\n") == b"data: {}\n\n"
    assert not rename.done
    frame = b'data: {"model":"up"}\n\n'
    assert rename(frame) == b'data: {"model":"fast"}\n\n'


@pytest.mark.parametrize(
    "top",
    [
        b'"mod\\u0065l":"claude-x"',  # the key written with an escape
        b'"model":"claude\\u002dx"',  # the value written with an escape
    ],
)
def test_a_compact_body_with_an_escaped_top_level_model_is_not_spliced_blindly(
    top: bytes,
) -> None:
    """The compact form of the escaped case: one plain '"model":"claude-x"' in
    the bytes, nested; the top-level one is spelled with an escape."""
    body = b'{"metadata":{"model":"claude-x"},' + top + b',"max_tokens":5,"messages":[]}'
    parsed = parsed_of(body)
    out = rewrite(body, parsed, {"model": "gpt-4o"})
    assert json.loads(out) == {**parsed, "model": "gpt-4o"}


def test_a_compact_body_naming_its_model_once_is_spliced_in_place() -> None:
    body = b'{"model":"claude-x","max_tokens":5,"messages":[{"role":"user","content":"hi"}]}'
    out = rewrite(body, parsed_of(body), {"model": "gpt-4o"})
    assert out == body.replace(b'"claude-x"', b'"gpt-4o"')
