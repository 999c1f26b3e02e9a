"""Migrations run once, whoever starts first: gateway processes racing on a fresh
database all come up (PostgreSQL: an advisory lock; SQLite: a file lock), the
same code path serves ``vdm db upgrade``, and a gateway that finds a schema
newer than it knows refuses to start with one line saying so."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.support.databases import fresh_database_env
from tests.support.gateway import clean_env, run_gateways, spawn_gateway

MGMT = "mgmt-secret-0123456789abcdef"


@pytest.fixture(params=["postgresql", "sqlite"])
def fresh_db(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[dict[str, str]]:
    yield from fresh_database_env(request.param, tmp_path)


def _env(db: dict[str, str], tmp: Path) -> dict[str, str]:
    return {"MANAGEMENT_TOKEN": MGMT, "AUDIT_LOG_FILE": str(tmp / "audit.jsonl"), **db}


def _serves(url: str) -> None:
    """The database is usable through this gateway: write, then read back."""
    headers = {"authorization": f"Bearer {MGMT}"}
    made = httpx.post(url + "/manage/projects", json={"name": url}, headers=headers, timeout=10)
    assert made.status_code == 201, made.text
    listed = httpx.get(url + "/manage/projects", headers=headers, timeout=10)
    assert listed.status_code == 200 and url in {p["name"] for p in listed.json()}


def _vdm(env: dict[str, str], tmp: Path, *args: str) -> subprocess.CompletedProcess[str]:
    home = tmp / "home"
    home.mkdir(parents=True, exist_ok=True)
    return subprocess.run(
        [sys.executable, "-m", "vdm", *args],
        env={**clean_env(), "HOME": str(home), "COLUMNS": "200", **env},
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_three_gateways_started_at_once_on_a_fresh_database_all_serve(
    fresh_db: dict[str, str], tmp_path: Path
) -> None:
    envs = [(_env(fresh_db, tmp_path / n), tmp_path / n) for n in ("a", "b", "c")]
    with run_gateways(envs) as gateways:
        for gateway in gateways:
            _serves(gateway.url)
    status = _vdm(fresh_db, tmp_path, "db", "status")
    assert status.returncode == 0 and "up to date" in status.stdout, status.stdout + status.stderr


def test_two_workers_on_a_fresh_database_both_start(
    fresh_db: dict[str, str], tmp_path: Path
) -> None:
    # Each worker runs the start-up migration; before the lock, one of them
    # failed and took the supervisor down with it.
    with run_gateways([(_env(fresh_db, tmp_path), tmp_path)], args=["--workers", "2"]) as [gw]:
        _serves(gw.url)


def test_db_upgrade_is_the_start_up_path_and_is_idempotent(
    fresh_db: dict[str, str], tmp_path: Path
) -> None:
    first = _vdm(fresh_db, tmp_path, "db", "upgrade")
    assert first.returncode == 0, first.stdout + first.stderr
    assert "up to date" in first.stdout
    again = _vdm(fresh_db, tmp_path, "db", "upgrade")
    assert again.returncode == 0 and "up to date" in again.stdout, again.stdout + again.stderr
    with run_gateways([(_env(fresh_db, tmp_path), tmp_path)]) as [gw]:
        _serves(gw.url)


def _stamp_newer(env: dict[str, str]) -> None:
    """Pretend a newer vdm migrated this database (a revision this one lacks)."""
    import asyncio

    from sqlalchemy import text

    from vdm.store.migrate import VERSION_TABLE
    from vdm.store.sql import create_engine
    from vdm.tenants.settings import TenantSettings

    async def stamp() -> None:
        engine = create_engine(TenantSettings(database_url=env["DATABASE_URL"]).sqlalchemy_url)
        try:
            async with engine.begin() as conn:
                await conn.execute(text(f"UPDATE {VERSION_TABLE} SET version_num = '9999'"))
        finally:
            await engine.dispose()

    asyncio.run(stamp())


def test_a_gateway_refuses_a_schema_newer_than_it_knows_in_one_line(
    fresh_db: dict[str, str], tmp_path: Path
) -> None:
    assert _vdm(fresh_db, tmp_path, "db", "upgrade").returncode == 0
    _stamp_newer(fresh_db)
    gateway = spawn_gateway(_env(fresh_db, tmp_path), tmp_path)
    try:
        code = gateway.process.wait(30)
    finally:
        if gateway.process.poll() is None:
            gateway.process.kill()
    assert code != 0
    log = gateway.log()
    refusals = [line for line in log.splitlines() if "newer than this vdm" in line]
    assert len(refusals) == 1, log
    assert "9999" in refusals[0] and "Traceback" not in log, log
    upgrade = _vdm(fresh_db, tmp_path, "db", "upgrade")
    assert upgrade.returncode != 0
    assert "newer than this vdm" in upgrade.stdout + upgrade.stderr
