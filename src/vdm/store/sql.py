"""SQLite and PostgreSQL storage through SQLAlchemy 2 async Core.

One implementation for both databases: the statements are portable Core, and
the few differences (SQLite's WAL pragma, PostgreSQL's schema) are set on the
engine in :func:`create_engine`.  Every value reaches SQL as a bound
parameter, never by string building, so injection-shaped input is inert.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Collection, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, overload

from sqlalchemy import DateTime, Float, case, event, func, insert, literal, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from vdm.extras import require
from vdm.store import Conflict, Missing
from vdm.store.records import (
    AuditQuery,
    AuditRecord,
    InstanceRecord,
    ProjectRecord,
    Spend,
    TokenRecord,
    UsageDelta,
)
from vdm.store.schema import audit_events, instances, projects, revision, tokens

log = logging.getLogger("vdm.store")


@overload
def utc(value: datetime) -> datetime: ...
@overload
def utc(value: None) -> None: ...
def utc(value: datetime | None) -> datetime | None:
    """Times as aware UTC (SQLite hands them back naive)."""
    if value is None:
        return None
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


# A gateway process stopped mid-transaction (SIGSTOP, a VM paused, a debugger)
# would hold its row locks for as long as its connection lives: a revocation
# deleting the token whose usage it was writing would wait forever.  PostgreSQL
# ends such a session after this long idle in a transaction, well inside the
# fleet's lease (vdm.tenants.fleet), and the work it held is retried (usage
# events are delivered again).  No transaction of ours is idle for more than
# a moment.
IDLE_IN_TRANSACTION_SECONDS = 5.0


def create_engine(
    url: str,
    schema: str | None = None,
    *,
    idle_in_transaction: float = IDLE_IN_TRANSACTION_SECONDS,
) -> AsyncEngine:
    """An engine for ``url`` (SQLAlchemy's form, with the async driver); ``schema``:
    PostgreSQL's search path; ``idle_in_transaction``: how long PostgreSQL lets
    one of its sessions sit idle inside a transaction."""
    # aiosqlite logs every statement with its parameters at DEBUG: credentials
    # and token hashes would reach the log with LOG_LEVEL=DEBUG.
    logging.getLogger("aiosqlite").setLevel(logging.INFO)
    if url.startswith("sqlite"):
        path = url.split(":///", 1)[1] if ":///" in url else ""
        if path and path != ":memory:":
            private_file(Path(path))
        engine = create_async_engine(url)

        @event.listens_for(engine.sync_engine, "connect")
        def _pragmas(dbapi_connection: Any, _record: Any) -> None:
            cursor = dbapi_connection.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.execute("PRAGMA busy_timeout=5000")
            cursor.execute("PRAGMA secure_delete=ON")  # replaced secrets leave no copy behind
            cursor.close()

        return engine
    require("postgres", "DATABASE_URL is PostgreSQL")
    server_settings = {"idle_in_transaction_session_timeout": str(int(idle_in_transaction * 1000))}
    if schema:
        server_settings["search_path"] = schema
    return create_async_engine(
        url, connect_args={"server_settings": server_settings}, pool_size=5, max_overflow=10
    )


def private_file(path: Path) -> None:
    """Create the SQLite file for its owner alone (0600; its -wal and -shm files
    take the same mode); an existing one that others may read is named in a
    warning, not changed behind the operator's back."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    try:
        os.close(os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600))
        return
    except FileExistsError:
        pass
    mode = path.stat().st_mode & 0o777
    if mode & 0o077:
        log.warning(
            "the database %s (token hashes, project credentials, audit) is open to other "
            "users (mode %o): chmod 600 %s",
            path,
            mode,
            path,
        )


def _project(row: Any) -> ProjectRecord:
    return ProjectRecord(
        id=row.id,
        name=row.name,
        is_active=row.is_active,
        credentials=dict(row.credentials or {}),
        created_at=utc(row.created_at),
        updated_at=utc(row.updated_at),  # type: ignore[arg-type]
        deactivated_at=utc(row.deactivated_at),
        max_budget_usd=row.max_budget_usd,
        budget_period=row.budget_period,
        spend_usd=row.spend_usd or 0.0,
        budget_started_at=utc(row.budget_started_at),
    )


def _token(row: Any) -> TokenRecord:
    return TokenRecord(
        id=row.id,
        project_id=row.project_id,
        token_hash=row.token_hash,
        hint=row.hint,
        name=row.name,
        is_active=row.is_active,
        expires_at=utc(row.expires_at),
        max_requests=row.max_requests,
        rpm=row.rpm,
        tpm=row.tpm,
        allowed_models=row.allowed_models,
        allowed_providers=row.allowed_providers,
        request_count=row.request_count,
        cache_hit_count=row.cache_hit_count,
        last_used_at=utc(row.last_used_at),
        created_at=utc(row.created_at),
        updated_at=utc(row.updated_at),  # type: ignore[arg-type]
        max_budget_usd=row.max_budget_usd,
        budget_period=row.budget_period,
        spend_usd=row.spend_usd or 0.0,
        budget_started_at=utc(row.budget_started_at),
    )


def _audit(row: Any) -> AuditRecord:
    return AuditRecord(
        id=row.id,
        ts=utc(row.ts),
        actor=row.actor,
        action=row.action,  # type: ignore[arg-type]
        outcome=row.outcome,
        request_id=row.request_id,
        client_ip=row.client_ip,
        project_id=row.project_id,
        token_id=row.token_id,
        target=row.target,
        details=dict(row.details or {}),
    )


def _fields(record: Any) -> dict[str, Any]:
    return {name: getattr(record, name) for name in record.__slots__}


class SqlStore:
    """Projects, tokens, audit and usage in one database."""

    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine

    async def close(self) -> None:
        await self.engine.dispose()

    async def _bump(self, conn: Any) -> None:
        await conn.execute(
            update(revision).where(revision.c.id == 1).values(value=revision.c.value + 1)
        )

    async def checkpoint(self) -> None:
        """Write SQLite's WAL into the database file now, so rows just replaced
        (``secure_delete`` zeroes them) leave no old copy on disk."""
        if self.engine.dialect.name == "sqlite":
            async with self.engine.connect() as conn:
                await conn.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)")

    async def revision(self) -> int:
        async with self.engine.connect() as conn:
            value = await conn.scalar(select(revision.c.value).where(revision.c.id == 1))
        return int(value or 0)

    # ------------------------------------------------------------ projects

    async def create_project(self, record: ProjectRecord) -> ProjectRecord:
        try:
            async with self.engine.begin() as conn:
                await conn.execute(insert(projects).values(**_fields(record)))
                await self._bump(conn)
        except IntegrityError:
            raise Conflict(f"a project named {record.name!r} exists already") from None
        return record

    async def get_project(self, project_id: str) -> ProjectRecord | None:
        async with self.engine.connect() as conn:
            row = (await conn.execute(select(projects).where(projects.c.id == project_id))).first()
        return _project(row) if row else None

    async def list_projects(self) -> list[ProjectRecord]:
        async with self.engine.connect() as conn:
            rows = await conn.execute(
                select(projects).order_by(projects.c.created_at, projects.c.id)
            )
            return [_project(r) for r in rows]

    async def update_project(self, project_id: str, changes: Mapping[str, Any]) -> ProjectRecord:
        try:
            async with self.engine.begin() as conn:
                result = await conn.execute(
                    update(projects).where(projects.c.id == project_id).values(**changes)
                )
                if result.rowcount == 0:
                    raise Missing(f"no project {project_id!r}")
                await self._bump(conn)
        except IntegrityError:
            raise Conflict(f"a project named {changes.get('name')!r} exists already") from None
        project = await self.get_project(project_id)
        assert project is not None
        return project

    async def delete_project(self, project_id: str) -> None:
        async with self.engine.begin() as conn:
            await conn.execute(tokens.delete().where(tokens.c.project_id == project_id))
            result = await conn.execute(projects.delete().where(projects.c.id == project_id))
            if result.rowcount == 0:
                raise Missing(f"no project {project_id!r}")
            await self._bump(conn)

    # ------------------------------------------------------------ tokens

    async def create_token(self, record: TokenRecord) -> TokenRecord:
        try:
            async with self.engine.begin() as conn:
                await conn.execute(insert(tokens).values(**_fields(record)))
                await self._bump(conn)
        except IntegrityError:
            raise Missing(f"no project {record.project_id!r}") from None
        return record

    async def get_token(self, token_id: str) -> TokenRecord | None:
        async with self.engine.connect() as conn:
            row = (await conn.execute(select(tokens).where(tokens.c.id == token_id))).first()
        return _token(row) if row else None

    async def find_tokens(self, hashes: Collection[str]) -> list[TokenRecord]:
        """The tokens whose secrets hash to one of ``hashes`` (one indexed query)."""
        if not hashes:
            return []
        query = select(tokens).where(tokens.c.token_hash.in_(list(hashes)))
        async with self.engine.connect() as conn:
            return [_token(r) for r in await conn.execute(query)]

    async def list_tokens(self, project_id: str | None = None) -> list[TokenRecord]:
        query = select(tokens).order_by(tokens.c.created_at, tokens.c.id)
        if project_id is not None:
            query = query.where(tokens.c.project_id == project_id)
        async with self.engine.connect() as conn:
            return [_token(r) for r in await conn.execute(query)]

    async def update_token(self, token_id: str, changes: Mapping[str, Any]) -> TokenRecord:
        async with self.engine.begin() as conn:
            result = await conn.execute(
                update(tokens).where(tokens.c.id == token_id).values(**changes)
            )
            if result.rowcount == 0:
                raise Missing(f"no token {token_id!r}")
            await self._bump(conn)
        token = await self.get_token(token_id)
        assert token is not None
        return token

    # ------------------------------------------------------------ usage

    async def add_usage(self, deltas: Mapping[str, UsageDelta]) -> None:
        """Write-behind counters (one transaction for the batch)."""
        if not deltas:
            return
        async with self.engine.begin() as conn:
            for token_id, delta in deltas.items():
                values: dict[str, Any] = {
                    "request_count": tokens.c.request_count + delta.requests,
                    "cache_hit_count": tokens.c.cache_hit_count + delta.cache_hits,
                }
                if delta.last_used_at is not None:
                    values["last_used_at"] = delta.last_used_at
                await conn.execute(update(tokens).where(tokens.c.id == token_id).values(**values))

    async def add_spend(self, spends: Sequence[Spend]) -> list[float]:
        """Add each cost to its row's spend, atomically (one statement a row,
        one transaction): a spend of a period before ``start`` is reset to the
        cost first, and the period's start recorded.  The spends after, in order."""
        out: list[float] = []
        if not spends:
            return out
        async with self.engine.begin() as conn:
            for spend in spends:
                table = tokens if spend.table == "token" else projects
                values: dict[str, Any]
                if spend.start is None:
                    values = {"spend_usd": table.c.spend_usd + spend.cost}
                else:
                    start = literal(spend.start, DateTime(timezone=True))
                    stale = or_(
                        table.c.budget_started_at.is_(None), table.c.budget_started_at < start
                    )
                    values = {
                        "spend_usd": case(
                            (stale, literal(spend.cost, Float)),
                            else_=table.c.spend_usd + spend.cost,
                        ),
                        "budget_started_at": case((stale, start), else_=table.c.budget_started_at),
                    }
                result = await conn.execute(
                    update(table)
                    .where(table.c.id == spend.id)
                    .values(**values)
                    .returning(table.c.spend_usd)
                )
                row = result.first()
                out.append(float(row[0]) if row is not None else 0.0)
        return out

    async def spend_of(
        self, token_id: str, project_id: str
    ) -> tuple[tuple[float, datetime | None], tuple[float, datetime | None]]:
        """(spend, its period's start) of the token and of the project, as stored."""
        async with self.engine.connect() as conn:
            token = (
                await conn.execute(
                    select(tokens.c.spend_usd, tokens.c.budget_started_at).where(
                        tokens.c.id == token_id
                    )
                )
            ).first()
            project = (
                await conn.execute(
                    select(projects.c.spend_usd, projects.c.budget_started_at).where(
                        projects.c.id == project_id
                    )
                )
            ).first()
        return (
            (float(token[0] or 0.0), utc(token[1])) if token else (0.0, None),
            (float(project[0] or 0.0), utc(project[1])) if project else (0.0, None),
        )

    async def consume(self, token_id: str, now: datetime) -> bool:
        """Count one request against a lifetime quota, atomically: the row is
        updated only while ``request_count < max_requests``, so concurrent
        instances can never together exceed it."""
        async with self.engine.begin() as conn:
            result = await conn.execute(
                update(tokens)
                .where(
                    tokens.c.id == token_id,
                    tokens.c.max_requests.is_not(None),
                    tokens.c.request_count < tokens.c.max_requests,
                )
                .values(request_count=tokens.c.request_count + 1, last_used_at=now)
            )
        return bool(result.rowcount)

    # ------------------------------------------------------------ instances

    async def beat(self, instance_id: str, loaded: int, at: float) -> None:
        """This instance has loaded revision ``loaded`` and is alive (its row, upserted)."""
        async with self.engine.begin() as conn:
            result = await conn.execute(
                update(instances)
                .where(instances.c.id == instance_id)
                .values(revision=loaded, beat=instances.c.beat + 1, seen_at=at)
            )
            if result.rowcount == 0:  # only this instance writes its row: no race
                await conn.execute(
                    insert(instances).values(id=instance_id, revision=loaded, beat=1, seen_at=at)
                )

    async def instances(self) -> list[InstanceRecord]:
        async with self.engine.connect() as conn:
            rows = await conn.execute(select(instances))
            return [InstanceRecord(r.id, r.revision, r.beat, r.seen_at) for r in rows]

    async def leave(self, instance_id: str) -> None:
        async with self.engine.begin() as conn:
            await conn.execute(instances.delete().where(instances.c.id == instance_id))

    async def forget_instance(self, instance_id: str, beat: int) -> None:
        """Drop an instance's row if it has not beaten since ``beat`` (one that
        beats again writes its row anew)."""
        async with self.engine.begin() as conn:
            await conn.execute(
                instances.delete().where(instances.c.id == instance_id, instances.c.beat == beat)
            )

    async def forget_instances(self, seen_before: float) -> None:
        """Drop the rows of instances gone without leaving (killed, lost)."""
        async with self.engine.begin() as conn:
            await conn.execute(instances.delete().where(instances.c.seen_at < seen_before))

    # ------------------------------------------------------------ audit

    async def add_audit(self, events: list[AuditRecord]) -> None:
        if not events:
            return
        # Idempotent by id: an event delivered twice by the bus is stored once.
        if self.engine.dialect.name == "postgresql":
            from sqlalchemy.dialects.postgresql import insert as dialect_insert
        else:
            from sqlalchemy.dialects.sqlite import insert as dialect_insert  # type: ignore[assignment]
        statement = dialect_insert(audit_events).on_conflict_do_nothing(index_elements=["id"])
        async with self.engine.begin() as conn:
            await conn.execute(statement, [_fields(e) for e in events])

    async def query_audit(self, query: AuditQuery) -> tuple[list[AuditRecord], int]:
        conditions = []
        c = audit_events.c
        if query.since is not None:
            conditions.append(c.ts >= query.since)
        if query.until is not None:
            conditions.append(c.ts <= query.until)
        for column, value in (
            (c.project_id, query.project_id),
            (c.token_id, query.token_id),
            (c.action, query.action),
            (c.outcome, query.outcome),
        ):
            if value is not None:
                conditions.append(column == value)
        page = (
            select(audit_events)
            .where(*conditions)
            .order_by(c.ts.desc(), c.id.desc())
            .limit(query.page_size)
            .offset((query.page - 1) * query.page_size)
        )
        async with self.engine.connect() as conn:
            total = await conn.scalar(
                select(func.count()).select_from(audit_events).where(*conditions)
            )
            rows = [_audit(r) for r in await conn.execute(page)]
        return rows, int(total or 0)

    async def get_audit(self, event_id: str) -> AuditRecord | None:
        async with self.engine.connect() as conn:
            row = (
                await conn.execute(select(audit_events).where(audit_events.c.id == event_id))
            ).first()
        return _audit(row) if row else None


def _now() -> datetime:
    return datetime.now(UTC)
