"""The management API's edges: a body of MAX_BODY_SIZE at most, read only after
the credential passed; failed logins held back per address (ten, then one every
six seconds), each audited, not every guess."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.support.gateway import Gateway, run_gateway

MGMT = "limits-mgmt-token-0123456789"
LIMIT = 64 * 1024


@pytest.fixture(scope="module")
def gw(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    tmp: Path = tmp_path_factory.mktemp("manage-limits")
    env = {
        "MANAGEMENT_TOKEN": MGMT,
        "DATABASE_URL": f"sqlite:///{tmp / 'vdm.db'}",
        "MAX_BODY_SIZE": str(LIMIT),
        "TRUSTED_PROXIES": "127.0.0.1",  # so each test may speak from an address of its own
    }
    with run_gateway(env, tmp) as gateway:
        yield gateway


def client(gw: Gateway, token: str = MGMT, address: str = "127.0.0.1") -> httpx.Client:
    return httpx.Client(
        base_url=gw.url,
        headers={"authorization": f"Bearer {token}", "x-forwarded-for": address},
        timeout=10,
    )


def test_a_body_over_max_body_size_is_a_413(gw: Gateway) -> None:
    with client(gw, address="198.51.100.1") as api:
        big = {"name": "x" * (LIMIT + 1)}
        declared = api.post("/manage/projects", json=big)
        assert declared.status_code == 413, declared.text
        assert "exceeds the limit" in declared.json()["detail"]

        def chunks() -> Iterator[bytes]:  # no content-length: counted as it comes
            yield b'{"name": "'
            for _ in range(LIMIT // 1024 + 1):
                yield b"y" * 1024
            yield b'"}'

        streamed = api.post(
            "/manage/projects", content=chunks(), headers={"content-type": "application/json"}
        )
        assert streamed.status_code == 413
        created = api.post("/manage/projects", json={"name": "fits"})
        assert created.status_code == 201 and created.json()["name"] == "fits"


def test_failed_logins_are_held_back_per_address_and_audited_boundedly(gw: Gateway) -> None:
    attacker = "203.0.113.9"
    with client(gw, token="guess-0123456789", address=attacker) as guesser:
        statuses = [guesser.get("/manage/projects").status_code for _ in range(30)]
        assert statuses == [401] * 10 + [429] * 20
        held = guesser.get("/manage/projects")
        assert 1 <= int(held.headers["retry-after"]) <= 6
        assert "too many failed attempts" in held.json()["detail"]
    with client(gw, address=attacker) as right_but_held:  # held: not even looked at
        assert right_but_held.get("/manage/projects").status_code == 429
    with client(gw, token="guess-0123456789", address=attacker) as guesser:
        assert guesser.get("/metrics").status_code == 429  # one count for every door
    with client(gw, address="192.0.2.50") as operator:  # another address is not held up
        page = operator.get(
            "/manage/audit", params={"action": "manage.authenticate", "page_size": 100}
        ).json()
    mine = [e for e in page["events"] if e["client_ip"] == attacker]
    assert len(mine) == 10  # one per refused guess, none for the held ones
    assert sum("held back" in e["details"]["reason"] for e in mine) == 1
