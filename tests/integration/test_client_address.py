"""The client address in audit rows is the peer's, unless the peer is a proxy the
operator named (TRUSTED_PROXIES): X-Forwarded-For is no one's to forge."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from tests.support.gateway import run_gateway

MGMT = "client-address-mgmt-token-0123"
FORGED = "203.0.113.9"


def refused_login_address(tmp: Path, **extra: str) -> str | None:
    env = {"MANAGEMENT_TOKEN": MGMT, "DATABASE_URL": f"sqlite:///{tmp / 'vdm.db'}", **extra}
    with run_gateway(env, tmp) as gw:
        refused = httpx.get(
            gw.url + "/manage/projects",
            headers={"authorization": "Bearer wrong", "x-forwarded-for": FORGED},
            timeout=10,
        )
        assert refused.status_code == 401
        audit = httpx.get(
            gw.url + "/manage/audit",
            params={"action": "manage.authenticate"},
            headers={"authorization": f"Bearer {MGMT}"},
            timeout=10,
        ).json()
    (event,) = audit["events"]
    return event["client_ip"]  # type: ignore[no-any-return]


def test_x_forwarded_for_is_not_believed_by_default(tmp_path: Path) -> None:
    assert refused_login_address(tmp_path) == "127.0.0.1"


@pytest.mark.parametrize("trusted", ["127.0.0.1", "127.0.0.0/8, ::1"])
def test_a_trusted_proxy_names_the_client(tmp_path: Path, trusted: str) -> None:
    assert refused_login_address(tmp_path, TRUSTED_PROXIES=trusted) == FORGED


def test_an_untrusted_peer_is_not_believed_with_proxies_configured(tmp_path: Path) -> None:
    assert refused_login_address(tmp_path, TRUSTED_PROXIES="10.0.0.0/8") == "127.0.0.1"
