"""The fleet's wait for a killed instance: one lease, once for the whole
deployment (the first instance to take it as gone deletes its row)."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from vdm.store import migrate
from vdm.store.sql import SqlStore, create_engine
from vdm.tenants.fleet import Fleet

LEASE = 0.3


def test_a_killed_instance_is_waited_for_once_by_the_whole_deployment(tmp_path: Path) -> None:
    async def main() -> None:
        engine = create_engine(f"sqlite+aiosqlite:///{tmp_path / 'fleet.db'}")
        try:
            await migrate.upgrade(engine, None)
            store = SqlStore(engine)
            a, b = Fleet(store, "a", LEASE), Fleet(store, "b", LEASE)
            await a.beat(1)
            await b.beat(1)
            await store.beat("killed", 0, time.time())  # it never beats again

            started = time.monotonic()
            assert await a.wait_for(1) == ["killed"]
            assert time.monotonic() - started >= LEASE
            assert {r.id for r in await store.instances()} == {"a", "b"}

            started = time.monotonic()
            assert await b.wait_for(1) == []  # b never waits for it
            assert time.monotonic() - started < LEASE

            # Only frozen, not dead: it beats again and is waited for again.
            await store.beat("killed", 0, time.time())
            assert "killed" in {r.id for r in await store.instances()}
        finally:
            await engine.dispose()

    asyncio.run(main())


def test_a_row_that_beat_again_meanwhile_is_not_deleted(tmp_path: Path) -> None:
    async def main() -> None:
        engine = create_engine(f"sqlite+aiosqlite:///{tmp_path / 'fleet.db'}")
        try:
            await migrate.upgrade(engine, None)
            store = SqlStore(engine)
            await store.beat("slow", 0, time.time())
            [row] = await store.instances()
            await store.beat("slow", 0, time.time())  # it woke up before the delete
            await store.forget_instance("slow", row.beat)
            assert [r.id for r in await store.instances()] == ["slow"]
        finally:
            await engine.dispose()

    asyncio.run(main())
