"""The middleware chain: order, per-hook lists, the empty chain, the call's
end on every path, and the settings that build it."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from vdm import ir
from vdm.config import ConfigError, MiddlewareSettings
from vdm.errors import UpstreamUnreachable
from vdm.middleware import FACTORIES, Call, Chain, Middleware, build_chain
from vdm.middleware.gemini import GeminiThoughtSignatures
from vdm.middleware.request_log import RequestLog
from vdm.outcome import Outcome, Reply
from vdm.routing import Route
from vdm.validate import load_settings


class _Provider:
    api_format = "openai"


def started_call(chain: Chain, **parsed: object) -> Call:
    call = Call("req_1", "anthropic", {})
    chain.start(
        call,
        "sonnet",
        Route("p", "m", "sonnet"),
        _Provider(),
        parsed,  # type: ignore[arg-type]
        Outcome(provider="p", model="m"),
    )
    return call


class Recorder(Middleware):
    def __init__(self, name: str, log: list[str]) -> None:
        self.tag, self.log = name, log

    def on_start(self, call: Call) -> None:
        self.log.append(f"{self.tag}.start")

    async def on_request(self, call: Call, request: ir.ChatRequest) -> ir.ChatRequest:
        self.log.append(f"{self.tag}.request")
        request.system.append(ir.TextPart(self.tag))
        return request

    def on_event(self, call: Call, event: ir.Event) -> ir.Event | None:
        self.log.append(f"{self.tag}.event")
        if type(event) is ir.TextDelta:
            return ir.TextDelta(event.index, event.text + self.tag)
        return event

    def on_response(self, call: Call, outcome: Outcome) -> None:
        self.log.append(f"{self.tag}.response:{call.status}:{outcome.error}")


class OnlyEvents(Middleware):
    name = "only-events"

    def on_event(self, call: Call, event: ir.Event) -> ir.Event | None:
        return None if type(event) is ir.Ping else event


async def _events(*events: ir.Event) -> AsyncIterator[ir.Event]:
    for event in events:
        yield event


async def _collect(first: ir.Event, rest: AsyncIterator[ir.Event]) -> list[ir.Event]:
    return [first] + [e async for e in rest]


def test_empty_chain_is_falsy_and_leaves_events_untouched() -> None:
    chain = Chain()
    assert not chain
    assert not build_chain(MiddlewareSettings())
    source = _events(ir.Ping())
    first = ir.Ping()
    got_first, got_rest = asyncio.run(chain.events(Call("r", "openai", {}), first, source))
    assert got_first is first and got_rest is source


def test_hooks_run_in_configured_order() -> None:
    log: list[str] = []
    chain = Chain([Recorder("a", log), Recorder("b", log)])
    assert chain
    call = started_call(chain, messages=[{}], tools=[{}, {}], stream=True)
    assert (call.messages, call.tools, call.stream, call.api_format) == (1, 2, True, "openai")
    request = asyncio.run(chain.request(call, ir.ChatRequest("m", [])))
    assert [p.text for p in request.system] == ["a", "b"]

    async def run() -> list[ir.Event]:
        first, rest = await chain.events(call, ir.TextStart(0), _events(ir.TextDelta(0, "x")))
        return await _collect(first, rest)

    events = asyncio.run(run())
    assert events == [ir.TextStart(0), ir.TextDelta(0, "xab")]
    chain.finish(call)
    assert log == [
        "a.start",
        "b.start",
        "a.request",
        "b.request",
        "a.event",
        "b.event",
        "a.event",
        "b.event",
        "a.response:0:None",
        "b.response:0:None",
    ]


def test_only_implemented_hooks_are_listed_and_events_may_be_dropped() -> None:
    chain = Chain([OnlyEvents()])
    assert (
        len(chain.on_start),
        len(chain.on_request),
        len(chain.on_event),
        len(chain.on_response),
    ) == (0, 0, 1, 0)
    call = started_call(chain)

    async def run() -> list[ir.Event]:
        first, rest = await chain.events(
            call, ir.MessageStart("id", "m", ir.Usage()), _events(ir.Ping(), ir.MessageStop())
        )
        return await _collect(first, rest)

    assert [type(e) for e in asyncio.run(run())] == [ir.MessageStart, ir.MessageStop]


def test_real_middleware_implement_only_what_they_need() -> None:
    chain = Chain([RequestLog(), GeminiThoughtSignatures()])
    assert [n for n, _ in chain.on_start] == ["request-log"]
    assert [n for n, _ in chain.on_response] == ["request-log"]
    assert [n for n, _ in chain.on_request] == ["gemini-thought-signatures"]
    assert len(chain.on_event) == 1


def test_run_ends_the_call_on_a_body_on_an_error_and_at_the_end_of_a_stream() -> None:
    log: list[str] = []
    chain = Chain([Recorder("a", log)])

    async def body() -> Reply:
        return Reply(200, {}, body=b"{}")

    async def failing() -> Reply:
        raise UpstreamUnreachable("provider 'p' is unreachable", provider="p")

    async def streaming() -> Reply:
        async def chunks() -> AsyncIterator[bytes]:
            yield b"a"
            yield b"b"

        return Reply(200, {}, stream=chunks())

    call = started_call(chain)
    asyncio.run(chain.run(call, body()))
    assert log[-1] == "a.response:200:None"
    assert call.first_event is not None

    call = started_call(chain)
    with pytest.raises(UpstreamUnreachable):
        asyncio.run(chain.run(call, failing()))
    assert log[-1] == "a.response:502:provider 'p' is unreachable"

    call = started_call(chain)

    async def consume() -> bytes:
        reply = await chain.run(call, streaming())
        assert reply.stream is not None
        before = len(log)
        data = b"".join([c async for c in reply.stream])
        assert len(log) == before + 1  # on_response ran when the stream ended
        return data

    assert asyncio.run(consume()) == b"ab"
    assert log[-1] == "a.response:200:None" and not call.interrupted


def test_a_call_that_never_started_is_not_reported() -> None:
    log: list[str] = []
    chain = Chain([Recorder("a", log)])

    async def rejected() -> Reply:
        raise ValueError("before routing")

    with pytest.raises(ValueError):
        asyncio.run(chain.run(Call("r", "anthropic", {}), rejected()))
    assert log == []


def test_observer_failures_are_logged_not_raised(caplog: pytest.LogCaptureFixture) -> None:
    class Broken(Middleware):
        name = "broken"

        def on_start(self, call: Call) -> None:
            raise RuntimeError("start")

        def on_response(self, call: Call, outcome: Outcome) -> None:
            raise RuntimeError("end")

    chain = Chain([Broken()])
    with caplog.at_level(logging.ERROR, logger="vdm.middleware"):
        chain.finish(started_call(chain))
    assert "broken failed in on_start" in caplog.text
    assert "broken failed in on_response" in caplog.text


# ---------------------------------------------------------------- settings


@pytest.fixture
def dirs(tmp_path: Path) -> tuple[Path, Path]:
    home, cwd = tmp_path / "home", tmp_path / "work"
    home.mkdir()
    cwd.mkdir()
    return home, cwd


def _load(dirs: tuple[Path, Path], **env: str) -> MiddlewareSettings:
    home, cwd = dirs
    return load_settings(
        env={"HOME": str(home), "XDG_CONFIG_HOME": str(home / "c"), **env}, cwd=cwd
    ).middleware


def _problems(dirs: tuple[Path, Path], **env: str) -> str:
    with pytest.raises(ConfigError) as raised:
        _load(dirs, **env)
    return str(raised.value)


def test_nothing_configured_means_no_middleware(dirs: tuple[Path, Path]) -> None:
    assert _load(dirs) == MiddlewareSettings()


def test_env_order_is_the_chain_order(dirs: tuple[Path, Path]) -> None:
    settings = _load(dirs, MIDDLEWARE=" gemini-thought-signatures , request-log,")
    assert settings.enabled == ("gemini-thought-signatures", "request-log")
    assert build_chain(settings).names == ["gemini-thought-signatures", "request-log"]


def test_toml_list_and_env_override(dirs: tuple[Path, Path]) -> None:
    (dirs[1] / "vdm.toml").write_text(
        '[middleware]\nenabled = ["request-log", "gemini-thought-signatures"]\n'
        "thought-signature-cache-ttl = 60\nthought-signature-max-cache-size = 5\n"
    )
    settings = _load(dirs)
    assert settings == MiddlewareSettings(("request-log", "gemini-thought-signatures"), 60.0, 5)
    assert _load(dirs, MIDDLEWARE="request-log").enabled == ("request-log",)
    env = _load(dirs, THOUGHT_SIGNATURE_CACHE_TTL="7", THOUGHT_SIGNATURE_MAX_CACHE_SIZE="9")
    assert (env.thought_signature_cache_ttl, env.thought_signature_max_cache_size) == (7.0, 9)


def test_gemini_flag_appends_when_not_listed(dirs: tuple[Path, Path]) -> None:
    assert _load(dirs, GEMINI_THOUGHT_SIGNATURES_ENABLED="true").enabled == (
        "gemini-thought-signatures",
    )
    assert _load(dirs, MIDDLEWARE="request-log", GEMINI_THOUGHT_SIGNATURES_ENABLED="1").enabled == (
        "request-log",
        "gemini-thought-signatures",
    )
    assert _load(
        dirs,
        MIDDLEWARE="gemini-thought-signatures,request-log",
        GEMINI_THOUGHT_SIGNATURES_ENABLED="true",
    ).enabled == ("gemini-thought-signatures", "request-log")
    assert _load(dirs, GEMINI_THOUGHT_SIGNATURES_ENABLED="false").enabled == ()
    assert "GEMINI_THOUGHT_SIGNATURES_ENABLED" in _problems(
        dirs, GEMINI_THOUGHT_SIGNATURES_ENABLED="maybe"
    )


def test_unknown_name_from_env_names_the_variable_and_the_known_ones(
    dirs: tuple[Path, Path],
) -> None:
    message = _problems(dirs, MIDDLEWARE="request-log,nope")
    assert "environment variable MIDDLEWARE" in message and "'nope'" in message
    for known in FACTORIES:
        assert known in message


def test_unknown_name_from_toml_names_file_and_key(dirs: tuple[Path, Path]) -> None:
    path = dirs[1] / "vdm.toml"
    path.write_text('[middleware]\nenabled = ["request-logs"]\n')
    message = _problems(dirs)
    assert f"{path}: middleware.enabled" in message and "request-log" in message


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ('[middleware]\nenabled = "request-log"\n', "expected a list"),
        ("[middleware]\ncolour = 1\n", "unknown key 'middleware.colour'"),
        ("middleware = 3\n", "'middleware' must be a table"),
        (
            "[middleware]\nthought-signature-cache-ttl = -1\n",
            "middleware.thought-signature-cache-ttl",
        ),
        (
            "[middleware]\nthought-signature-max-cache-size = 0\n",
            "middleware.thought-signature-max-cache-size",
        ),
    ],
)
def test_bad_toml_values(dirs: tuple[Path, Path], text: str, needle: str) -> None:
    (dirs[1] / "vdm.toml").write_text(text)
    assert needle in _problems(dirs)


def test_every_middleware_problem_is_reported_at_once(dirs: tuple[Path, Path]) -> None:
    message = _problems(
        dirs,
        MIDDLEWARE="a,request-log,request-log",
        THOUGHT_SIGNATURE_CACHE_TTL="soon",
        THOUGHT_SIGNATURE_MAX_CACHE_SIZE="many",
    )
    for needle in (
        "'a'",
        "listed twice",
        "THOUGHT_SIGNATURE_CACHE_TTL",
        "THOUGHT_SIGNATURE_MAX_CACHE_SIZE",
    ):
        assert needle in message
