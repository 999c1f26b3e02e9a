"""Every storage operation against SQLite and PostgreSQL (tests/support/databases.py)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import update
from sqlalchemy.exc import DBAPIError

from tests.support.databases import database_env
from vdm.store import Conflict, Missing, migrate
from vdm.store.records import AuditQuery, AuditRecord, ProjectRecord, TokenRecord, UsageDelta
from vdm.store.schema import tokens
from vdm.store.sql import IDLE_IN_TRANSACTION_SECONDS, SqlStore, create_engine
from vdm.tenants.settings import TenantSettings

T0 = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)


@pytest.fixture(params=["sqlite", "postgresql"])
def db_env(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[dict[str, str]]:
    yield from database_env(request.param, tmp_path)


def run(env: dict[str, str], body: Callable[[SqlStore], Awaitable[Any]]) -> Any:
    settings = TenantSettings(
        database_url=env["DATABASE_URL"], database_schema=env.get("DATABASE_SCHEMA")
    )

    async def main() -> Any:
        engine = create_engine(settings.sqlalchemy_url, settings.database_schema)
        try:
            await migrate.upgrade(engine, settings.database_schema)
            return await body(SqlStore(engine))
        finally:
            await engine.dispose()

    return asyncio.run(main())


def project(name: str = "alpha", id_: str = "p1") -> ProjectRecord:
    return ProjectRecord(id_, name, True, {"openai": "plain:sk-x"}, T0, T0)


def token(id_: str = "t1", project_id: str = "p1", **extra: Any) -> TokenRecord:
    return TokenRecord(
        id=id_,
        project_id=project_id,
        token_hash="h" + id_,
        hint="sk-vdm-…",
        created_at=T0,
        updated_at=T0,
        **extra,
    )


def test_migrations_upgrade_once_and_report_status(db_env: dict[str, str]) -> None:
    async def body(store: SqlStore) -> None:
        await migrate.upgrade(store.engine, db_env.get("DATABASE_SCHEMA"))  # idempotent
        status = await migrate.status(store.engine, db_env.get("DATABASE_SCHEMA"))
        assert status.up_to_date and status.current == "0002"

    run(db_env, body)


def test_project_crud_and_unique_name(db_env: dict[str, str]) -> None:
    async def body(store: SqlStore) -> None:
        r0 = await store.revision()
        await store.create_project(project())
        assert await store.revision() == r0 + 1
        with pytest.raises(Conflict):
            await store.create_project(project(id_="p2"))
        got = await store.get_project("p1")
        assert got is not None and got.name == "alpha" and got.created_at == T0
        assert got.credentials == {"openai": "plain:sk-x"}
        updated = await store.update_project("p1", {"name": "beta", "is_active": False})
        assert updated.name == "beta" and not updated.is_active
        with pytest.raises(Missing):
            await store.update_project("nope", {"name": "x"})
        await store.create_token(token())
        await store.delete_project("p1")
        assert await store.get_project("p1") is None
        assert await store.list_tokens() == []
        with pytest.raises(Missing):
            await store.delete_project("p1")

    run(db_env, body)


def test_tokens_filter_update_and_missing_project(db_env: dict[str, str]) -> None:
    async def body(store: SqlStore) -> None:
        await store.create_project(project())
        await store.create_project(project("other", "p2"))
        await store.create_token(token("t1", max_requests=3, allowed_models=["gpt-4o"]))
        await store.create_token(token("t2", "p2", expires_at=T0 + timedelta(days=1)))
        with pytest.raises(Missing):
            await store.create_token(token("t3", "nope"))
        assert [t.id for t in await store.list_tokens("p1")] == ["t1"]
        assert {t.id for t in await store.list_tokens()} == {"t1", "t2"}
        t2 = await store.get_token("t2")
        assert t2 is not None and t2.expires_at == T0 + timedelta(days=1)
        t1 = await store.update_token("t1", {"is_active": False, "rpm": 5})
        assert not t1.is_active and t1.rpm == 5 and t1.allowed_models == ["gpt-4o"]
        with pytest.raises(Missing):
            await store.update_token("nope", {"rpm": 1})

    run(db_env, body)


def test_usage_write_behind_and_atomic_quota(db_env: dict[str, str]) -> None:
    async def body(store: SqlStore) -> None:
        await store.create_project(project())
        await store.create_token(token("t1", max_requests=10))
        await store.add_usage({"t1": UsageDelta(requests=3, cache_hits=1, last_used_at=T0)})
        t1 = await store.get_token("t1")
        assert t1 is not None and (t1.request_count, t1.cache_hit_count) == (3, 1)
        assert t1.last_used_at == T0
        # 20 concurrent consumers of the 7 requests left: exactly 7 win.
        results = await asyncio.gather(*(store.consume("t1", T0) for _ in range(20)))
        assert sum(results) == 7
        t1 = await store.get_token("t1")
        assert t1 is not None and t1.request_count == 10

    run(db_env, body)


def test_audit_filters_and_pages(db_env: dict[str, str]) -> None:
    async def body(store: SqlStore) -> None:
        events = [
            AuditRecord(
                f"e{i}",
                T0 + timedelta(minutes=i),
                "management",
                "token.create" if i % 2 else "project.create",
                "success" if i < 8 else "failure",
                f"req{i}",
                "127.0.0.1",
                "p1" if i < 5 else "p2",
                "t1" if i == 3 else None,
                details={"i": i},
            )
            for i in range(10)
        ]
        await store.add_audit(events)
        rows, total = await store.query_audit(AuditQuery(page_size=3))
        assert total == 10 and [r.id for r in rows] == ["e9", "e8", "e7"]  # newest first
        rows, _ = await store.query_audit(AuditQuery(page=4, page_size=3))
        assert [r.id for r in rows] == ["e0"]
        rows, total = await store.query_audit(AuditQuery(project_id="p1", action="token.create"))
        assert total == 2 and {r.id for r in rows} == {"e1", "e3"}
        rows, total = await store.query_audit(
            AuditQuery(since=T0 + timedelta(minutes=2), until=T0 + timedelta(minutes=4))
        )
        assert {r.id for r in rows} == {"e2", "e3", "e4"}
        assert (await store.query_audit(AuditQuery(outcome="failure")))[1] == 2
        assert (await store.query_audit(AuditQuery(token_id="t1")))[0][0].id == "e3"
        got = await store.get_audit("e3")
        assert got is not None and got.details == {"i": 3} and got.ts == T0 + timedelta(minutes=3)
        assert await store.get_audit("missing") is None

    run(db_env, body)


INJECTIONS = ["x' OR '1'='1", "'; DROP TABLE vdm_tokens; --", 'p1" OR 1=1 --', "%", "_"]


@pytest.mark.parametrize("evil", INJECTIONS)
def test_sql_injection_shaped_input_is_inert(db_env: dict[str, str], evil: str) -> None:
    async def body(store: SqlStore) -> None:
        await store.create_project(project())
        await store.create_token(token())
        await store.create_project(project(name=evil, id_="p9"))
        assert (await store.get_project("p9")).name == evil  # type: ignore[union-attr]
        assert await store.get_project(evil) is None
        assert await store.list_tokens(evil) == []
        assert (await store.query_audit(AuditQuery(action=evil)))[1] == 0
        assert len(await store.list_tokens()) == 1  # the table is still there

    run(db_env, body)


def test_a_frozen_holder_of_a_token_row_cannot_block_a_revocation_for_long(
    tmp_path: Path,
) -> None:
    """A process stopped mid-transaction (here: one that never commits) holds
    the token's row; PostgreSQL ends its session after the engine's idle limit,
    so the revocation goes through and the frozen work fails (to be retried)."""
    for env in database_env("postgresql", tmp_path):
        settings = TenantSettings(
            database_url=env["DATABASE_URL"], database_schema=env["DATABASE_SCHEMA"]
        )

        async def body(store: SqlStore, settings: TenantSettings = settings) -> None:
            await store.create_project(project())
            await store.create_token(token("t1"))
            frozen = create_engine(
                settings.sqlalchemy_url, settings.database_schema, idle_in_transaction=0.5
            )
            try:
                async with frozen.connect() as conn:
                    limit = await conn.exec_driver_sql("SHOW idle_in_transaction_session_timeout")
                    assert limit.scalar() == "500ms"
                    await conn.execute(
                        update(tokens).where(tokens.c.id == "t1").values(request_count=1)
                    )
                    # The row is locked until the server ends the frozen session;
                    # the bound only keeps a regression from hanging the suite.
                    revoked = await asyncio.wait_for(
                        store.update_token("t1", {"is_active": False}), timeout=60
                    )
                    assert not revoked.is_active
                    with pytest.raises(DBAPIError):
                        await conn.commit()
            finally:
                await frozen.dispose()
            t1 = await store.get_token("t1")
            assert t1 is not None and t1.request_count == 0  # the frozen write never landed

        run(env, body)


def test_the_gateway_s_sessions_are_ended_when_idle_in_a_transaction(tmp_path: Path) -> None:
    for env in database_env("postgresql", tmp_path):

        async def body(store: SqlStore) -> None:
            async with store.engine.connect() as conn:
                limit = await conn.exec_driver_sql("SHOW idle_in_transaction_session_timeout")
                assert limit.scalar() == f"{int(IDLE_IN_TRANSACTION_SECONDS)}s"

        run(env, body)
