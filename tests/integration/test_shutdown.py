"""Graceful shutdown of the real gateway process (SIGTERM, drain, second signal)."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx

from tests.support.fakes import FakeUpstream, Hang, SSEReply, chunk, sse
from tests.support.gateway import Gateway, run_gateway, worker_pids
from tests.support.waiting import BOUND, wait_for

ASK = [{"role": "user", "content": "hi"}]
TEN = "".join(f"w{i} " for i in range(10))  # a held stream's text up to its second hold


def held_stream(pieces: int, *holds: threading.Event) -> SSEReply:
    """``w0 … w{pieces-1}``, held after ``w0`` until the first of ``holds`` is
    set, after ``w9`` until the second: in flight for as long as the test needs."""
    body = [chunk({"role": "assistant", "content": ""})]
    body += [chunk({"content": f"w{i} "}) for i in range(pieces)]
    body += [
        chunk({}, finish="stop"),
        chunk(None, usage={"prompt_tokens": 1, "completion_tokens": pieces}),
    ]
    return SSEReply(sse(*body), holds=dict(zip((2, 11), holds, strict=False)))


@contextlib.contextmanager
def released(*holds: threading.Event) -> Iterator[None]:
    """Set ``holds`` when the block ends, however it ends (the fake's waits end)."""
    try:
        yield
    finally:
        for hold in holds:
            hold.set()


# Logged by a process once it has closed its listening socket and waits for
# the requests in flight (uvicorn's drain).
DRAINING = "Waiting for connections to close"
# Logged by a worker when it exits (the idle one of two exits at once when told
# to stop: then the supervisor has passed the signal on to every worker).
EXITED = "Finished server process ["


class Reader(threading.Thread):
    """Reads one streamed /v1/messages answer in the background."""

    def __init__(self, gateway: Gateway, *, stream: bool = True) -> None:
        super().__init__(daemon=True)
        self.url = gateway.url
        self.stream = stream
        self.first = threading.Event()
        self.events: list[tuple[str, Any]] = []
        self.status = 0
        self.body: Any = None
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            request = {"model": "m", "max_tokens": 50, "messages": ASK, "stream": self.stream}
            with httpx.stream(
                "POST", self.url + "/v1/messages", json=request, timeout=30
            ) as response:
                self.status = response.status_code
                if not self.stream:
                    self.body = json.loads(response.read())
                    return
                name = ""
                for line in response.iter_lines():
                    if line.startswith("event: "):
                        name = line[7:]
                    elif line.startswith("data: "):
                        self.events.append((name, json.loads(line[6:])))
                        if name == "content_block_delta":
                            self.first.set()
        except BaseException as exc:  # recorded for the test to see
            self.error = exc

    def wait_text(self, text: str) -> None:
        """Until the answer's text so far is ``text`` (or the stream ended)."""
        wait_for(lambda: self.text() == text or not self.is_alive())
        assert self.text() == text, (self.text(), self.events[-1:])

    def names(self) -> list[str]:
        return [name for name, _ in self.events]

    def text(self) -> str:
        return "".join(
            d["delta"].get("text", "") for n, d in self.events if n == "content_block_delta"
        )


def env(fake: FakeUpstream, **extra: str) -> dict[str, str]:
    return {"OPENAI_API_KEY": "k", "OPENAI_BASE_URL": fake.url + "/v1", **extra}


def refused(url: str) -> bool:
    host, port = url.removeprefix("http://").split(":")
    try:
        with socket.create_connection((host, int(port)), timeout=1):
            return False
    except OSError:
        return True


def test_sigterm_lets_a_stream_finish_then_exits_0(
    fake_openai: FakeUpstream, tmp_path: Path
) -> None:
    hold = threading.Event()
    fake_openai.reply(held_stream(20, hold))
    with (
        released(hold),
        run_gateway(env(fake_openai, SHUTDOWN_TIMEOUT="20"), tmp_path) as gateway,
    ):
        reader = Reader(gateway)
        reader.start()
        assert reader.first.wait(BOUND)
        gateway.process.send_signal(signal.SIGTERM)
        gateway.wait_log(DRAINING)
        assert refused(gateway.url), "no new connections once draining"
        assert reader.is_alive() and reader.text() == "w0 "
        hold.set()  # the rest of the stream comes during the drain
        reader.join(BOUND)
        assert gateway.process.wait(BOUND) == 0
    assert reader.error is None
    assert reader.names()[-1] == "message_stop" and "error" not in reader.names()
    assert reader.text() == "".join(f"w{i} " for i in range(20))


def test_drain_timeout_ends_the_stream_with_an_error_event(
    fake_openai: FakeUpstream, tmp_path: Path
) -> None:
    hold = threading.Event()  # set only at the end: the stream outlasts any drain
    fake_openai.reply(held_stream(100, hold))
    with (
        released(hold),
        run_gateway(env(fake_openai, SHUTDOWN_TIMEOUT="1"), tmp_path) as gateway,
    ):
        reader = Reader(gateway)
        reader.start()
        assert reader.first.wait(BOUND)
        started = time.monotonic()
        gateway.process.send_signal(signal.SIGTERM)
        reader.join(BOUND)
        assert gateway.process.wait(BOUND) == 0
        took = time.monotonic() - started
    assert reader.error is None
    name, data = reader.events[-1]
    assert name == "error"
    assert data["error"]["type"] == "overloaded_error"
    assert "shutting down" in data["error"]["message"]
    assert "message_stop" not in reader.names()
    # The drain's timeout is the subject: it must have passed, and ended the
    # stream long before the held one would have ended by itself (60 s).
    assert 0.8 < took < BOUND


def test_a_second_sigterm_ends_the_rest_at_once(fake_openai: FakeUpstream, tmp_path: Path) -> None:
    first, second = threading.Event(), threading.Event()
    fake_openai.reply(held_stream(200, first, second))
    with (
        released(first, second),
        run_gateway(env(fake_openai, SHUTDOWN_TIMEOUT="60"), tmp_path) as gateway,
    ):
        reader = Reader(gateway)
        reader.start()
        assert reader.first.wait(BOUND)
        gateway.process.send_signal(signal.SIGTERM)
        gateway.wait_log(DRAINING)
        first.set()  # the stream goes on while draining
        reader.wait_text(TEN)
        assert reader.is_alive(), "still draining after the first signal"
        started = time.monotonic()
        gateway.process.send_signal(signal.SIGTERM)
        reader.join(BOUND)
        assert not reader.is_alive(), "the second signal did not end the stream"
        assert gateway.process.wait(BOUND) == 0
        assert time.monotonic() - started < 5  # at once, not after the 60 s drain
    assert reader.events[-1][0] == "error"


def test_a_waiting_request_gets_a_503_when_the_drain_ends(
    fake_openai: FakeUpstream, tmp_path: Path
) -> None:
    fake_openai.reply(Hang(30))
    with run_gateway(env(fake_openai, SHUTDOWN_TIMEOUT="1"), tmp_path) as gateway:
        reader = Reader(gateway, stream=False)
        reader.start()
        assert fake_openai.wait_for(lambda: len(fake_openai.requests) == 1)
        gateway.process.send_signal(signal.SIGTERM)
        reader.join(15)
        assert gateway.process.wait(15) == 0
    assert reader.status == 503
    assert reader.body["error"]["type"] == "overloaded_error"


def test_workers_end_a_stream_at_once_on_a_second_signal(
    fake_openai: FakeUpstream, tmp_path: Path
) -> None:
    """``--workers N`` workers run the gateway's own server, as one process does:
    a second signal ends what is left with an error event, not after the drain."""
    first, second = threading.Event(), threading.Event()
    fake_openai.reply(held_stream(200, first, second))
    with (
        released(first, second),
        run_gateway(
            env(fake_openai, SHUTDOWN_TIMEOUT="60"), tmp_path, args=("--workers", "2")
        ) as gateway,
    ):
        workers = worker_pids(gateway.process.pid, 2)
        assert len(workers) == 2, workers
        reader = Reader(gateway)
        reader.start()
        assert reader.first.wait(BOUND)
        gateway.process.send_signal(signal.SIGTERM)  # the supervisor signals its workers
        gateway.wait_log(DRAINING)
        gateway.wait_log(EXITED)
        first.set()  # the stream goes on while draining
        reader.wait_text(TEN)
        assert reader.is_alive(), "still draining after the first signal"
        started = time.monotonic()
        for pid in workers:
            with contextlib.suppress(ProcessLookupError):  # the idle one is gone
                os.kill(pid, signal.SIGTERM)
        reader.join(BOUND)
        assert not reader.is_alive(), "the second signal did not end the stream"
        assert time.monotonic() - started < 5  # at once, not after the 60 s drain
    assert reader.events[-1][0] == "error"
    assert reader.events[-1][1]["error"]["type"] == "overloaded_error"


def test_ctrl_c_on_workers_drains_a_stream(fake_openai: FakeUpstream, tmp_path: Path) -> None:
    """Ctrl-C in a terminal signals the supervisor and its workers together, and the
    supervisor then signals each worker: that must not count as a second signal."""
    hold = threading.Event()
    fake_openai.reply(held_stream(20, hold))
    with (
        released(hold),
        run_gateway(
            env(fake_openai, SHUTDOWN_TIMEOUT="20"),
            tmp_path,
            args=("--workers", "2"),
            new_session=True,
        ) as gateway,
    ):
        assert len(worker_pids(gateway.process.pid, 2)) == 2
        reader = Reader(gateway)
        reader.start()
        assert reader.first.wait(BOUND)
        os.killpg(gateway.process.pid, signal.SIGINT)
        gateway.wait_log(DRAINING)
        gateway.wait_log(EXITED)  # every worker has had the supervisor's signal too
        hold.set()
        reader.join(BOUND)
        assert gateway.process.wait(BOUND) == 0
    assert reader.error is None
    assert reader.names()[-1] == "message_stop" and "error" not in reader.names()
    assert reader.text() == "".join(f"w{i} " for i in range(20))


def test_a_second_ctrl_c_on_workers_ends_the_rest_at_once(
    fake_openai: FakeUpstream, tmp_path: Path
) -> None:
    first, second = threading.Event(), threading.Event()
    fake_openai.reply(held_stream(200, first, second))
    with (
        released(first, second),
        run_gateway(
            env(fake_openai, SHUTDOWN_TIMEOUT="60"),
            tmp_path,
            args=("--workers", "2"),
            new_session=True,
        ) as gateway,
    ):
        assert len(worker_pids(gateway.process.pid, 2)) == 2
        reader = Reader(gateway)
        reader.start()
        assert reader.first.wait(BOUND)
        os.killpg(gateway.process.pid, signal.SIGINT)
        gateway.wait_log(DRAINING)
        gateway.wait_log(EXITED)  # every worker has had the supervisor's signal too
        first.set()  # the stream goes on while draining
        reader.wait_text(TEN)
        assert reader.is_alive(), "still draining after the first Ctrl-C"
        started = time.monotonic()
        os.killpg(gateway.process.pid, signal.SIGINT)
        reader.join(BOUND)
        assert not reader.is_alive(), "the second Ctrl-C did not end the stream"
        assert gateway.process.wait(BOUND) == 0
        assert time.monotonic() - started < 5  # at once, not after the 60 s drain
    assert reader.events[-1][0] == "error"
