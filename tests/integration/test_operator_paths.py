"""``/metrics``, ``/metrics/running-totals`` and ``/health``'s details show every
tenant's traffic and the gateway's providers: they answer the operator's credential
(``MANAGEMENT_TOKEN``, else ``PROXY_API_KEY``), never a tenant's token; ``/live``
and ``/ready`` stay open; ``vdm health server`` sends the operator's credential."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.support.gateway import Gateway, clean_env, run_gateway

MGMT = "operator-mgmt-token-0123456789"
CLIENT_KEY = "shared-client-key-0123"
ASK = {"model": "echo:e", "max_tokens": 5, "messages": [{"role": "user", "content": "hi"}]}
OPERATOR_PATHS = ("/metrics", "/metrics/running-totals")


@pytest.fixture(scope="module")
def plane(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Gateway, str]]:
    """A control-plane gateway (PROXY_API_KEY for simple clients too) and a tenant token."""
    tmp = tmp_path_factory.mktemp("operator")
    env = {
        "MANAGEMENT_TOKEN": MGMT,
        "PROXY_API_KEY": CLIENT_KEY,
        "DATABASE_URL": f"sqlite:///{tmp / 'vdm.db'}",
    }
    with run_gateway(env, tmp) as gw:
        api = httpx.Client(base_url=gw.url, headers={"authorization": f"Bearer {MGMT}"})
        with api:
            project = api.post("/manage/projects", json={"name": "tenant"}).json()
            token = api.post("/manage/tokens", json={"project_id": project["id"]}).json()["token"]
        assert httpx.post(
            gw.url + "/v1/messages", json=ASK, headers={"x-api-key": token}
        ).is_success
        yield gw, token


def get(gw: Gateway, path: str, credential: str | None = None) -> httpx.Response:
    headers = {"authorization": f"Bearer {credential}"} if credential else {}
    return httpx.get(gw.url + path, headers=headers, timeout=10)


@pytest.mark.parametrize("path", OPERATOR_PATHS)
def test_a_tenant_token_does_not_read_the_operators_figures(
    plane: tuple[Gateway, str], path: str
) -> None:
    gw, token = plane
    for credential in (token, CLIENT_KEY, None):  # the shared client key is a client's too
        reply = get(gw, path, credential)
        assert reply.status_code == 401, (credential, reply.text)
        assert "MANAGEMENT_TOKEN" in reply.json()["error"]["message"]
    assert get(gw, path, MGMT).status_code == 200


def test_health_shows_a_tenant_its_status_and_the_operator_the_details(
    plane: tuple[Gateway, str],
) -> None:
    gw, token = plane
    for credential in (token, CLIENT_KEY):
        short = get(gw, "/health", credential)
        assert short.status_code == 200
        assert set(short.json()) == {"status", "version"}
    full = get(gw, "/health", MGMT).json()
    assert full["status"] == "healthy" and "echo" in full["providers"]
    assert get(gw, "/health").status_code == 401
    for probe in ("/live", "/ready"):
        assert get(gw, probe).status_code == 200


def test_a_refused_operator_credential_is_audited(plane: tuple[Gateway, str]) -> None:
    gw, token = plane
    assert get(gw, "/metrics", token).status_code == 401
    with httpx.Client(base_url=gw.url, headers={"authorization": f"Bearer {MGMT}"}) as api:
        events = api.get("/manage/audit", params={"action": "metrics.authenticate"}).json()
    assert events["events"] and events["events"][0]["outcome"] == "failure"
    assert token not in str(events)


def test_vdm_health_sends_the_operators_credential(
    plane: tuple[Gateway, str], tmp_path: Path
) -> None:
    gw, _ = plane
    env = {**clean_env(), "HOME": str(tmp_path), "MANAGEMENT_TOKEN": MGMT}
    done = subprocess.run(
        [sys.executable, "-m", "vdm", "health", "server", "--url", gw.url],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        stdin=subprocess.DEVNULL,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "healthy" in done.stdout and "echo" in done.stdout


def test_without_an_operator_credential_the_figures_are_refused(tmp_path: Path) -> None:
    """Tenants only (DATABASE_URL, no MANAGEMENT_TOKEN nor PROXY_API_KEY): no caller
    may read every tenant's traffic; the answer says what to set."""
    with run_gateway({"DATABASE_URL": f"sqlite:///{tmp_path / 'vdm.db'}"}, tmp_path) as gw:
        for path in OPERATOR_PATHS:
            reply = get(gw, path)
            assert reply.status_code == 403
            assert "set MANAGEMENT_TOKEN" in reply.json()["error"]["message"]


def test_the_proxy_key_is_the_operators_without_a_management_token(tmp_path: Path) -> None:
    with run_gateway({"PROXY_API_KEY": CLIENT_KEY}, tmp_path) as gw:
        for path in OPERATOR_PATHS:
            assert get(gw, path, CLIENT_KEY).status_code == 200
            assert get(gw, path, "wrong-key").status_code == 401
        assert "providers" in get(gw, "/health", CLIENT_KEY).json()
