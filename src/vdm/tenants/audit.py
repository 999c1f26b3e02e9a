"""Audit events: every management action and every failed authentication.

Events go to the database and, with ``AUDIT_LOG_FILE``, to a JSONL file.
:meth:`AuditLog.record` only appends to a buffer (it is called on the request
path for authentication failures); a background task writes the buffer every
half second, file lines through a worker thread, and :meth:`AuditLog.close`
writes what is left at graceful shutdown.  Callers never put secrets into
events: tokens appear by id, credentials not at all.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import uuid
from collections import deque
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from vdm.store import AuditStore
from vdm.store.records import AuditRecord

log = logging.getLogger("vdm.audit")
RECENT_EVENTS = 50
_MAX_BUFFER = 100_000  # beyond this (a flood of bad tokens) the oldest are dropped, logged


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


class AuditLog:
    def __init__(self, store: AuditStore | None, path: str | None, interval: float = 0.5) -> None:
        self._store = store
        self._path = Path(path) if path else None
        self._buffer: list[AuditRecord] = []
        self._interval = interval
        self._task: asyncio.Task[None] | None = None
        self._lock = asyncio.Lock()
        self.dropped = 0
        # This instance's latest events, for the dashboard (no database query per poll).
        self.recent: deque[AuditRecord] = deque(maxlen=RECENT_EVENTS)

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
        if len(self._buffer) >= _MAX_BUFFER:
            self._buffer.pop(0)
            self.dropped += 1
        self._buffer.append(event)
        self.recent.append(event)
        return event

    def start(self) -> None:
        if self._path is not None:
            self._path.parent.mkdir(parents=True, exist_ok=True)
        self._task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self._interval)
            try:
                await self.flush()
            except Exception:
                log.warning("audit flush failed; will retry", exc_info=True)

    async def flush(self) -> None:
        async with self._lock:
            batch, self._buffer = self._buffer, []
            if not batch:
                return
            try:
                if self._store is not None:
                    await self._store.add_audit(batch)
            except BaseException:
                self._buffer[:0] = batch  # kept for the next try
                raise
            if self._path is not None:
                lines = "".join(json.dumps(to_json(e), separators=(",", ":")) + "\n" for e in batch)
                await asyncio.to_thread(self._append, lines)

    def _append(self, lines: str) -> None:
        with self._path.open("a", encoding="utf-8") as f:  # type: ignore[union-attr]
            f.write(lines)
            f.flush()

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self.flush()
