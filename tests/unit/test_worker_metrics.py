"""The sums /metrics gives for all the workers of one gateway (vdm.worker_metrics)."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path

import msgspec
import pytest
from prometheus_client.parser import text_string_to_metric_families

from vdm import ir
from vdm.metrics import Metrics
from vdm.server.workers import ENV, directory_from_env, shared_directory
from vdm.worker_metrics import WorkerMetrics, snapshot


def served(metrics: Metrics, count: int, *, model: str = "m", status: int = 200) -> None:
    for _ in range(count):
        metrics.finished(
            "anthropic", "openai", model, status, 0.02, 0.01, 0.015, ir.Usage(10, 3), None
        )


def samples(text: bytes) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out = {}
    for family in text_string_to_metric_families(text.decode()):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def value(text: bytes, name: str, **labels: str) -> float | None:
    return samples(text).get((name, tuple(sorted(labels.items()))))


def write_as(metrics: Metrics, directory: Path, pid: int) -> None:
    snap = snapshot(metrics)
    snap.pid = pid
    (directory / f"{pid}.json").write_bytes(msgspec.json.encode(snap))


@pytest.fixture
def other_process() -> object:
    """A pid that runs for the test's length, and one that has exited."""
    live = subprocess.Popen([sys.executable, "-c", "import signal; signal.pause()"])  # until killed
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    yield live.pid, gone.pid
    live.kill()
    live.wait()


def test_counters_and_histograms_sum_over_every_worker_gauges_over_running_ones(
    tmp_path: Path, other_process: tuple[int, int]
) -> None:
    live, gone = other_process
    mine, theirs, exited = Metrics(), Metrics(), Metrics()
    served(mine, 2)
    served(theirs, 3)
    served(theirs, 1, model="other")
    served(exited, 4)
    mine.in_flight, theirs.in_flight, exited.in_flight = 1, 2, 5
    write_as(theirs, tmp_path, live)
    write_as(exited, tmp_path, gone)

    text = WorkerMetrics(mine, tmp_path).exposition()

    route = {"door": "anthropic", "provider": "openai", "model": "m"}
    assert value(text, "vdm_requests_total", **route, status="200") == 2 + 3 + 4
    assert value(text, "vdm_requests_total", **{**route, "model": "other"}, status="200") == 1
    assert value(text, "vdm_tokens_total", **route, type="input") == 10 * 9
    assert value(text, "vdm_request_duration_seconds_count", **route) == 9
    assert value(text, "vdm_request_duration_seconds_bucket", **route, le="0.025") == 9
    assert value(text, "vdm_request_duration_seconds_bucket", **route, le="0.01") == 0
    assert value(text, "vdm_request_duration_seconds_sum", **route) == pytest.approx(0.18)
    # the exited worker's requests stay counted; its requests in flight are not
    assert value(text, "vdm_in_flight_requests") == 1 + 2


def test_one_worker_alone_is_its_own_live_metrics(tmp_path: Path) -> None:
    mine = Metrics()
    shared = WorkerMetrics(mine, tmp_path)
    served(mine, 2)
    assert samples(shared.exposition()) == samples(mine.exposition())


def test_a_worker_writes_its_file_whole_and_a_bad_file_is_skipped(tmp_path: Path) -> None:
    mine, other = Metrics(), Metrics()
    served(other, 3)
    WorkerMetrics(other, tmp_path).write()
    (theirs,) = tmp_path.glob("*.json")
    theirs.rename(tmp_path / "1.json")  # as if another worker had written it
    (tmp_path / "2.json").write_bytes(b'{"pid": 2, "fami')  # not ours to trust
    served(mine, 1)
    text = WorkerMetrics(mine, tmp_path).exposition()
    assert (
        value(
            text,
            "vdm_requests_total",
            door="anthropic",
            provider="openai",
            model="m",
            status="200",
        )
        == 1 + 3
    )
    assert not list(tmp_path.glob("*.part"))


def test_the_supervisor_names_one_directory_and_removes_it() -> None:
    with shared_directory() as path:
        assert os.environ[ENV] == str(path) and path.is_dir()
        assert directory_from_env(os.environ) == path
    assert ENV not in os.environ
    assert not path.exists()


def test_a_directory_that_is_not_one_stops_the_start(tmp_path: Path) -> None:
    assert directory_from_env({}) is None
    with pytest.raises(ValueError, match=f"{ENV}: .* is not a directory"):
        directory_from_env({ENV: str(tmp_path / "missing")})


def test_the_dashboard_figures_are_all_the_workers(
    tmp_path: Path, other_process: tuple[int, int]
) -> None:
    live, gone = other_process
    mine, theirs, exited = Metrics(), Metrics(), Metrics()
    served(mine, 2)
    served(theirs, 3)
    theirs.failed("anthropic", "", 400, "invalid_request", 0.001, "r-bad")
    served(exited, 1, model="other")
    theirs.cooldown("openai:abc", 429)
    mine.open_streams, theirs.open_streams, exited.open_streams = 1, 1, 4
    exited.started = mine.started - 100  # the first worker of the start
    write_as(theirs, tmp_path, live)
    write_as(exited, tmp_path, gone)

    view = WorkerMetrics(mine, tmp_path).figures()

    assert view.routes[("anthropic", "openai", "m")].requests == 5
    assert view.routes[("anthropic", "openai", "other")].requests == 1
    assert view.routes[("anthropic", "", "")].errors == {"invalid_request": 1}
    assert len(view.recent) == 2 + 4 + 1
    assert [e[0] for e in view.recent] == sorted(e[0] for e in view.recent)
    assert view.open_streams == 1 + 1  # not the exited worker's
    assert view.cooldowns == {("openai", 429): 1}
    assert view.started == exited.started
    # the live metrics are read, not changed
    assert mine.routes[("anthropic", "openai", "m")].requests == 2


def test_a_ring_is_written_only_while_a_dashboard_is_open_and_nothing_twice(
    tmp_path: Path,
) -> None:
    mine = Metrics()
    served(mine, 3)
    shared = WorkerMetrics(mine, tmp_path)

    def written() -> dict:
        return msgspec.json.decode(shared.path.read_bytes())

    async def ticks() -> None:  # as the worker's timer runs them
        shared._tick()
        assert written()["recent"] == [] and len(written()["routes"]) == 1
        shared.path.unlink()
        shared._tick()  # nothing new: no write
        assert not shared.path.exists()

        WorkerMetrics(Metrics(), tmp_path).figures()  # another worker answers a dashboard
        shared._tick()
        assert len(written()["recent"]) == 3
        served(mine, 1)
        shared._tick()
        assert len(written()["recent"]) == 4
        shared.close()

    asyncio.run(ticks())


def test_requests_waiting_for_an_upstream_connection_are_written_when_they_change(
    tmp_path: Path,
) -> None:
    """Requests in flight begin (and end) waiting for a free connection without
    any other change: the worker's file follows, and the sums hold the waits."""
    mine = Metrics()
    shared = WorkerMetrics(mine, tmp_path)

    def waiting_written() -> float | None:
        snap = msgspec.json.decode(shared.path.read_bytes())
        for family in snap["families"]:
            if family[0] == "vdm_upstream_connections_waiting":
                return sum(sample[2] for sample in family[3])
        return None

    async def ticks() -> None:
        pool = mine.pool("openai")
        shared._tick()
        assert waiting_written() == 0
        pool.waiting = 3  # nothing else changed
        shared._tick()
        assert waiting_written() == 3
        pool.waiting = 0
        pool.waits.observe(0.2)
        shared._tick()
        assert waiting_written() == 0
        shared.close()

    asyncio.run(ticks())
    shared.path.rename(tmp_path / "1.json")  # as if another worker had written it
    text = WorkerMetrics(Metrics(), tmp_path).exposition()
    assert value(text, "vdm_upstream_connection_wait_seconds_count", provider="openai") == 1
