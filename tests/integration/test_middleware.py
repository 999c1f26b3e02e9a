"""The middleware chain in the real gateway process: Gemini thought
signatures carried across turns for clients that drop them, request ids in
responses and in every log line of their request, and the request log.

The fake OpenAI upstream plays Gemini's OpenAI endpoint (provider ``gem``);
the official ``anthropic`` SDK is the client, which, like Claude Code, sends
back only the fields of a ``tool_use`` block it knows.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterator
from typing import Any

import anthropic
import httpx
import openai
import pytest

from tests.support.fakes import (
    USAGE,
    FakeUpstream,
    JSONReply,
    SSEReply,
    chunk,
    completion,
    sse,
    tool_call,
)
from tests.support.gateway import Gateway, run_gateway
from tests.support.waiting import eventually

SIGNATURE = "Q2lnbmF0dXJlLW9mLXRoZS10aG91Z2h0"
EXTRA = {"google": {"thought_signature": SIGNATURE}}
TOOLS = [
    {
        "name": "get_weather",
        "description": "Weather for a city",
        "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}},
    }
]
ASK = {"role": "user", "content": "Weather in Paris and Rome?"}


def _env(fake: FakeUpstream, **extra: str) -> dict[str, str]:
    return {
        "GEM_API_KEY": "sk-gem-test",
        "GEM_BASE_URL": fake.url + "/v1",
        "VDM_DEFAULT_PROVIDER": "gem",
        "MAX_RETRIES": "0",
        "KEY_COOLDOWN_MAX": "0.001",  # a scripted 429 must not bench the key for later tests
        **extra,
    }


@pytest.fixture(scope="module")
def enabled(
    fake_openai: FakeUpstream, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Gateway]:
    env = _env(fake_openai, MIDDLEWARE="request-log", GEMINI_THOUGHT_SIGNATURES_ENABLED="true")
    with run_gateway(env, tmp_path_factory.mktemp("mw-on")) as gw:
        yield gw


@pytest.fixture(scope="module")
def disabled(
    fake_openai: FakeUpstream, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Gateway]:
    with run_gateway(_env(fake_openai), tmp_path_factory.mktemp("mw-off")) as gw:
        yield gw


def _client(gateway: Gateway) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=gateway.url, api_key="k", max_retries=0, timeout=20)


def _signed_calls(prefix: str) -> list[dict[str, Any]]:
    """Two parallel calls; as Gemini does, only the first carries the signature."""
    first = tool_call(f"{prefix}_1", "get_weather", '{"city": "Paris"}')
    first["extra_content"] = EXTRA
    return [first, tool_call(f"{prefix}_2", "get_weather", '{"city": "Rome"}')]


def _streamed(calls: list[dict[str, Any]]) -> SSEReply:
    chunks = [chunk({"role": "assistant", "content": ""})]
    chunks += [chunk({"tool_calls": [dict(c, index=i)]}) for i, c in enumerate(calls)]
    chunks += [chunk({}, finish="tool_calls"), chunk(None, usage=USAGE)]
    return SSEReply(sse(*chunks))


def _turn_one(
    client: anthropic.Anthropic, fake: FakeUpstream, stream: bool, prefix: str
) -> anthropic.types.Message:
    calls = _signed_calls(prefix)
    if stream:
        fake.reply(_streamed(calls))
        with client.messages.stream(
            model="gemini-3-pro", max_tokens=200, tools=TOOLS, messages=[ASK]
        ) as s:
            return s.get_final_message()
    fake.reply(JSONReply(completion(None, tool_calls=calls, finish="tool_calls")))
    return client.messages.create(model="gemini-3-pro", max_tokens=200, tools=TOOLS, messages=[ASK])


def _turn_two(
    client: anthropic.Anthropic, fake: FakeUpstream, answer: anthropic.types.Message, stream: bool
) -> dict[str, Any]:
    uses = [b for b in answer.content if b.type == "tool_use"]
    assert [u.id for u in uses] == [f"toolu_{u.id[6:]}" for u in uses] and len(uses) == 2
    history = [
        ASK,
        # only the fields a client knows: the signature is gone here
        {
            "role": "assistant",
            "content": [
                {"type": "tool_use", "id": u.id, "name": u.name, "input": u.input} for u in uses
            ],
        },
        {
            "role": "user",
            "content": [
                {"type": "tool_result", "tool_use_id": u.id, "content": "sunny"} for u in uses
            ],
        },
    ]
    if stream:
        fake.reply(
            SSEReply(
                sse(
                    chunk({"content": "Sunny."}), chunk({}, finish="stop"), chunk(None, usage=USAGE)
                )
            )
        )
        with client.messages.stream(
            model="gemini-3-pro", max_tokens=200, tools=TOOLS, messages=history
        ) as s:
            assert s.get_final_text() == "Sunny."
    else:
        fake.reply(JSONReply(completion("Sunny.")))
        client.messages.create(model="gemini-3-pro", max_tokens=200, tools=TOOLS, messages=history)
    return fake.last.json


@pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
def test_thought_signatures_are_carried_to_the_next_turn(
    enabled: Gateway, fake_openai: FakeUpstream, stream: bool
) -> None:
    prefix = "fc_s" if stream else "fc_j"
    with _client(enabled) as client:
        answer = _turn_one(client, fake_openai, stream, prefix)
        assert SIGNATURE not in answer.model_dump_json()  # Anthropic clients never see it
        sent = _turn_two(client, fake_openai, answer, stream)
    calls = sent["messages"][1]["tool_calls"]
    assert [c["id"] for c in calls] == [f"{prefix}_1", f"{prefix}_2"]
    assert calls[0]["extra_content"] == EXTRA
    assert "extra_content" not in calls[1]
    assert [m["tool_call_id"] for m in sent["messages"][2:4]] == [f"{prefix}_1", f"{prefix}_2"]
    assert SIGNATURE not in enabled.log()  # never logged


def test_without_the_middleware_signatures_are_not_carried(
    disabled: Gateway, fake_openai: FakeUpstream
) -> None:
    with _client(disabled) as client:
        answer = _turn_one(client, fake_openai, False, "fc_off")
        sent = _turn_two(client, fake_openai, answer, False)
    calls = sent["messages"][1]["tool_calls"]
    assert [c["id"] for c in calls] == ["fc_off_1", "fc_off_2"]
    assert all("extra_content" not in c for c in calls)


# ---------------------------------------------------------------- request ids


def _wait_for(gateway: Gateway, found: Callable[[str], bool]) -> str:
    return eventually(gateway.log, found)


def _lines(text: str, request_id: str) -> list[str]:
    return [line for line in text.splitlines() if f"request_id={request_id}:" in line]


def _message(gateway: Gateway, headers: dict[str, Any], **body: Any) -> httpx.Response:
    payload = {
        "model": "gemini-3-pro",
        "max_tokens": 10,
        "messages": [{"role": "user", "content": "Hi"}],
        **body,
    }
    return httpx.post(gateway.url + "/v1/messages", json=payload, headers=headers, timeout=20)


@pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
def test_client_request_id_comes_back_and_tags_every_log_line(
    enabled: Gateway, fake_openai: FakeUpstream, stream: bool
) -> None:
    request_id = f"trace-{int(stream)}.abc:XYZ_{time.monotonic_ns()}"
    if stream:
        fake_openai.reply(
            SSEReply(
                sse(chunk({"content": "Hello"}), chunk({}, finish="stop"), chunk(None, usage=USAGE))
            )
        )
    else:
        fake_openai.reply(JSONReply(completion("Hello")))
    response = _message(enabled, {"x-request-id": request_id}, stream=stream)
    assert response.status_code == 200
    assert response.headers["x-request-id"] == request_id
    assert response.headers["request-id"] == request_id
    assert response.headers.get_list("x-request-id") == [request_id]

    text = _wait_for(enabled, lambda t: len(_lines(t, request_id)) >= 3)
    lines = _lines(text, request_id)
    access = [line for line in lines if " vdm.access " in line]
    requests = [line for line in lines if " vdm.requests " in line]
    assert len(access) == 1 and "POST /v1/messages 200" in access[0]
    assert len(requests) == 2, lines
    assert re.search(
        r"start anthropic gemini-3-pro -> gem:gemini-3-pro "
        rf"stream={str(stream).lower()} messages=1 tools=0$",
        requests[0],
    )
    assert re.search(
        r"end 200 ok stop=end_turn in=25 out=20 [\d.]+ms first=[\d.]+ms$", requests[1]
    ), requests[1]
    assert "sk-gem-test" not in text and "Hello" not in text


def test_request_log_on_the_passthrough_path(enabled: Gateway, fake_openai: FakeUpstream) -> None:
    # the upstream's own ids are replaced by the gateway's, not sent twice
    fake_openai.reply(
        JSONReply(
            completion("Hello"), headers={"X-Request-Id": "upstream", "Request-Id": "upstream"}
        )
    )
    request_id = f"oai-{time.monotonic_ns()}"
    with openai.OpenAI(base_url=enabled.url + "/v1", api_key="k", max_retries=0) as client:
        raw = client.chat.completions.with_raw_response.create(
            model="gemini-3-pro",
            messages=[{"role": "user", "content": "Hi"}],
            extra_headers={"x-request-id": request_id},
        )
    assert raw.headers.get_list("x-request-id") == [request_id]
    assert raw.headers.get_list("request-id") == [request_id]
    lines = _lines(_wait_for(enabled, lambda t: len(_lines(t, request_id)) >= 3), request_id)
    assert any(
        "start openai gemini-3-pro -> gem:gemini-3-pro stream=false messages=1" in line
        for line in lines
    ), lines
    assert any("end 200 ok stop=stop in=25 out=20" in line for line in lines), lines


def test_an_upstream_failure_is_logged_as_the_end_of_its_request(
    enabled: Gateway, fake_openai: FakeUpstream
) -> None:
    fake_openai.reply(JSONReply({"error": {"message": "quota gone"}}, status=429))
    request_id = f"fail-{time.monotonic_ns()}"
    response = _message(enabled, {"x-request-id": request_id})
    assert response.status_code == 429
    assert response.headers["x-request-id"] == request_id
    lines = _lines(_wait_for(enabled, lambda t: len(_lines(t, request_id)) >= 3), request_id)
    end = [line for line in lines if " vdm.requests " in line and "end " in line]
    assert len(end) == 1 and "end 429 error=" in end[0] and "quota gone" in end[0]


@pytest.mark.parametrize("sent", ["has space", "x" * 129, "semi;colon", "ü-unicode"])
def test_an_unusable_request_id_is_replaced(
    enabled: Gateway, fake_openai: FakeUpstream, sent: str
) -> None:
    fake_openai.reply(JSONReply(completion("Hello")))
    response = _message(enabled, {"x-request-id": sent.encode()})
    assert response.status_code == 200
    returned = response.headers["x-request-id"]
    assert returned != sent and returned.startswith("req_vdm_")
    assert response.headers["request-id"] == returned


def test_a_128_character_id_is_kept(enabled: Gateway, fake_openai: FakeUpstream) -> None:
    fake_openai.reply(JSONReply(completion("Hello")))
    request_id = "a" * 127 + "Z"
    assert _message(enabled, {"x-request-id": request_id}).headers["x-request-id"] == request_id


def test_errors_carry_generated_ids(enabled: Gateway) -> None:
    missing = httpx.get(enabled.url + "/no/such/endpoint", timeout=10)
    bad = httpx.post(
        enabled.url + "/v1/messages",
        content=b"{not json",
        timeout=10,
        headers={"content-type": "application/json"},
    )
    assert (missing.status_code, bad.status_code) == (404, 400)
    ids = set()
    for response in (missing, bad):
        request_id = response.headers["x-request-id"]
        assert request_id.startswith("req_vdm_")
        assert response.headers["request-id"] == request_id
        ids.add(request_id)
    assert len(ids) == 2
    bad_id = bad.headers["x-request-id"]
    lines = _lines(_wait_for(enabled, lambda t: bool(_lines(t, bad_id))), bad_id)
    assert any(" vdm.access " in line and "POST /v1/messages 400" in line for line in lines)


def test_a_client_id_comes_back_on_an_error(enabled: Gateway) -> None:
    response = httpx.get(enabled.url + "/nope", headers={"x-request-id": "err-1"}, timeout=10)
    assert response.status_code == 404
    assert response.headers["x-request-id"] == "err-1"


def test_lines_outside_a_request_show_a_dash(enabled: Gateway) -> None:
    startup = [line for line in enabled.log().splitlines() if "request_id=" in line][:1]
    assert startup and "request_id=-:" in startup[0]
