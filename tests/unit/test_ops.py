"""Pure pieces of operations: metric buckets and totals, pid files, port
owners, the JSON log format, the journal fallback, and the deploy files."""

from __future__ import annotations

import asyncio
import configparser
import io
import json
import logging
import os
import re
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from vdm import ir, logs
from vdm.cli import process
from vdm.events.memory import MemoryBus
from vdm.metrics import BUCKETS, Histogram, Metrics
from vdm.totals import RunningTotals

ROOT = Path(__file__).resolve().parents[2]


def test_histogram_buckets_are_le_and_cumulative() -> None:
    h = Histogram()
    for seconds in (0.005, 0.006, 400.0):
        h.observe(seconds)
    cumulative = dict(h.cumulative())
    assert cumulative["0.005"] == 1  # le: a value on a bound is in that bucket
    assert cumulative["0.01"] == 2
    assert cumulative[str(BUCKETS[-1])] == 2 and cumulative["+Inf"] == 3
    assert h.sum == pytest.approx(400.011)


def test_exposition_parses_and_totals_merge_doors() -> None:
    asyncio.run(_exposition_and_totals())


async def _exposition_and_totals() -> None:
    m = Metrics()
    bus = MemoryBus(queue_size=100, source="test")
    running = RunningTotals()
    running.follow(bus)
    await bus.start()
    m.bus = bus
    usage = ir.Usage(input_tokens=3, output_tokens=4, cache_read_input_tokens=2)
    m.finished("anthropic", "p", "x", 200, 0.2, 0.05, 0.1, usage, None)
    m.finished("openai", "p", "x", 200, 0.4, 0.1, 0.3, usage, "stream")
    m.failed("openai", "", 400, "invalid_request", 0.001)
    m.retry("p")
    m.failover("p", "q")
    m.cooldown("p:abcdef", 429)
    await bus.flush()
    families = {f.name: f for f in text_string_to_metric_families(m.exposition().decode())}
    requests = families["vdm_requests"].samples
    assert sum(s.value for s in requests) == 3
    assert {s.labels["door"] for s in requests} == {"anthropic", "openai"}
    assert [s.value for s in families["vdm_failovers"].samples] == [1]
    assert families["vdm_key_cooldowns"].samples[0].labels == {"provider": "p", "status": "429"}
    published = {s.labels["kind"]: s.value for s in families["vdm_events_published"].samples}
    assert published["request.finished"] == 3
    totals = await running.report()
    model = totals["providers"]["p"]["models"]["x"]
    assert model["requests"] == 2 and model["errors"] == 1 and model["input_tokens"] == 6
    assert model["avg_latency_ms"] == pytest.approx(300.0)
    assert model["p95_latency_ms"] == pytest.approx(400.0)
    assert totals["totals"]["requests"] == 3
    assert (await running.report(door="anthropic"))["totals"]["requests"] == 1
    assert (await running.report(provider="nope"))["providers"] == {}
    await bus.close()


def test_pid_file_round_trip_and_staleness(tmp_path: Path) -> None:
    pid_file = tmp_path / "run" / "vdm.pid"
    info = process.RunInfo(os.getpid(), "0.0.0.0", 9999, workers=2, log_file="/x.log")
    process.write_pid_file(pid_file, info)
    assert pid_file.read_text() == f"{os.getpid()}\n"
    read = process.read_info(pid_file)
    assert read == info and read.url == "http://127.0.0.1:9999"
    live, stale = process.live_info(pid_file)  # this process runs python -m pytest: "vdm"?
    assert stale is (live is None)
    process.remove_pid_file(pid_file, pid=os.getpid() + 1)  # someone else's: kept
    assert pid_file.exists()
    process.remove_pid_file(pid_file, pid=os.getpid())
    assert not pid_file.exists() and process.read_info(pid_file) is None
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    process.write_pid_file(pid_file, process.RunInfo(dead.pid, "127.0.0.1", 1))
    assert process.live_info(pid_file) == (None, True)


def test_port_owner_names_the_listening_process() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        assert not process.port_free("127.0.0.1", port)
        owner = process.port_owner(port)
    assert owner is not None and owner[0] == os.getpid()
    assert process.port_free("127.0.0.1", port)


def test_json_formatter_is_one_object_a_line() -> None:
    record = logging.LogRecord("vdm.x", logging.WARNING, __file__, 1, "a %s b", ("\n",), None)
    logs.RequestIdFilter().filter(record)
    line = logs.JsonFormatter().format(record)
    assert "\n" not in line
    data = json.loads(line)
    assert data["message"] == "a \n b" and data["level"] == "WARNING"
    assert data["request_id"] == "-" and data["logger"] == "vdm.x"
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", data["ts"])


def test_systemd_without_a_journal_falls_back_to_the_console_with_one_warning(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(logs, "JOURNAL_SOCKET", "/nonexistent/dev-log")
    monkeypatch.delenv(logs.JOURNAL_ENV, raising=False)
    root = logging.getLogger()
    saved = root.handlers[:]
    root.handlers = [h for h in saved if not getattr(h, "_vdm", False)]
    stream = io.StringIO()
    monkeypatch.setattr(sys, "stderr", stream)
    try:
        logs.configure("INFO", systemd=True)
        logs.configure("INFO", systemd=True)  # once per process
        ours = [h for h in root.handlers if getattr(h, "_vdm", False)]
        assert len(ours) == 1 and isinstance(ours[0], logging.StreamHandler)
        assert stream.getvalue().count("no journal") == 1
        assert logs.JOURNAL_ENV not in os.environ
    finally:
        root.handlers = saved


def test_deploy_files_are_well_formed() -> None:
    unit = configparser.ConfigParser(strict=False, interpolation=None)
    unit.optionxform = str  # type: ignore[assignment,method-assign]
    unit.read(ROOT / "deploy/vdm.service")
    assert unit["Service"]["ExecStart"].endswith("vdm server start --systemd")
    assert unit["Service"]["KillSignal"] == "SIGTERM"
    assert float(unit["Service"]["TimeoutStopSec"]) > 30  # longer than the drain
    assert unit["Install"]["WantedBy"] == "multi-user.target"

    docker = (ROOT / "deploy/Dockerfile").read_text()
    instructions = [
        line.split()[0]
        for line in docker.splitlines()
        if line.strip() and not line.startswith(("#", " "))
    ]
    assert instructions[0] == "FROM" and instructions[-1] == "CMD"
    assert set(instructions) <= {
        "FROM",
        "ENV",
        "RUN",
        "WORKDIR",
        "COPY",
        "USER",
        "EXPOSE",
        "HEALTHCHECK",
        "STOPSIGNAL",
        "VOLUME",
        "ARG",
        "LABEL",
        "CMD",
    }
    cmd = next(line for line in docker.splitlines() if line.startswith("CMD "))
    assert json.loads(cmd[4:]) == ["vdm", "server", "start"]
    health = next(line for line in docker.splitlines() if line.strip().startswith('CMD ["python"'))
    assert "/ready" in json.loads(health.strip()[4:])[-1]

    compose = (ROOT / "deploy/compose.yaml").read_text()
    assert "dockerfile: deploy/Dockerfile" in compose and "8082:8082" in compose
    assert "\t" not in compose
