"""``/metrics`` for all the workers of one ``vdm server start --workers N``.

The workers share one listening socket: a scrape reaches whichever worker
accepts it, and each counts only its own requests, so a Prometheus counter
read from them by turns would jump between unrelated values.  In the
directory the workers share (:mod:`vdm.server.workers`) each worker
(:class:`WorkerMetrics`)

* writes the samples of its metrics to ``<pid>.json`` every ``INTERVAL``
  seconds, from one timer, never on a request's path, and once more when it
  stops;
* answers a scrape with its own live samples plus the other workers' files:
  counters and histograms summed over every worker that wrote one, those that
  have exited included (a sum must not go down when a worker is replaced;
  Prometheus's multiprocess mode does the same), gauges (requests in flight,
  open streams, queue depth) over the workers still running.

Another worker's figures reach a scrape within ``INTERVAL``; a worker killed
outright loses what it counted since its last write.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING

import msgspec
from prometheus_client import generate_latest
from prometheus_client.core import Metric

if TYPE_CHECKING:
    from vdm.metrics import Metrics

INTERVAL = 1.0

log = logging.getLogger(__name__)


class Family(msgspec.Struct, array_like=True):
    name: str
    type: str
    documentation: str
    samples: list[tuple[str, dict[str, str], float]]


class Snapshot(msgspec.Struct):
    pid: int
    families: list[Family]


_encoder = msgspec.json.Encoder()
_decoder = msgspec.json.Decoder(Snapshot)


def snapshot(metrics: Metrics) -> Snapshot:
    families = [
        Family(m.name, m.type, m.documentation, [(s.name, s.labels, s.value) for s in m.samples])
        for m in metrics.registry.collect()
    ]
    return Snapshot(os.getpid(), families)


def merge(own: Snapshot, others: Iterable[Snapshot], alive: set[int]) -> list[Metric]:
    """``own`` plus ``others``, sample by sample (see the module's docstring);
    families in the order ``own`` has them, then any only others have."""
    merged: dict[str, tuple[Metric, dict[tuple[str, tuple[tuple[str, str], ...]], float]]] = {}
    for snap in (own, *others):
        running = snap is own or snap.pid in alive
        for family in snap.families:
            if family.type == "gauge" and not running:
                continue
            entry = merged.get(family.name)
            if entry is None:
                entry = merged[family.name] = (
                    Metric(family.name, family.documentation, family.type),
                    {},
                )
            values = entry[1]
            for name, labels, value in family.samples:
                key = (name, tuple(sorted(labels.items())))
                values[key] = values.get(key, 0.0) + value
    out = []
    for metric, values in merged.values():
        for (name, pairs), value in values.items():
            metric.add_sample(name, dict(pairs), value)
        out.append(metric)
    return out


def is_running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # (someone else's process took the pid)
        return False
    return True


class WorkerMetrics:
    """One worker's side of the shared directory."""

    def __init__(self, metrics: Metrics, directory: Path) -> None:
        self.metrics = metrics
        self.directory = directory
        self.path = directory / f"{os.getpid()}.json"
        self._timer: asyncio.TimerHandle | None = None

    def start(self) -> None:
        self.write()
        self._timer = asyncio.get_running_loop().call_later(INTERVAL, self._tick)

    def _tick(self) -> None:
        try:
            self.write()
        except OSError as exc:  # a full disk: the next tick tries again
            log.warning("cannot write this worker's metrics to %s: %s", self.path, exc)
        self._timer = asyncio.get_running_loop().call_later(INTERVAL, self._tick)

    def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        with contextlib.suppress(OSError):
            self.write()

    def write(self) -> None:
        """Replace this worker's file whole (a reader never sees half of one)."""
        data = _encoder.encode(snapshot(self.metrics))
        partial = self.path.with_suffix(".part")
        partial.write_bytes(data)
        os.replace(partial, self.path)

    def others(self) -> list[Snapshot]:
        out = []
        for path in self.directory.glob("*.json"):
            if path == self.path:
                continue
            try:
                out.append(_decoder.decode(path.read_bytes()))
            except (OSError, msgspec.DecodeError) as exc:
                log.warning("skipping the worker metrics in %s: %s", path, exc)
        return out

    def exposition(self) -> bytes:
        others = self.others()
        alive = {s.pid for s in others if is_running(s.pid)}
        return generate_latest(_Collected(merge(snapshot(self.metrics), others, alive)))  # type: ignore[arg-type]


class _Collected:
    """What ``generate_latest`` needs of a registry: ``collect()``."""

    def __init__(self, metrics: list[Metric]) -> None:
        self.metrics = metrics

    def collect(self) -> list[Metric]:
        return self.metrics
