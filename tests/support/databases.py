"""The two databases every storage test runs against.

SQLite is a file in the test's tmp dir; PostgreSQL is the server on
127.0.0.1:5432 (database ``test``), each test in a schema of its own, dropped
afterwards, so parallel runs never collide.  Without that server the
PostgreSQL cases are skipped, except under ``CI=true``, where they fail.
"""

from __future__ import annotations

import os
import secrets
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

PG_URL = os.environ.get("VDM_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test")
PG_KEY = "bmZ0pL6l2m5yq3bQ3d2wQp5o1o1w8o8Yb8xk7cH0r1s="  # a Fernet key, for tests only


def postgres_available() -> bool:
    try:
        with socket.create_connection(("127.0.0.1", 5432), timeout=1):
            return True
    except OSError:
        return False


def require_postgres() -> None:
    if postgres_available():
        return
    if os.environ.get("CI") == "true":
        pytest.fail("PostgreSQL is not reachable on 127.0.0.1:5432 (database 'test'); CI needs it")
    pytest.skip("PostgreSQL is not reachable on 127.0.0.1:5432 (database 'test')")


def _drop_schema(schema: str) -> None:
    import asyncio

    import asyncpg

    async def drop() -> None:
        conn = await asyncpg.connect(PG_URL)
        try:
            await conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
        finally:
            await conn.close()

    asyncio.run(drop())


def _admin(statement: str) -> None:
    """Run one statement outside a transaction (CREATE/DROP DATABASE) as the test user."""
    import asyncio

    import asyncpg

    async def run() -> None:
        conn = await asyncpg.connect(PG_URL)
        try:
            await conn.execute(statement)
        finally:
            await conn.close()

    asyncio.run(run())


def fresh_database_env(kind: str, tmp: Path) -> Iterator[dict[str, str]]:
    """Environment variables that point vdm at a database nobody has touched: a
    new SQLite file, or a uniquely named PostgreSQL database (not a schema in
    ``test``: racing migrations on a fresh database is what this is for),
    dropped afterwards."""
    if kind == "sqlite":
        yield {"DATABASE_URL": f"sqlite:///{tmp / 'fresh.db'}"}
        return
    require_postgres()
    name = f"vdm_fresh_{os.getpid()}_{secrets.token_hex(4)}"
    _admin(f'CREATE DATABASE "{name}"')
    try:
        # Instances sharing PostgreSQL must be given one credentials' key.
        yield {"DATABASE_URL": PG_URL.rsplit("/", 1)[0] + "/" + name, "VDM_ENCRYPTION_KEY": PG_KEY}
    finally:
        _admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def database_env(kind: str, tmp: Path) -> Iterator[dict[str, str]]:
    """Environment variables that point vdm at a fresh database of ``kind``."""
    if kind == "sqlite":
        yield {"DATABASE_URL": f"sqlite:///{tmp / 'vdm-test.db'}"}
        return
    require_postgres()
    schema = f"vdm_test_{os.getpid()}_{secrets.token_hex(4)}"
    try:
        # A shared database: every instance is given the same credentials' key.
        yield {"DATABASE_URL": PG_URL, "DATABASE_SCHEMA": schema, "VDM_ENCRYPTION_KEY": PG_KEY}
    finally:
        _drop_schema(schema)
