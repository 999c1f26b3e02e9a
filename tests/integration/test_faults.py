"""Fault injection: what clients see when upstreams fail, stall, die mid-stream
or are abandoned — retries, fallbacks, timeouts, stream errors, pings and
disconnects, through the real gateway process and the official SDKs.

Two module gateways, each with its own pair of fakes (so connection counts
and request records belong to one gateway):

* ``resilient`` — MAX_RETRIES=2, PING_INTERVAL=0.2, fallback chains, and a
  provider ``dead`` on a port where nothing listens;
* ``strict`` — MAX_RETRIES=1 and short FIRST_BYTE / IDLE / TOTAL timeouts.

Providers in both: ``openai`` and ``plain`` (OpenAI format, one fake, told
apart by their keys) and ``ant`` (Anthropic-native, the other fake).
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anthropic
import httpx
import openai
import pytest

from tests.support.fakes import (
    Drop,
    FakeUpstream,
    Hang,
    JSONReply,
    RawReply,
    Reply,
    SSEReply,
    anthropic_message,
    anthropic_stream,
    completion,
    error_reply,
    established_connections,
    refused_url,
    stream_of,
)
from tests.support.gateway import Gateway, run_gateway

ASK = [{"role": "user", "content": "Hi"}]
OAI_KEY = "sk-faults-openai"
PLAIN_KEY = "sk-faults-plain"
ANT_KEY = "sk-ant-faults"
CLIENT_KEY = "client-key-never-forwarded"
FALLBACKS = "openai:gpt-4o=ant:claude-fb; ant:claude-main=plain:m2; openai:chain=plain:c2,ant:c3"


# ---------------------------------------------------------------- rigs


@dataclass
class Rig:
    gw: Gateway
    oai: FakeUpstream  # providers openai and plain
    ant: FakeUpstream  # provider ant

    def mark(self) -> int:
        return len(self.gw.log())

    def log_since(self, mark: int) -> str:
        return self.gw.log()[mark:]


@contextmanager
def rig(tmp: Path, name: str, **settings: str) -> Iterator[Rig]:
    with ExitStack() as stack:
        oai = FakeUpstream(f"{name}-openai").start()
        stack.callback(oai.stop)
        ant = FakeUpstream(f"{name}-anthropic").start()
        stack.callback(ant.stop)
        env = {
            "OPENAI_API_KEY": OAI_KEY,
            "OPENAI_BASE_URL": oai.url + "/v1",
            "PLAIN_API_KEY": PLAIN_KEY,
            "PLAIN_BASE_URL": oai.url + "/v1",
            "ANT_API_KEY": ANT_KEY,
            "ANT_BASE_URL": ant.url,
            "ANT_API_FORMAT": "anthropic",
            "DEAD_API_KEY": "sk-faults-dead",
            "DEAD_BASE_URL": refused_url("/v1"),
            "VDM_DEFAULT_PROVIDER": "openai",
            "RETRY_BACKOFF": "0.01",
            **settings,
        }
        yield Rig(stack.enter_context(run_gateway(env, tmp)), oai, ant)


@pytest.fixture(scope="module")
def resilient(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Rig]:
    with rig(
        tmp_path_factory.mktemp("resilient"),
        "resilient",
        MAX_RETRIES="2",
        PING_INTERVAL="0.2",
        VDM_FALLBACKS=FALLBACKS,
    ) as r:
        yield r


@pytest.fixture(scope="module")
def strict(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Rig]:
    with rig(
        tmp_path_factory.mktemp("strict"),
        "strict",
        MAX_RETRIES="1",
        FIRST_BYTE_TIMEOUT="0.5",
        IDLE_TIMEOUT="1",
        TOTAL_TIMEOUT="2.5",
        VDM_FALLBACKS="openai:slow=ant:quick",
    ) as r:
        yield r


@pytest.fixture(autouse=True)
def _reset_rigs(request: pytest.FixtureRequest) -> None:
    for name in ("resilient", "strict"):
        if name in request.fixturenames:
            r: Rig = request.getfixturevalue(name)
            r.oai.reset()
            r.ant.reset()


# ---------------------------------------------------------------- clients


@dataclass
class Answer:
    text: str
    provider: str | None
    model: str | None


def anthropic_client(r: Rig) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=r.gw.url, api_key=CLIENT_KEY, max_retries=0, timeout=20)


def openai_client(r: Rig) -> openai.OpenAI:
    return openai.OpenAI(base_url=r.gw.url + "/v1", api_key=CLIENT_KEY, max_retries=0, timeout=20)


def ask(r: Rig, door: str, model: str, *, stream: bool = False) -> Answer:
    """One request through ``door`` with that door's official SDK; SDK errors propagate."""
    if door == "anthropic":
        with anthropic_client(r) as client:
            if stream:
                with client.messages.stream(model=model, max_tokens=50, messages=ASK) as s:
                    text = "".join(s.text_stream)
                    headers = s.response.headers
            else:
                raw = client.messages.with_raw_response.create(
                    model=model, max_tokens=50, messages=ASK
                )
                block = raw.parse().content[0]
                assert block.type == "text"
                text, headers = block.text, raw.headers
    else:
        with openai_client(r) as oclient:
            if stream:
                with oclient.chat.completions.with_streaming_response.create(
                    model=model, messages=ASK, stream=True
                ) as response:  # type: ignore[arg-type]
                    headers = response.headers
                    text = "".join(
                        c.choices[0].delta.content or "" for c in response.parse() if c.choices
                    )
            else:
                oraw = oclient.chat.completions.with_raw_response.create(model=model, messages=ASK)  # type: ignore[arg-type]
                text, headers = oraw.parse().choices[0].message.content or "", oraw.headers
    return Answer(text, headers.get("x-vdm-provider"), headers.get("x-vdm-model"))


def ok(text: str, *, stream: bool = False) -> Reply:
    """A good OpenAI-format answer."""
    body = completion(text)
    return SSEReply(stream_of(body)) if stream else JSONReply(body)


def ant_ok(text: str, *, stream: bool = False) -> Reply:
    """A good Anthropic-native answer."""
    return (
        SSEReply(anthropic_stream([text[:3], text[3:]]))
        if stream
        else JSONReply(anthropic_message(text))
    )


def keys(fake: FakeUpstream) -> list[str | None]:
    """Which credential each request carried (Bearer for OpenAI, x-api-key for Anthropic).

    Also checks that the client's own key reached no upstream in any header."""
    for rec in fake.requests:
        assert CLIENT_KEY not in " ".join(rec.headers.values()), rec.headers
    return [
        rec.headers.get("authorization") or rec.headers.get("x-api-key") for rec in fake.requests
    ]


def models_asked(fake: FakeUpstream) -> list[str]:
    return [rec.json["model"] for rec in fake.requests]


def serves_next(r: Rig) -> None:
    """The gateway is fine after the fault: both doors, both wire formats."""
    r.oai.reset()
    r.ant.reset()
    r.oai.reply(ok("still here"))
    assert ask(r, "anthropic", "openai:m").text == "still here"
    r.ant.reply(JSONReply(anthropic_message("also here")))
    assert ask(r, "openai", "ant:m").text == "also here"


def error_status(door: str, exc: Exception) -> tuple[int, str, str]:
    """(status, error type, message) of an SDK status error, per the door's shape."""
    assert isinstance(exc, anthropic.APIStatusError | openai.APIStatusError), exc
    body: Any = exc.body
    if door == "anthropic":
        assert body["type"] == "error"
        return exc.status_code, body["error"]["type"], body["error"]["message"]
    return exc.status_code, body["type"], body["message"]  # the openai SDK unwraps "error"


def retry_lines(log: str) -> list[str]:
    return [line for line in log.splitlines() if "; retry " in line]


def warnings(log: str) -> list[str]:
    return [line for line in log.splitlines() if " WARNING " in line]


def no_errors(log: str) -> None:
    """Upstream faults are warnings at most: never an ERROR line or a traceback."""
    assert " ERROR " not in log and "Traceback" not in log, log


DOORS = ["anthropic", "openai"]

# ---------------------------------------------------------------- retries


@pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
@pytest.mark.parametrize("door", DOORS)
def test_503_twice_then_200_is_served_after_three_upstream_requests(
    resilient: Rig, door: str, stream: bool
) -> None:
    r = resilient
    r.oai.reply(error_reply(503), error_reply(503), ok("third time lucky", stream=stream))
    mark = r.mark()
    answer = ask(r, door, "openai:m", stream=stream)
    assert answer == Answer("third time lucky", "openai", "m")
    assert [rec.path for rec in r.oai.requests] == ["/v1/chat/completions"] * 3
    assert keys(r.oai) == [f"Bearer {OAI_KEY}"] * 3  # the gateway's key, never the client's
    lines = retry_lines(r.log_since(mark))
    assert len(lines) == 2 and "retry 1 of 2" in lines[0] and "retry 2 of 2" in lines[1]
    assert all(OAI_KEY not in line for line in r.log_since(mark).splitlines())


@pytest.mark.parametrize("door", DOORS)
def test_max_retries_1_gives_the_503_to_the_client_after_two_requests(
    strict: Rig, door: str
) -> None:
    r = strict
    r.oai.reply(error_reply(503, "busy busy"), error_reply(503, "busy busy"), ok("sentinel"))
    expected = (
        anthropic.ServiceUnavailableError if door == "anthropic" else openai.InternalServerError
    )
    with pytest.raises(expected) as raised:
        ask(r, door, "openai:m")
    status, _, message = error_status(door, raised.value)
    assert status == 503
    assert "busy busy" in message and "'openai'" in message
    assert len(r.oai.requests) == 2
    # the third scripted answer was not used by that request: the next one gets it
    assert ask(r, door, "openai:m").text == "sentinel"


@pytest.mark.parametrize("door", DOORS)
def test_529_is_retried(resilient: Rig, door: str) -> None:
    r = resilient
    r.oai.reply(error_reply(529, "overloaded"), ok("after 529"))
    assert ask(r, door, "openai:m").text == "after 529"
    assert len(r.oai.requests) == 2


def test_529_on_every_attempt_is_overloaded_after_three_requests(resilient: Rig) -> None:
    r = resilient
    r.oai.reply(*[error_reply(529, "still overloaded")] * 3)
    with pytest.raises(anthropic.OverloadedError) as raised:
        ask(r, "anthropic", "openai:m")
    status, kind, message = error_status("anthropic", raised.value)
    assert (status, kind) == (529, "overloaded_error")
    assert "still overloaded" in message and "'openai'" in message
    assert len(r.oai.requests) == 3
    serves_next(r)


@pytest.mark.parametrize(
    ("status", "anthropic_exc", "openai_exc", "kind"),
    [
        (500, anthropic.InternalServerError, openai.InternalServerError, "api_error"),
        (400, anthropic.BadRequestError, openai.BadRequestError, "invalid_request_error"),
    ],
)
@pytest.mark.parametrize("door", DOORS)
def test_500_and_400_are_not_retried(
    resilient: Rig,
    door: str,
    status: int,
    anthropic_exc: type[Exception],
    openai_exc: type[Exception],
    kind: str,
) -> None:
    r = resilient
    r.oai.reply(error_reply(status, f"nope {status}"), ok("sentinel"))
    mark = r.mark()
    with pytest.raises(anthropic_exc if door == "anthropic" else openai_exc) as raised:
        ask(r, door, "openai:m")
    got_status, got_kind, message = error_status(door, raised.value)
    assert (got_status, got_kind) == (status, kind)
    assert f"nope {status}" in message and "'openai'" in message
    assert len(r.oai.requests) == 1
    assert retry_lines(r.log_since(mark)) == []
    assert ask(r, door, "openai:m").text == "sentinel"


@pytest.mark.parametrize("door", DOORS)
def test_refused_connection_is_retried_then_502_naming_the_provider(
    resilient: Rig, door: str
) -> None:
    r = resilient
    mark = r.mark()
    with pytest.raises(
        anthropic.InternalServerError if door == "anthropic" else openai.InternalServerError
    ) as raised:
        ask(r, door, "dead:m")
    status, kind, message = error_status(door, raised.value)
    assert (status, kind) == (502, "api_error")
    assert "'dead'" in message and "unreachable" in message
    assert "sk-faults-dead" not in message
    lines = retry_lines(r.log_since(mark))
    assert len(lines) == 2 and all("'dead'" in line for line in lines)
    assert "sk-faults-dead" not in r.gw.log()
    serves_next(r)


@pytest.mark.parametrize("door", DOORS)
def test_dropped_connection_is_retried(resilient: Rig, door: str) -> None:
    r = resilient
    r.oai.reply(Drop(), ok("after the drop"))
    assert ask(r, door, "openai:m") == Answer("after the drop", "openai", "m")
    assert len(r.oai.requests) == 2


@pytest.mark.parametrize(
    ("door", "model", "fake_name"),
    [
        ("anthropic", "openai:m", "oai"),  # conversion
        ("anthropic", "ant:m", "ant"),  # passthrough
        ("openai", "openai:m", "oai"),  # passthrough
        ("openai", "ant:m", "ant"),  # conversion
    ],
)
def test_json_body_cut_short_is_retried(
    resilient: Rig, door: str, model: str, fake_name: str
) -> None:
    """A non-streaming answer whose body breaks off: nothing reached the client yet."""
    r = resilient
    fake = r.oai if fake_name == "oai" else r.ant
    good = completion("whole answer") if fake_name == "oai" else anthropic_message("whole answer")
    data = json.dumps(good).encode()
    fake.reply(
        SSEReply([data[:40], data[40:]], cut_after=1, headers={"content-type": "application/json"}),
        JSONReply(good),
    )
    assert ask(r, door, model).text == "whole answer"
    assert len(fake.requests) == 2 and fake.cut == 1


# ---------------------------------------------------------------- malformed answers


@pytest.mark.parametrize(
    ("door", "model", "provider"),
    [
        ("anthropic", "openai:m", "openai"),  # conversion from an OpenAI-format upstream
        ("openai", "ant:m", "ant"),  # conversion from an Anthropic-native upstream
    ],
)
def test_malformed_json_body_is_502_naming_the_provider(
    resilient: Rig, door: str, model: str, provider: str
) -> None:
    r = resilient
    fake = r.oai if provider == "openai" else r.ant
    fake.reply(RawReply(b'{"choices": [{"message": '))
    with pytest.raises(
        anthropic.InternalServerError if door == "anthropic" else openai.InternalServerError
    ) as raised:
        ask(r, door, model)
    status, kind, message = error_status(door, raised.value)
    assert (status, kind) == (502, "api_error")
    assert f"'{provider}'" in message and "not JSON" in message
    assert len(fake.requests) == 1  # an answer that is not JSON is not asked for again
    serves_next(r)


def test_malformed_json_body_falls_back_when_configured(resilient: Rig) -> None:
    r = resilient
    r.oai.reply(RawReply(b"<html>oops</html>", content_type="text/html"))
    r.ant.reply(JSONReply(anthropic_message("fallback after junk")))
    mark = r.mark()
    assert ask(r, "anthropic", "openai:gpt-4o") == Answer("fallback after junk", "ant", "claude-fb")
    assert len(r.oai.requests) == 1 and len(r.ant.requests) == 1
    assert "falling back to ant:claude-fb" in r.log_since(mark)


# ---------------------------------------------------------------- fallbacks


@pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
def test_openai_primary_falls_back_to_anthropic_native_for_an_anthropic_client(
    resilient: Rig, stream: bool
) -> None:
    r = resilient
    r.oai.reply(error_reply(500, "primary broke"))
    r.ant.reply(ant_ok("from the fallback", stream=stream))
    mark = r.mark()
    answer = ask(r, "anthropic", "openai:gpt-4o", stream=stream)
    assert answer == Answer("from the fallback", "ant", "claude-fb")
    assert keys(r.oai) == [f"Bearer {OAI_KEY}"]
    assert [rec.path for rec in r.ant.requests] == ["/v1/messages"]
    assert keys(r.ant) == [ANT_KEY]  # the fallback's own key, not the client's
    assert models_asked(r.ant) == ["claude-fb"]
    assert r.ant.last.json.get("stream", False) is stream
    assert "primary broke" in r.log_since(mark)
    assert "falling back to ant:claude-fb" in r.log_since(mark)


@pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
def test_openai_primary_falls_back_to_anthropic_native_for_an_openai_client(
    resilient: Rig, stream: bool
) -> None:
    r = resilient
    r.oai.reply(*[error_reply(503)] * 3)
    r.ant.reply(ant_ok("converted fallback", stream=stream))
    answer = ask(r, "openai", "openai:gpt-4o", stream=stream)
    assert answer == Answer("converted fallback", "ant", "claude-fb")
    assert len(r.oai.requests) == 3  # retried first, then failed over
    assert keys(r.ant) == [ANT_KEY]
    sent = r.ant.last.json
    assert sent["model"] == "claude-fb" and sent["messages"][0]["role"] == "user"
    assert "max_tokens" in sent  # a Messages API request, converted from chat.completions


@pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
@pytest.mark.parametrize("door", DOORS)
def test_anthropic_native_primary_falls_back_to_openai_format(
    resilient: Rig, door: str, stream: bool
) -> None:
    r = resilient
    r.ant.reply(*[error_reply(529, "ant overloaded", style="anthropic")] * 3)
    r.oai.reply(ok("openai-format fallback", stream=stream))
    answer = ask(r, door, "ant:claude-main", stream=stream)
    assert answer == Answer("openai-format fallback", "plain", "m2")
    assert models_asked(r.ant) == ["claude-main"] * 3
    assert keys(r.ant) == [ANT_KEY] * 3
    assert keys(r.oai) == [f"Bearer {PLAIN_KEY}"]  # plain's key, not openai's
    assert models_asked(r.oai) == ["m2"]


@pytest.mark.parametrize("door", DOORS)
def test_400_from_the_primary_is_not_failed_over(resilient: Rig, door: str) -> None:
    r = resilient
    r.oai.reply(error_reply(400, "your request is wrong"))
    with pytest.raises(
        anthropic.BadRequestError if door == "anthropic" else openai.BadRequestError
    ) as raised:
        ask(r, door, "openai:gpt-4o")
    assert "your request is wrong" in error_status(door, raised.value)[2]
    assert len(r.oai.requests) == 1
    assert r.ant.requests == []


@pytest.mark.parametrize("door", DOORS)
def test_when_every_alternative_fails_the_client_sees_the_last_failure(
    resilient: Rig, door: str
) -> None:
    r = resilient
    r.oai.reply(error_reply(500, "openai down"), *[error_reply(502, "plain down")] * 3)
    r.ant.reply(*[error_reply(529, "ant overloaded too", style="anthropic")] * 3)
    mark = r.mark()
    with pytest.raises(
        anthropic.OverloadedError if door == "anthropic" else openai.InternalServerError
    ) as raised:
        ask(r, door, "openai:chain")
    status, _, message = error_status(door, raised.value)
    assert status == 529
    assert "ant overloaded too" in message and "'ant'" in message
    assert keys(r.oai) == [f"Bearer {OAI_KEY}"] + [f"Bearer {PLAIN_KEY}"] * 3
    assert models_asked(r.oai) == ["chain", "c2", "c2", "c2"]
    assert models_asked(r.ant) == ["c3"] * 3
    log = r.log_since(mark)
    assert "falling back to plain:c2" in log and "falling back to ant:c3" in log
    serves_next(r)


# ---------------------------------------------------------------- timeouts


@pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
@pytest.mark.parametrize("door", DOORS)
def test_first_byte_timeout_is_504_naming_the_setting_after_a_retry(
    strict: Rig, door: str, stream: bool
) -> None:
    r = strict
    # json: no answer at all; stream: headers at once, the first chunk too late
    slow = SSEReply(stream_of(completion("late")), delays=[5.0]) if stream else Hang(5)
    r.oai.reply(slow, slow)
    with pytest.raises(
        anthropic.GatewayTimeoutError if door == "anthropic" else openai.InternalServerError
    ) as raised:
        ask(r, door, "openai:m", stream=stream)
    status, kind, message = error_status(door, raised.value)
    assert status == 504
    assert kind == ("api_error" if door == "anthropic" else "timeout")
    assert "FIRST_BYTE_TIMEOUT" in message and "'openai'" in message
    assert len(r.oai.requests) == 2  # retried once (MAX_RETRIES=1)
    assert r.oai.wait_for(lambda: r.oai.cancelled == 2)  # both waits were abandoned


@pytest.mark.parametrize("door", DOORS)
def test_first_byte_timeout_falls_back(strict: Rig, door: str) -> None:
    r = strict
    r.oai.reply(Hang(5), Hang(5))
    r.ant.reply(JSONReply(anthropic_message("quick one")))
    assert ask(r, door, "openai:slow") == Answer("quick one", "ant", "quick")
    assert len(r.oai.requests) == 2 and len(r.ant.requests) == 1


@pytest.mark.parametrize("door", DOORS)
def test_idle_timeout_mid_stream_is_an_error_event_naming_it(strict: Rig, door: str) -> None:
    r = strict
    chunks = stream_of(completion("abcdef"), pieces=3)  # role, ab, cd, ef, finish, usage, DONE
    silence = threading.Event()  # after "ab", silent for as long as the gateway waits
    r.oai.reply(SSEReply(chunks, holds={2: silence}))
    with held(silence):
        raw = raw_stream(r, door, "openai:m")
    error = last_error(door, raw)
    assert "IDLE_TIMEOUT" in error["message"] and "'openai'" in error["message"]
    assert error["type"] == ("api_error" if door == "anthropic" else "timeout")
    assert "ab" in raw  # what arrived before the silence was relayed
    assert len(r.oai.requests) == 1  # never retried after bytes reached the client
    serves_next(r)


@pytest.mark.parametrize("door", DOORS)
def test_total_timeout_ends_a_long_stream_naming_it(strict: Rig, door: str) -> None:
    r = strict
    chunks = stream_of(completion("".join(f"piece{i} " for i in range(10))), pieces=10)
    # Time is the subject: a chunk every 0.5 s is never idle for IDLE_TIMEOUT (1 s)
    # but outlasts TOTAL_TIMEOUT (2.5 s) by far (5 s in all).
    r.oai.reply(SSEReply(chunks, delay=0.5, delays=[0]))
    if door == "anthropic":
        with (
            pytest.raises(anthropic.APIStatusError) as raised,
            anthropic_client(r) as client,
            client.messages.stream(model="openai:m", max_tokens=50, messages=ASK) as s,
        ):
            for _ in s.text_stream:
                pass
        message = raised.value.message
    else:
        with pytest.raises(openai.APIError) as oraised, openai_client(r) as oclient:
            for _ in oclient.chat.completions.create(
                model="openai:m",
                messages=ASK,  # type: ignore[arg-type]
                stream=True,
            ):
                pass
        message = oraised.value.message
    assert "TOTAL_TIMEOUT" in message and "'openai'" in message
    assert len(r.oai.requests) == 1


# ---------------------------------------------------------------- raw SSE


def raw_stream(r: Rig, door: str, model: str) -> str:
    """The full SSE text the gateway sent for one streaming request."""
    if door == "anthropic":
        path = "/v1/messages"
        body: dict[str, Any] = {"model": model, "max_tokens": 50, "messages": ASK, "stream": True}
    else:
        path = "/v1/chat/completions"
        body = {"model": model, "messages": ASK, "stream": True}
    with httpx.stream(
        "POST", r.gw.url + path, json=body, timeout=20, headers={"anthropic-version": "2023-06-01"}
    ) as response:
        assert response.status_code == 200, response.read()
        assert response.headers["content-type"].startswith("text/event-stream")
        return response.read().decode()


def frames(text: str) -> list[str]:
    assert text.endswith("\n\n"), text[-200:]
    return [f for f in text.split("\n\n") if f]


def last_error(door: str, text: str) -> dict[str, Any]:
    """The error a stream ended with, after checking it is the door's error frame."""
    last = frames(text)[-1]
    if door == "anthropic":
        event, data = last.split("\n")
        assert event == "event: error"
        payload = json.loads(data.removeprefix("data: "))
        assert payload["type"] == "error"
        assert "event: message_stop" not in text
    else:
        assert last.startswith("data: ") and "\n" not in last
        payload = json.loads(last.removeprefix("data: "))
        assert set(payload) == {"error"}
        assert "data: [DONE]" not in text
    error: dict[str, Any] = payload["error"]
    assert isinstance(error["message"], str) and error["message"]
    return error


def check_anthropic_frames(text: str) -> list[tuple[str, Any]]:
    """Every frame is whole: ``event: X`` then ``data: {JSON of type X}``."""
    out = []
    for frame in frames(text):
        lines = frame.split("\n")
        assert len(lines) == 2, f"broken frame: {frame!r}"
        event, data = lines
        assert event.startswith("event: ") and data.startswith("data: "), frame
        name = event.removeprefix("event: ")
        payload = json.loads(data.removeprefix("data: "))
        assert payload["type"] == name, frame
        out.append((name, payload))
    return out


def check_openai_frames(text: str) -> tuple[list[Any], int]:
    """Every frame is a ``: ping`` comment or one ``data:`` line; (chunks, pings)."""
    chunks, pings = [], 0
    for frame in frames(text):
        if frame == ": ping":
            pings += 1
            continue
        assert frame.startswith("data: ") and "\n" not in frame, frame
        data = frame.removeprefix("data: ")
        if data != "[DONE]":
            chunks.append(json.loads(data))
    return chunks, pings


# ---------------------------------------------------------------- streams cut mid-answer

CUTS = [  # door, model, which fake, wire of the fake
    ("anthropic", "openai:m", "oai"),  # conversion
    ("anthropic", "ant:m", "ant"),  # passthrough
    ("openai", "openai:m", "oai"),  # passthrough
    ("openai", "ant:m", "ant"),  # conversion
]
CUT_IDS = [
    "anthropic-door-conversion",
    "anthropic-door-passthrough",
    "openai-door-passthrough",
    "openai-door-conversion",
]


def _long_stream(
    fake: str,
    *,
    cut_after: int | None = None,
    pieces: int = 6,
    hold: threading.Event | None = None,
) -> SSEReply:
    """``hold``: the stream stops after its first two chunks until that is set."""
    words = [f"w{i} " for i in range(pieces)]
    if fake == "oai":
        chunks = stream_of(completion("".join(words)), pieces=pieces)
    else:
        chunks = anthropic_stream(words)
    return SSEReply(chunks, cut_after=cut_after, holds={} if hold is None else {2: hold})


@contextmanager
def held(*holds: threading.Event) -> Iterator[None]:
    """Set ``holds`` when the block ends (the fakes' held answers then end)."""
    try:
        yield
    finally:
        for hold in holds:
            hold.set()


@pytest.mark.parametrize(("door", "model", "fake_name"), CUTS, ids=CUT_IDS)
def test_stream_cut_mid_answer_ends_with_the_protocol_error_frame(
    resilient: Rig, door: str, model: str, fake_name: str
) -> None:
    r = resilient
    fake = r.oai if fake_name == "oai" else r.ant
    provider = model.split(":")[0]
    fake.reply(_long_stream(fake_name, cut_after=4))
    mark = r.mark()
    raw = raw_stream(r, door, model)
    error = last_error(door, raw)
    assert error["type"] == "api_error"
    assert f"'{provider}'" in error["message"]
    assert "w0" in raw  # the part that came was relayed before the error
    assert len(fake.requests) == 1 and fake.cut == 1  # bytes had gone out: no retry
    lines = warnings(r.log_since(mark))
    assert len(lines) == 1, lines
    assert "ended with an error" in lines[0] and f"'{provider}'" in lines[0]
    no_errors(r.log_since(mark))

    # the official SDKs raise on that frame
    fake.reply(_long_stream(fake_name, cut_after=4))
    if door == "anthropic":
        with (
            pytest.raises(anthropic.APIStatusError) as raised,
            anthropic_client(r) as client,
            client.messages.stream(model=model, max_tokens=50, messages=ASK) as s,
        ):
            s.get_final_message()
        assert f"'{provider}'" in raised.value.message
    else:
        texts: list[str] = []
        with pytest.raises(openai.APIError) as oraised, openai_client(r) as oclient:
            for c in oclient.chat.completions.create(
                model=model,
                messages=ASK,  # type: ignore[arg-type]
                stream=True,
            ):
                texts.extend(ch.delta.content or "" for ch in c.choices)
        assert f"'{provider}'" in oraised.value.message
        assert "".join(texts).startswith("w0")
    serves_next(r)


@pytest.mark.parametrize(("door", "model", "fake_name"), CUTS, ids=CUT_IDS)
def test_stream_cut_inside_a_frame_still_ends_with_a_whole_error_frame(
    resilient: Rig, door: str, model: str, fake_name: str
) -> None:
    """The upstream dies half-way through a frame: the client must not get that
    half frame glued to the error frame (its SSE parser would choke on it)."""
    r = resilient
    fake = r.oai if fake_name == "oai" else r.ant
    whole = _long_stream(fake_name).chunks
    halves = [part for c in whole for part in (c[: len(c) // 2], c[len(c) // 2 :])]
    # 3.5 frames, then dead; the pause makes each half its own write (the subject)
    fake.reply(SSEReply(halves, cut_after=7, delay=0.02))
    raw = raw_stream(r, door, model)
    if door == "anthropic":
        check_anthropic_frames(raw)
    else:
        check_openai_frames(raw)
    assert f"'{model.split(':')[0]}'" in last_error(door, raw)["message"]

    fake.reply(SSEReply(halves, cut_after=7, delay=0.02))
    if door == "anthropic":
        with (
            pytest.raises(anthropic.APIStatusError),
            anthropic_client(r) as client,
            client.messages.stream(model=model, max_tokens=50, messages=ASK) as s,
        ):
            s.get_final_message()
    else:
        with pytest.raises(openai.APIError), openai_client(r) as oclient:
            for _ in oclient.chat.completions.create(model=model, messages=ASK, stream=True):  # type: ignore[arg-type]
                pass
    serves_next(r)


@pytest.mark.parametrize(("door", "model", "fake_name"), CUTS, ids=CUT_IDS)
def test_stream_cut_before_its_first_byte_is_retried(
    resilient: Rig, door: str, model: str, fake_name: str
) -> None:
    r = resilient
    fake = r.oai if fake_name == "oai" else r.ant
    fake.reply(_long_stream(fake_name, cut_after=0), _long_stream(fake_name, pieces=2))
    assert ask(r, door, model, stream=True) == Answer("w0 w1 ", model.split(":")[0], "m")
    assert len(fake.requests) == 2 and fake.cut == 1


# ---------------------------------------------------------------- pings


TEXT = "Hello there, world"


def test_pings_fill_a_silent_conversion_stream_on_the_anthropic_door(resilient: Rig) -> None:
    r = resilient
    chunks = stream_of(completion(TEXT))
    r.oai.reply(SSEReply(chunks))
    baseline = sum(
        1
        for name, _ in check_anthropic_frames(raw_stream(r, "anthropic", "openai:m"))
        if name == "ping"
    )
    r.oai.reply(SSEReply(chunks, delays=[0, 1.0]))  # silent for 1 s after the first chunk
    events = check_anthropic_frames(raw_stream(r, "anthropic", "openai:m"))
    pings = sum(1 for name, _ in events if name == "ping")
    assert pings >= baseline + 2, events
    text = "".join(p["delta"]["text"] for name, p in events if name == "content_block_delta")
    assert text == TEXT
    assert events[-1][0] == "message_stop"

    r.oai.reply(SSEReply(chunks, delays=[0, 1.0]))
    with (
        anthropic_client(r) as client,
        client.messages.stream(model="openai:m", max_tokens=50, messages=ASK) as s,
    ):
        message = s.get_final_message()
    assert [b.text for b in message.content if b.type == "text"] == [TEXT]
    assert message.stop_reason == "end_turn"
    assert message.usage.output_tokens == 20


def test_pings_fill_a_silent_passthrough_stream_on_the_openai_door(resilient: Rig) -> None:
    r = resilient
    chunks = stream_of(completion(TEXT))
    r.oai.reply(SSEReply(chunks, delays=[0, 1.0]))
    raw = raw_stream(r, "openai", "openai:m")
    parsed, pings = check_openai_frames(raw)
    assert pings >= 2
    assert raw.endswith("data: [DONE]\n\n")
    text = "".join(c["choices"][0]["delta"].get("content") or "" for c in parsed if c["choices"])
    assert text == TEXT

    r.oai.reply(SSEReply(chunks, delays=[0, 1.0]))
    assert ask(r, "openai", "openai:m", stream=True).text == TEXT


def test_pings_in_anthropic_passthrough_land_only_between_frames(resilient: Rig) -> None:
    """The upstream pauses once in the middle of a frame and once between two."""
    r = resilient
    frames_up = [f for f in anthropic_stream(["Hel", "lo ", "there"]) if b"ping" not in f]
    delta = frames_up.index(next(f for f in frames_up if b"content_block_delta" in f))
    half = len(frames_up[delta]) // 2
    chunks = [
        *frames_up[:delta],
        frames_up[delta][:half],
        frames_up[delta][half:],
        *frames_up[delta + 1 :],
    ]
    delays = [0.0] * len(chunks)
    delays[delta + 1] = 0.8  # mid-frame: no ping may land inside that frame
    delays[delta + 3] = 0.8  # between frames: pings go here
    r.ant.reply(SSEReply(chunks, delays=delays))
    raw = raw_stream(r, "anthropic", "ant:m")
    events = check_anthropic_frames(raw)  # would fail on a ping inside a frame
    assert sum(1 for name, _ in events if name == "ping") >= 2
    # apart from the pings and the model the client asked for, the bytes are the upstream's
    upstream = b"".join(frames_up).replace(b'"model": "claude-upstream"', b'"model":"ant:m"')
    assert raw.replace('event: ping\ndata: {"type": "ping"}\n\n', "") == upstream.decode()

    r.ant.reply(SSEReply(chunks, delays=delays))
    with (
        anthropic_client(r) as client,
        client.messages.stream(model="ant:m", max_tokens=50, messages=ASK) as s,
    ):
        message = s.get_final_message()
    assert [b.text for b in message.content if b.type == "text"] == ["Hello there"]


# ---------------------------------------------------------------- client disconnects


def test_clients_leaving_mid_stream_cancel_the_upstream_and_free_its_connections(
    resilient: Rig,
) -> None:
    r = resilient
    mark = r.mark()
    rounds = 3
    hold = threading.Event()  # every stream stays open until its client has left
    for _ in range(rounds):
        for _, _, fake_name in CUTS:
            fake = r.oai if fake_name == "oai" else r.ant
            fake.reply(_long_stream(fake_name, pieces=40, hold=hold))
    readers: list[Iterator[bytes]] = []  # held: a dropped iterator closes its response
    with held(hold):
        with ExitStack() as stack:
            for _ in range(rounds):
                for door, model, _ in CUTS:
                    body: dict[str, Any] = {"model": model, "messages": ASK, "stream": True}
                    if door == "anthropic":
                        body["max_tokens"] = 50
                    path = "/v1/messages" if door == "anthropic" else "/v1/chat/completions"
                    client = stack.enter_context(httpx.Client(timeout=20))
                    response = stack.enter_context(
                        client.stream("POST", r.gw.url + path, json=body)
                    )
                    assert response.status_code == 200
                    readers.append(response.iter_raw())
                    assert next(readers[-1])  # the first chunk arrived
            during = {
                "oai": established_connections(r.oai.port),
                "ant": established_connections(r.ant.port),
            }
            assert during["oai"] >= 2 * rounds and during["ant"] >= 2 * rounds, during
        # every client has gone: the gateway gives up its upstream streams
        per_fake = 2 * rounds
        assert r.oai.wait_for(
            lambda: r.oai.cancelled == per_fake and r.ant.cancelled == per_fake
        ), (r.oai.cancelled, r.ant.cancelled)
    for fake, name in ((r.oai, "oai"), (r.ant, "ant")):
        assert fake.wait_for(
            lambda f=fake, n=name: (
                established_connections(f.port) <= during[n] - per_fake
                and established_connections(f.port) <= 4
            ),
        ), (name, established_connections(fake.port), during)
    assert len(r.oai.requests) == per_fake and len(r.ant.requests) == per_fake
    no_errors(r.log_since(mark))
    assert warnings(r.log_since(mark)) == []  # a client leaving is not a fault
    serves_next(r)


def test_200_aborted_streams_leak_no_upstream_connection(resilient: Rig) -> None:
    """200 streams, every path (both doors, conversion and passthrough), each
    abandoned by its client after the first chunk, 25 at a time: every upstream
    request is cancelled and the pools hold no more than their idle keep-alives."""
    import asyncio

    r = resilient
    total, at_once = 200, 25
    hold = threading.Event()  # every stream stays open until its client has left
    for fake, name in ((r.oai, "oai"), (r.ant, "ant")):
        fake.responder = lambda _, n=name: _long_stream(n, pieces=60, hold=hold)
    before = {
        "oai": established_connections(r.oai.port),
        "ant": established_connections(r.ant.port),
    }
    mark = r.mark()

    async def abandon(client: httpx.AsyncClient, n: int) -> None:
        door, model, _ = CUTS[n % len(CUTS)]
        body: dict[str, Any] = {"model": model, "messages": ASK, "stream": True, "max_tokens": 50}
        path = "/v1/messages" if door == "anthropic" else "/v1/chat/completions"
        async with client.stream("POST", path, json=body) as response:
            assert response.status_code == 200
            async for chunk in response.aiter_raw():
                assert chunk
                break  # leave after the first chunk: closing the response drops the connection

    async def run() -> None:
        limits = httpx.Limits(max_connections=at_once)
        async with httpx.AsyncClient(base_url=r.gw.url, timeout=20, limits=limits) as client:
            for start in range(0, total, at_once):
                await asyncio.gather(*(abandon(client, n) for n in range(start, start + at_once)))

    try:
        asyncio.run(run())
        assert r.oai.wait_for(lambda: r.oai.cancelled + r.ant.cancelled == total, timeout=15), (
            r.oai.cancelled,
            r.ant.cancelled,
        )
        for fake, name in ((r.oai, "oai"), (r.ant, "ant")):
            assert fake.wait_for(
                lambda f=fake, n=name: established_connections(f.port) <= before[n] + 4
            ), (name, established_connections(fake.port), before)
    finally:
        hold.set()
        r.oai.responder = r.ant.responder = None
    assert len(r.oai.requests) + len(r.ant.requests) == total  # none retried
    no_errors(r.log_since(mark))
    serves_next(r)


@pytest.mark.parametrize("door", DOORS)
def test_client_leaving_before_the_first_byte_cancels_the_upstream(
    resilient: Rig, door: str
) -> None:
    r = resilient
    r.oai.reply(Hang(10))
    mark = r.mark()
    path = "/v1/messages" if door == "anthropic" else "/v1/chat/completions"
    body = {"model": "openai:m", "max_tokens": 5, "messages": ASK}
    with pytest.raises(httpx.ReadTimeout):
        httpx.post(r.gw.url + path, json=body, timeout=httpx.Timeout(5, read=0.5))
    assert r.oai.wait_for(lambda: r.oai.cancelled == 1)
    assert len(r.oai.requests) == 1  # a cancelled wait is not retried
    assert retry_lines(r.log_since(mark)) == []
    no_errors(r.log_since(mark))
    serves_next(r)


# ---------------------------------------------------------------- a slow first event


@pytest.mark.parametrize("door", ["anthropic", "openai"])
def test_pings_while_waiting_for_a_slow_first_event(resilient: Rig, door: str) -> None:
    """No event for longer than PING_INTERVAL: the stream opens with pings
    (which the SDKs skip) and the answer follows in the same stream."""
    r = resilient
    chunks = stream_of(completion(TEXT))
    # Time is the subject: silent for 5 PING_INTERVALs (0.2 s) before anything.
    r.oai.reply(SSEReply(chunks, delays=[1.0]))
    raw = raw_stream(r, door, "openai:m")
    if door == "anthropic":
        events = check_anthropic_frames(raw)
        names = [name for name, _ in events]
        assert names[:2] == ["ping", "ping"] and "message_start" in names
        assert names[-1] == "message_stop"
    else:
        parsed, pings = check_openai_frames(raw)
        assert raw.startswith(": ping\n\n: ping\n\n") and raw.endswith("data: [DONE]\n\n")
        # the finish chunk came last: the usage chunk the gateway asked for, kept
        # from a client that did not ask for it
        assert pings >= 2 and parsed[-1]["choices"][0]["finish_reason"] == "stop"
    r.oai.reply(SSEReply(chunks, delays=[1.0]))
    assert ask(r, door, "openai:m", stream=True).text == TEXT


@pytest.mark.parametrize("door", ["anthropic", "openai"])
def test_a_failure_after_early_pings_is_the_streams_error_frame(resilient: Rig, door: str) -> None:
    r = resilient
    # Time is the subject: silent for 5 PING_INTERVALs (0.2 s), then the refusal.
    slow_refusal = JSONReply({"error": {"message": "bad request, slowly"}}, status=400, delay=1.0)
    r.oai.reply(slow_refusal)
    raw = raw_stream(r, door, "openai:m")
    assert "bad request, slowly" in raw
    if door == "anthropic":
        events = check_anthropic_frames(raw)
        assert events[0][0] == "ping" and events[-1][0] == "error"
        assert events[-1][1]["error"]["type"] == "invalid_request_error"
    else:
        last = frames(raw)[-1]
        assert last.startswith("data: ") and "[DONE]" not in raw
        assert json.loads(last.removeprefix("data: "))["error"]["message"]
    assert len(r.oai.requests) == 1  # a 400 is not retried, pings or not
