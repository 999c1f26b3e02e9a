"""Graceful shutdown of the real gateway process (SIGTERM, drain, second signal)."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import threading
import time
from pathlib import Path
from typing import Any

import httpx

from tests.support.fakes import FakeUpstream, Hang, SSEReply, chunk, sse
from tests.support.gateway import Gateway, run_gateway, worker_pids

ASK = [{"role": "user", "content": "hi"}]


def slow_stream(pieces: int, delay: float) -> SSEReply:
    body = [chunk({"role": "assistant", "content": ""})]
    body += [chunk({"content": f"w{i} "}) for i in range(pieces)]
    body += [
        chunk({}, finish="stop"),
        chunk(None, usage={"prompt_tokens": 1, "completion_tokens": pieces}),
    ]
    return SSEReply(sse(*body), delay=delay)


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
    fake_openai.reply(slow_stream(20, 0.1))
    with run_gateway(env(fake_openai, SHUTDOWN_TIMEOUT="20"), tmp_path) as gateway:
        reader = Reader(gateway)
        reader.start()
        assert reader.first.wait(10)
        gateway.process.send_signal(signal.SIGTERM)
        time.sleep(0.5)
        assert refused(gateway.url), "no new connections once draining"
        reader.join(20)
        assert gateway.process.wait(20) == 0
    assert reader.error is None
    assert reader.names()[-1] == "message_stop" and "error" not in reader.names()
    assert reader.text() == "".join(f"w{i} " for i in range(20))


def test_drain_timeout_ends_the_stream_with_an_error_event(
    fake_openai: FakeUpstream, tmp_path: Path
) -> None:
    fake_openai.reply(slow_stream(100, 0.1))
    with run_gateway(env(fake_openai, SHUTDOWN_TIMEOUT="1"), tmp_path) as gateway:
        reader = Reader(gateway)
        reader.start()
        assert reader.first.wait(10)
        started = time.monotonic()
        gateway.process.send_signal(signal.SIGTERM)
        reader.join(15)
        assert gateway.process.wait(15) == 0
        took = time.monotonic() - started
    assert reader.error is None
    name, data = reader.events[-1]
    assert name == "error"
    assert data["error"]["type"] == "overloaded_error"
    assert "shutting down" in data["error"]["message"]
    assert "message_stop" not in reader.names()
    assert 0.8 < took < 6


def test_a_second_sigterm_ends_the_rest_at_once(fake_openai: FakeUpstream, tmp_path: Path) -> None:
    fake_openai.reply(slow_stream(200, 0.1))
    with run_gateway(env(fake_openai, SHUTDOWN_TIMEOUT="60"), tmp_path) as gateway:
        reader = Reader(gateway)
        reader.start()
        assert reader.first.wait(10)
        gateway.process.send_signal(signal.SIGTERM)
        time.sleep(0.5)
        assert reader.is_alive(), "still draining after the first signal"
        started = time.monotonic()
        gateway.process.send_signal(signal.SIGTERM)
        reader.join(10)
        assert gateway.process.wait(10) == 0
        assert time.monotonic() - started < 5
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
    fake_openai.reply(slow_stream(200, 0.1))
    with run_gateway(
        env(fake_openai, SHUTDOWN_TIMEOUT="60"), tmp_path, args=("--workers", "2")
    ) as gateway:
        workers = worker_pids(gateway.process.pid, 2)
        assert len(workers) == 2, workers
        reader = Reader(gateway)
        reader.start()
        assert reader.first.wait(10)
        gateway.process.send_signal(signal.SIGTERM)  # the supervisor signals its workers
        time.sleep(0.5)
        assert reader.is_alive(), "still draining after the first signal"
        started = time.monotonic()
        for pid in workers:
            with contextlib.suppress(ProcessLookupError):  # the idle one may be gone
                os.kill(pid, signal.SIGTERM)
        reader.join(10)
        assert not reader.is_alive(), "the second signal did not end the stream"
        assert time.monotonic() - started < 5
    assert reader.events[-1][0] == "error"
    assert reader.events[-1][1]["error"]["type"] == "overloaded_error"


def test_ctrl_c_on_workers_drains_a_stream(fake_openai: FakeUpstream, tmp_path: Path) -> None:
    """Ctrl-C in a terminal signals the supervisor and its workers together, and the
    supervisor then signals each worker: that must not count as a second signal."""
    fake_openai.reply(slow_stream(20, 0.1))
    with run_gateway(
        env(fake_openai, SHUTDOWN_TIMEOUT="20"),
        tmp_path,
        args=("--workers", "2"),
        new_session=True,
    ) as gateway:
        assert len(worker_pids(gateway.process.pid, 2)) == 2
        reader = Reader(gateway)
        reader.start()
        assert reader.first.wait(10)
        os.killpg(gateway.process.pid, signal.SIGINT)
        reader.join(20)
        assert gateway.process.wait(20) == 0
    assert reader.error is None
    assert reader.names()[-1] == "message_stop" and "error" not in reader.names()
    assert reader.text() == "".join(f"w{i} " for i in range(20))


def test_a_second_ctrl_c_on_workers_ends_the_rest_at_once(
    fake_openai: FakeUpstream, tmp_path: Path
) -> None:
    fake_openai.reply(slow_stream(200, 0.1))
    with run_gateway(
        env(fake_openai, SHUTDOWN_TIMEOUT="60"),
        tmp_path,
        args=("--workers", "2"),
        new_session=True,
    ) as gateway:
        assert len(worker_pids(gateway.process.pid, 2)) == 2
        reader = Reader(gateway)
        reader.start()
        assert reader.first.wait(10)
        os.killpg(gateway.process.pid, signal.SIGINT)
        time.sleep(1.0)
        assert reader.is_alive(), "still draining after the first Ctrl-C"
        started = time.monotonic()
        os.killpg(gateway.process.pid, signal.SIGINT)
        reader.join(10)
        assert not reader.is_alive(), "the second Ctrl-C did not end the stream"
        assert gateway.process.wait(10) == 0
        assert time.monotonic() - started < 5
    assert reader.events[-1][0] == "error"
