"""Audit events: every management action and every failed authentication.

:meth:`AuditLog.record` only publishes an ``audit`` event on the bus (it is
called on the request path for authentication failures).  Its consumers:

* ``audit`` (once per deployment) writes the events to the database in
  batches — idempotently, by event id, so an event delivered twice is
  stored once;
* ``audit-file`` (every instance, with ``AUDIT_LOG_FILE``) appends JSON lines
  through a worker thread, so each instance's file holds every event;
* ``audit-recent`` (every instance) keeps the latest for the dashboard.

A management action stores its event itself before it answers
(:meth:`AuditLog.store_now`).  Callers never put secrets into events: tokens
appear by id, credentials not at all.
"""

from __future__ import annotations

import asyncio
import json
import logging
import uuid
from collections import deque
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from vdm.events import AUDIT
from vdm.store import AuditStore
from vdm.store.records import AuditRecord

if TYPE_CHECKING:
    from vdm.events import Bus, Event

log = logging.getLogger("vdm.audit")
RECENT_EVENTS = 50


def to_json(event: AuditRecord) -> dict[str, Any]:
    return {
        "id": event.id,
        "timestamp": event.ts.isoformat().replace("+00:00", "Z"),
        "actor": event.actor,
        "action": event.action,
        "outcome": event.outcome,
        "request_id": event.request_id,
        "client_ip": event.client_ip,
        "project_id": event.project_id,
        "token_id": event.token_id,
        "target": event.target,
        "details": event.details,
    }


def from_json(data: dict[str, Any]) -> AuditRecord:
    return AuditRecord(
        str(data["id"]),
        datetime.fromisoformat(str(data["timestamp"]).replace("Z", "+00:00")),
        str(data["actor"]),
        str(data["action"]),
        str(data["outcome"]),
        data.get("request_id"),
        data.get("client_ip"),
        data.get("project_id"),
        data.get("token_id"),
        data.get("target"),
        dict(data.get("details") or {}),
    )


class AuditLog:
    def __init__(self, store: AuditStore | None, path: str | None, bus: Bus) -> None:
        self._store = store
        self._path = Path(path) if path else None
        self._bus = bus
        # The deployment's latest events, for the dashboard (no database query per poll).
        self.recent: deque[AuditRecord] = deque(maxlen=RECENT_EVENTS)

    def follow(self) -> None:
        bus = self._bus
        if self._store is not None:
            bus.subscribe("audit", [AUDIT], self._write, scope="shared")
        if self._path is not None:
            self._path.parent.mkdir(parents=True, exist_ok=True)
            bus.subscribe("audit-file", [AUDIT], self._append_lines, scope="instance")
        bus.subscribe("audit-recent", [AUDIT], self._remember, scope="instance")

    def record(
        self,
        *,
        actor: str,
        action: str,
        outcome: str,
        request_id: str | None = None,
        client_ip: str | None = None,
        project_id: str | None = None,
        token_id: str | None = None,
        target: str | None = None,
        details: dict[str, Any] | None = None,
    ) -> AuditRecord:
        event = AuditRecord(
            uuid.uuid4().hex,
            datetime.now(UTC),
            actor,
            action,
            outcome,
            request_id,
            client_ip,
            project_id,
            token_id,
            target,
            details or {},
        )
        self._bus.publish(AUDIT, to_json(event))
        return event

    async def store_now(self, event: AuditRecord) -> None:
        """Write one event to the database before the caller goes on."""
        if self._store is not None:
            await self._store.add_audit([event])

    async def _write(self, events: list[Event]) -> None:
        assert self._store is not None
        await self._store.add_audit([from_json(e.data) for e in events])

    async def _append_lines(self, events: list[Event]) -> None:
        lines = "".join(json.dumps(e.data, separators=(",", ":")) + "\n" for e in events)
        await asyncio.to_thread(self._append, lines)

    def _append(self, lines: str) -> None:
        with self._path.open("a", encoding="utf-8") as f:  # type: ignore[union-attr]
            f.write(lines)
            f.flush()

    async def _remember(self, events: list[Event]) -> None:
        self.recent.extend(from_json(e.data) for e in events)
