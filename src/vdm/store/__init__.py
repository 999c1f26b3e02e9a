"""Storage of the control plane behind four small interfaces.

:class:`ProjectStore`, :class:`TokenStore`, :class:`AuditStore` and
:class:`UsageStore` are what the rest of vdm sees; :class:`vdm.store.sql.SqlStore`
implements all four on SQLAlchemy 2 async Core, for SQLite (aiosqlite, WAL; the
embedded default) and PostgreSQL (asyncpg).  The schema comes from the Alembic
migrations in :mod:`vdm.store.migrations`, applied at start-up.

Nothing here is called on the request path except :meth:`UsageStore.consume`
(several instances or workers, tokens with a lifetime quota: the atomic
conditional update that makes ``max_requests`` hold across them),
:meth:`UsageStore.spend_of` and :meth:`UsageStore.add_spend` (tokens and
projects with a budget: their spend read at admission, counted atomically at
the end) and :meth:`TokenStore.find_tokens` (a token this instance does not know yet,
batched and bounded by :class:`vdm.tenants.registry.TokenRegistry`).
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from datetime import datetime
from typing import Any, Protocol

from vdm.store.records import (
    AuditQuery,
    AuditRecord,
    InstanceRecord,
    ProjectRecord,
    Spend,
    TokenRecord,
    UsageDelta,
)


class StoreError(Exception):
    """A store operation that cannot be done as asked (the API maps it to 4xx)."""


class Conflict(StoreError):
    """Unique name taken."""


class Missing(StoreError):
    """No such row (or a reference to none)."""


class ProjectStore(Protocol):
    async def create_project(self, record: ProjectRecord) -> ProjectRecord: ...
    async def get_project(self, project_id: str) -> ProjectRecord | None: ...
    async def list_projects(self) -> list[ProjectRecord]: ...
    async def update_project(
        self, project_id: str, changes: Mapping[str, Any]
    ) -> ProjectRecord: ...
    async def delete_project(self, project_id: str) -> None: ...


class TokenStore(Protocol):
    async def create_token(self, record: TokenRecord) -> TokenRecord: ...
    async def get_token(self, token_id: str) -> TokenRecord | None: ...
    async def find_tokens(self, hashes: Collection[str]) -> list[TokenRecord]: ...
    async def list_tokens(self, project_id: str | None = None) -> list[TokenRecord]: ...
    async def update_token(self, token_id: str, changes: Mapping[str, Any]) -> TokenRecord: ...


class AuditStore(Protocol):
    async def add_audit(self, events: list[AuditRecord]) -> None: ...
    async def query_audit(self, query: AuditQuery) -> tuple[list[AuditRecord], int]: ...
    async def get_audit(self, event_id: str) -> AuditRecord | None: ...


class UsageStore(Protocol):
    async def add_usage(self, deltas: Mapping[str, UsageDelta]) -> None: ...
    async def consume(self, token_id: str, now: datetime) -> bool: ...
    async def add_spend(self, spends: Sequence[Spend]) -> list[float]: ...
    async def spend_of(
        self, token_id: str, project_id: str
    ) -> tuple[tuple[float, datetime | None], tuple[float, datetime | None]]: ...


class InstanceStore(Protocol):
    """The running gateways sharing this database (:mod:`vdm.tenants.fleet`)."""

    async def beat(self, instance_id: str, loaded: int, at: float) -> None: ...
    async def instances(self) -> list[InstanceRecord]: ...
    async def leave(self, instance_id: str) -> None: ...
    async def forget_instances(self, seen_before: float) -> None: ...
    async def forget_instance(self, instance_id: str, beat: int) -> None: ...


class Store(ProjectStore, TokenStore, AuditStore, UsageStore, InstanceStore, Protocol):
    async def revision(self) -> int: ...
    async def checkpoint(self) -> None: ...
    async def close(self) -> None: ...


__all__ = [
    "AuditQuery",
    "AuditRecord",
    "Conflict",
    "InstanceRecord",
    "Missing",
    "ProjectRecord",
    "Store",
    "StoreError",
    "TokenRecord",
    "UsageDelta",
]
