"""A hostile client against a real gateway process, on loopback.

Each attack must end in its 4xx (or 503) while the gateway's memory and its
``/live`` answers stay bounded: a thread asks ``/live`` every 50 ms and reads
the process's RSS throughout each attack (:func:`bounded`).  Connection
attacks use raw sockets; the doors are driven by the official SDKs.  Every
wait is bounded.
"""

from __future__ import annotations

import http.client
import json
import random
import socket
import string
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anthropic
import openai
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.support.fakes import FakeUpstream, unread_requests
from tests.support.gateway import Gateway, run_gateway
from tests.support.grpc_server import GrpcServer, bearer, execute_request
from tests.support.waiting import wait_for

KEY = "hostile-test-gateway-key"
JWT_SECRET = "s" * 40
RSS_BOUND = 60 * 1024 * 1024  # growth allowed during one attack
LIVE_BOUND = 2.0  # seconds for one /live answer on a busy test machine
ASK = [{"role": "user", "content": "hi"}]


# ---------------------------------------------------------------- watching


def rss(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


def live_seconds(gateway: Gateway) -> float:
    started = time.perf_counter()
    with urllib.request.urlopen(gateway.url + "/live", timeout=LIVE_BOUND * 2) as response:
        assert response.status == 200
    return time.perf_counter() - started


@dataclass
class Watch:
    rss_before: int
    rss_max: int = 0
    live: list[float] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)


@contextmanager
def bounded(gateway: Gateway, *, probe: bool = True) -> Iterator[Watch]:
    """Ask /live every 50 ms and read the RSS while the block runs; then check both.
    (``probe=False`` where the test holds every connection slot and asks /live itself.)"""
    pid = gateway.process.pid
    watch = Watch(rss(pid))
    done = threading.Event()

    def poll() -> None:
        while not done.is_set():
            watch.rss_max = max(watch.rss_max, rss(pid))
            if probe:
                try:
                    watch.live.append(live_seconds(gateway))
                except OSError as exc:
                    watch.failures.append(repr(exc))
            done.wait(0.05)

    thread = threading.Thread(target=poll, daemon=True)
    thread.start()
    try:
        yield watch
    finally:
        done.set()
        thread.join(10)
    grew = watch.rss_max - watch.rss_before
    slowest = max(watch.live, default=0.0)
    print(  # the figures docs/security-limits.md quotes (pytest -s)
        f"RSS {watch.rss_before / 2**20:.0f} -> max {watch.rss_max / 2**20:.0f} MiB; "
        f"/live max {slowest * 1000:.0f} ms over {len(watch.live)} probes"
    )
    assert not watch.failures, watch.failures[:3]
    assert not probe or (watch.live and slowest < LIVE_BOUND)
    assert grew < RSS_BOUND, f"RSS grew by {grew / 2**20:.0f} MiB"


def connect(gateway: Gateway, timeout: float = 10.0) -> socket.socket:
    port = int(gateway.url.rsplit(":", 1)[1])
    sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    return sock


def read_until_closed(sock: socket.socket, limit: int = 1 << 16) -> bytes:
    """What the gateway sends until it closes the connection (bounded by the timeout)."""
    out = b""
    try:
        while len(out) < limit:
            data = sock.recv(65536)
            if not data:
                break
            out += data
    except (TimeoutError, ConnectionResetError):
        pass
    return out


def status_of(response: bytes) -> int | None:
    if not response.startswith(b"HTTP/1.1 "):
        return None
    return int(response[9:12])


def body_of(response: bytes) -> Any:
    return json.loads(response.split(b"\r\n\r\n", 1)[1])


def request(
    gateway: Gateway,
    method: str,
    path: str,
    body: bytes | None = None,
    headers: dict[str, str] | None = None,
) -> tuple[int, dict[str, str], bytes]:
    req = urllib.request.Request(
        gateway.url + path,
        data=body,
        method=method,
        headers={"x-api-key": KEY, "content-type": "application/json", **(headers or {})},
    )
    try:
        with urllib.request.urlopen(req, timeout=15) as response:
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), exc.read()


# ---------------------------------------------------------------- gateways


@pytest.fixture(scope="module")
def edge(fake_openai: FakeUpstream, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    """Short head and body timeouts, a proxy key and JWTs, echo by default, and
    ``fake`` (OpenAI format) for the passthrough."""
    env = {
        "PROXY_API_KEY": KEY,
        "VDM_JWT_SECRET": JWT_SECRET,
        "FAKE_API_KEY": "sk-fake",
        "FAKE_BASE_URL": fake_openai.url + "/v1",
        "VDM_DEFAULT_PROVIDER": "echo",
        "HEADER_TIMEOUT": "1",
        "BODY_TIMEOUT": "1",
        "METRICS_MODELS": "echo:keep-me",
        "MAX_RETRIES": "0",
    }
    with run_gateway(env, tmp_path_factory.mktemp("edge")) as gateway:
        yield gateway


CAP = 8


@pytest.fixture(scope="module")
def crowded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    """MAX_CONNECTIONS=8, and time enough for the heads it is made to wait for."""
    env = {"MAX_CONNECTIONS": str(CAP), "HEADER_TIMEOUT": "30"}
    with run_gateway(env, tmp_path_factory.mktemp("crowded")) as gateway:
        yield gateway


# ---------------------------------------------------------------- connections


def test_heads_over_the_size_limit_are_431_and_cost_no_memory(edge: Gateway) -> None:
    """10 connections each sending a 4 MB header: each gets 431 (MAX_HEADER_SIZE,
    64 KiB by default) long before it is sent, and the RSS does not follow."""
    piece = b"a" * 65536
    with bounded(edge):
        socks = [connect(edge) for _ in range(10)]
        for sock in socks:
            sock.sendall(b"GET /live HTTP/1.1\r\nHost: x\r\nX-Big: ")
        for _ in range(64):  # 4 MiB each, while the gateway still reads
            for sock in socks:
                with suppress(OSError):
                    sock.sendall(piece)
        answers = [read_until_closed(sock) for sock in socks]
        for sock in socks:
            sock.close()
    for answer in answers:
        assert status_of(answer) == 431, answer[:200]
        assert "MAX_HEADER_SIZE" in body_of(answer)["error"]["message"]


def test_silent_and_slow_heads_are_closed_after_the_header_timeout(edge: Gateway) -> None:
    """100 connections that send nothing and 100 that send half a head: all are
    closed within HEADER_TIMEOUT (1 s here), the second ones with a 408."""
    with bounded(edge):
        silent = [connect(edge) for _ in range(100)]
        slow = [connect(edge) for _ in range(100)]
        for sock in slow:
            sock.sendall(b"POST /v1/messages HTTP/1.1\r\nHost: x\r\ncontent-")
        started = time.monotonic()
        silent_answers = [read_until_closed(sock) for sock in silent]
        slow_answers = [read_until_closed(sock) for sock in slow]
        took = time.monotonic() - started
        for sock in (*silent, *slow):
            sock.close()
    assert all(answer == b"" for answer in silent_answers)
    assert all(status_of(answer) == 408 for answer in slow_answers), slow_answers[0][:200]
    assert "HEADER_TIMEOUT" in body_of(slow_answers[0])["error"]["message"]
    assert took < 8  # not held: 1 s each, in parallel, on a busy machine


def test_a_body_trickled_a_byte_at_a_time_is_a_408(edge: Gateway) -> None:
    """A body that brings less than BODY_MIN_RATE x BODY_TIMEOUT bytes in a
    window is ended with 408, however long it would keep trickling."""
    with bounded(edge):
        sock = connect(edge)
        sock.sendall(
            f"POST /v1/messages HTTP/1.1\r\nHost: x\r\nx-api-key: {KEY}\r\n"
            "content-type: application/json\r\ncontent-length: 1000\r\n\r\n{".encode()
        )
        sock.settimeout(0.3)
        started = time.monotonic()
        answer = b""
        while time.monotonic() - started < 10 and not answer:
            try:
                sock.sendall(b" ")
                answer = sock.recv(65536)
            except TimeoutError:
                continue
            except OSError:
                break
        sock.close()
    assert status_of(answer) == 408, answer[:200]
    assert "BODY_TIMEOUT" in body_of(answer)["error"]["message"]
    assert time.monotonic() - started < 8


def test_beyond_the_connection_cap_only_the_probes_are_answered(crowded: Gateway) -> None:
    """MAX_CONNECTIONS busy connections (heads in progress): the next connections
    get /live but 503 for anything else; past the reserve, a 503 at once.

    The kernel accepts a connection before the gateway has read its first bytes;
    on a busy machine a "busy" connection may still look idle (nothing read) when
    the next one comes, and is then rightly closed to make room (so may a
    reserve connection whose partial head was not read yet, when the last one
    comes, which is then admitted and waits for its head).  So the test waits
    until the kernel's tables show every head read before the next connection,
    and still makes the crowd again (a few times) if the gateway did not see
    it whole."""
    for _ in range(5):
        refused, answered, live_took, at_once = _crowd(crowded)
        if status_of(refused) is not None and status_of(at_once) is not None:
            break
    assert status_of(refused) == 503, refused[:200]
    assert body_of(refused)["error"]["type"] == "overloaded_error"
    assert status_of(answered) == 200 and b'"alive"' in answered
    assert b"connection: close" in answered.lower() and live_took < LIVE_BOUND
    assert status_of(at_once) == 503, at_once[:200]


def _crowd(crowded: Gateway) -> tuple[bytes, bytes, float, bytes]:
    with bounded(crowded, probe=False):
        busy = [connect(crowded) for _ in range(CAP)]
        for sock in busy:
            sock.sendall(b"GET /v1/mod")  # a head in progress: not idle
        port = int(crowded.url.rsplit(":", 1)[1])
        # ... once the gateway has read it (unread, a connection still looks idle)
        wait_for(lambda: unread_requests(port) == 0)
        other = connect(crowded)
        other.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
        refused = read_until_closed(other)
        probe = connect(crowded)
        probe.sendall(b"GET /live HTTP/1.1\r\nHost: x\r\n\r\n")
        started = time.monotonic()
        answered = read_until_closed(probe)
        live_took = time.monotonic() - started
        reserve = [connect(crowded) for _ in range(16)]
        for sock in reserve:
            sock.sendall(b"GET /li")
        wait_for(lambda: unread_requests(port) == 0)
        late = connect(crowded, timeout=3)  # a 503 at once, or admitted: then retried
        at_once = read_until_closed(late)
        for sock in (*busy, *reserve, other, probe, late):
            sock.close()
    return refused, answered, live_took, at_once


def test_at_the_cap_an_idle_connection_gives_way_to_a_new_one(crowded: Gateway) -> None:
    """Connections that sent nothing (or are kept alive between requests) do not
    lock others out: a new connection closes one of them."""

    def health() -> int:
        sock = connect(crowded)
        sock.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\nconnection: close\r\n\r\n")
        answer = read_until_closed(sock)
        sock.close()
        return status_of(answer) or 0

    assert wait_for(lambda: health() == 200)  # the previous test's connections are gone
    idle = [connect(crowded, timeout=5) for _ in range(CAP + 4)]
    assert health() == 200
    closed = 0
    for sock in idle:
        sock.settimeout(0.5)
        with suppress(TimeoutError):
            closed += sock.recv(1) == b""
        sock.close()
    assert closed >= 1


def test_a_credential_over_the_length_limit_is_refused_before_decoding(
    edge: Gateway,
) -> None:
    """A 60 KB JWT-shaped bearer (under the header limit) is a 401 that names
    MAX_CREDENTIAL_LENGTH; nothing decodes it."""
    token = "eyJ" + "A" * 30_000 + "." + "B" * 30_000 + ".sig"
    with bounded(edge):
        status, _, body = request(
            edge,
            "POST",
            "/v1/messages",
            json.dumps({"model": "x", "max_tokens": 5, "messages": ASK}).encode(),
            {"x-api-key": "", "authorization": f"Bearer {token}"},
        )
    assert status == 401
    assert "MAX_CREDENTIAL_LENGTH" in json.loads(body)["error"]["message"]


# ---------------------------------------------------------------- model names


BAD_MODELS = ["fake:gpt-模型", "fake:gpt\nx", "fake:a\x1b[31m", "fake:" + "m" * 300]
GOOD_MODELS = [
    "ft:gpt-4o:org:x:id",
    "meta-llama/Llama-3-70b",
    "llama3:8b",
    "anthropic.claude-3-5-sonnet-20240620-v1:0",
    "accounts/fireworks/models/x",
    "@cf/meta/llama",
]


def test_model_names_are_checked_on_every_door(
    edge: Gateway, fake_openai: FakeUpstream, grpc_server: GrpcServer, grpc_token: str
) -> None:
    """A bad name is a 400 naming the rule on every door, before any upstream;
    real names of every shape pass (echo answers them)."""
    fake_openai.reset()
    a = anthropic.Anthropic(base_url=edge.url, api_key=KEY, max_retries=0)
    o = openai.OpenAI(base_url=edge.url + "/v1", api_key=KEY, max_retries=0)
    with bounded(edge):
        for model in BAD_MODELS:
            with pytest.raises(anthropic.BadRequestError, match="model name"):
                a.messages.create(model=model, max_tokens=5, messages=ASK)  # type: ignore[arg-type]
            with pytest.raises(openai.BadRequestError, match="model name"):
                o.chat.completions.create(model=model, messages=ASK)  # type: ignore[arg-type]
            with pytest.raises(openai.BadRequestError, match="model name"):
                o.responses.create(model=model, input="hi")
            with pytest.raises(openai.BadRequestError, match="model name"):
                o.embeddings.create(model=model, input="hi")  # the passthrough
        for model in GOOD_MODELS:
            raw = a.messages.with_raw_response.create(
                model=model,
                max_tokens=5,
                messages=ASK,  # type: ignore[arg-type]
            )
            assert raw.headers["x-vdm-model"] == model
    assert fake_openai.requests == []
    with grpc_server.stub() as stub:
        response = stub.Execute(
            execute_request("hi", model="openai:gpt-模型"),
            metadata=bearer(grpc_token),
            timeout=10,
        )
    assert response.error.error_code == "INVALID_REQUEST"
    assert "model name" in response.error.error_message


# ---------------------------------------------------------------- deep JSON


def test_deeply_nested_json_is_a_400_on_every_door_without_a_traceback(
    edge: Gateway, fake_openai: FakeUpstream, grpc_server: GrpcServer, grpc_token: str
) -> None:
    fake_openai.reset()
    deep = "[" * 1000 + "]" * 1000
    bodies = {
        "/v1/messages": '{"model":"x","max_tokens":5,"messages":[],"metadata":%s}',
        "/v1/chat/completions": '{"model":"x","messages":[],"tools":%s}',
        "/v1/responses": '{"model":"x","input":"hi","metadata":%s}',
        "/v1/embeddings": '{"model":"fake:e","input":%s}',
    }
    with bounded(edge):
        for path, template in bodies.items():
            status, _, body = request(edge, "POST", path, (template % deep).encode())
            assert status == 400, (path, body[:200])
            assert b"nested too deeply" in body
    assert fake_openai.requests == []
    assert "Traceback" not in edge.log()
    with grpc_server.stub() as stub:
        response = stub.Execute(
            execute_request("hi", model="fast", schema=f'{{"type":"object","x":{deep}}}'),
            metadata=bearer(grpc_token),
            timeout=10,
        )
    assert response.error.error_code == "INVALID_REQUEST"
    assert "nested too deeply" in response.error.error_message


# ---------------------------------------------------------------- logs


def test_a_client_cannot_forge_a_log_line(edge: Gateway) -> None:
    forged = "2031-01-01 00:00:00,000 INFO    vdm.access request_id=forged: GET /admin 200"
    request(edge, "GET", "/v1/models%0a" + forged.replace(" ", "%20"))
    request(
        edge,
        "POST",
        "/v1/messages",
        json.dumps({"model": "x\n" + forged, "max_tokens": 5, "messages": ASK}).encode(),
    )
    lines = edge.wait_log("2031-01-01").splitlines()
    assert any("2031-01-01" in line for line in lines)  # logged, escaped
    assert not any(line.startswith("2031-01-01") for line in lines)


# ---------------------------------------------------------------- metrics


def test_client_model_names_do_not_grow_the_metrics(edge: Gateway) -> None:
    """300 random model names (echo answers any): each is counted as 'other' in
    /metrics, the running totals and the dashboard; a configured name keeps its
    own label; the exposition stays small."""
    names = ["".join(random.choices(string.ascii_letters, k=200)) + f"-{i}" for i in range(300)]
    port = int(edge.url.rsplit(":", 1)[1])
    with bounded(edge):
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=15)
        for model in [*names, "keep-me"]:
            body = json.dumps({"model": model, "max_tokens": 5, "messages": ASK})
            connection.request(
                "POST",
                "/v1/messages",
                body,
                {"x-api-key": KEY, "content-type": "application/json"},
            )
            response = connection.getresponse()
            response.read()
            assert response.status == 200
        connection.close()
        status, _, metrics = request(edge, "GET", "/metrics")
        assert status == 200
        _, _, totals = request(edge, "GET", "/metrics/running-totals")
        _, _, snapshot = request(edge, "GET", "/dashboard/api/snapshot")
    assert len(metrics) < 200_000
    text = metrics.decode()
    served = {
        (s.labels.get("model"), s.labels.get("status")): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if s.name == "vdm_requests_total" and s.labels.get("provider") == "echo"
    }
    assert served[("other", "200")] >= 300
    assert served[("keep-me", "200")] == 1
    for blob in (text, totals.decode(), snapshot.decode()):
        assert not any(name in blob for name in names[:20])
    echo = json.loads(totals)["providers"]["echo"]["models"]
    assert echo["other"]["requests"] >= 300
