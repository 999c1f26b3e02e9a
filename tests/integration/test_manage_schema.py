"""schemathesis against /manage/openapi.json, every check, a fixed seed: every
phase (coverage, fuzzing, stateful) finds no failure.  The run is schemathesis'
own command line in a process of its own (its checks need its runner), bounded
to a few examples per operation so it takes seconds, not minutes."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.support.gateway import Gateway, run_gateway

MGMT = "schema-mgmt-token-0123456789"
ROOT = Path(__file__).parents[2]
SEED = "20261207"


@pytest.fixture(scope="module")
def manage_gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    tmp: Path = tmp_path_factory.mktemp("schema")
    with run_gateway(
        {"MANAGEMENT_TOKEN": MGMT, "DATABASE_URL": f"sqlite:///{tmp / 'db'}"}, tmp
    ) as gw:
        yield gw


def test_management_api_holds_to_its_schema(manage_gateway: Gateway, tmp_path: Path) -> None:
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "SCHEMATHESIS_HOOKS": "tests.integration.manage_schema_checks",
    }
    done = subprocess.run(
        [
            str(Path(sys.executable).parent / "schemathesis"),
            "run",
            manage_gateway.url + "/manage/openapi.json",
            "--checks",
            "all",
            "--exclude-checks",
            "positive_data_acceptance",  # (with the expiry rule: manage_schema_checks)
            "--seed",
            SEED,
            "--max-examples",
            "25",
            "--workers",
            "1",
            "--generation-database",
            "none",
            "--no-color",
            "-H",
            f"Authorization: Bearer {MGMT}",
        ],
        capture_output=True,
        text=True,
        timeout=240,
        cwd=tmp_path,  # (its report files)
        env=env,
    )
    assert done.returncode == 0, done.stdout[-20000:] + done.stderr[-5000:]
    assert re.search(r"Selected: (\d+)/\1\s+Tested: \1\b", done.stdout), done.stdout[-3000:]


# The rules the schema checks found broken, one by one.


def api(gw: Gateway) -> httpx.Client:
    return httpx.Client(base_url=gw.url, headers={"authorization": f"Bearer {MGMT}"}, timeout=10)


def test_a_method_the_path_lacks_is_a_405_naming_those_it_has(manage_gateway: Gateway) -> None:
    with api(manage_gateway) as client:
        for path, allowed in (
            ("/manage/projects", "GET, POST"),
            ("/manage/tokens/some-id", "DELETE, GET, PATCH, PUT"),
        ):
            reply = client.options(path)
            assert reply.status_code == 405
            assert reply.headers["allow"] == allowed
            assert allowed in reply.json()["detail"]


def test_field_rules_are_422s_naming_the_field(manage_gateway: Gateway) -> None:
    with api(manage_gateway) as client:
        unknown = client.post("/manage/projects", json={"name": "u", "api_keys": {"nope": "k"}})
        assert unknown.status_code == 422
        assert unknown.json()["detail"][0]["loc"] == ["body", "api_keys", "nope"]
        schema = client.get("/manage/openapi.json").json()["components"]["schemas"]
        keys = schema["ProjectCreate"]["properties"]["api_keys"]["anyOf"][0]
        assert keys["propertyNames"] == {"enum": ["echo"]}  # the configured providers
        assert (
            client.post("/manage/projects", json={"name": "b", "is_active": 0}).status_code == 422
        )
        assert client.get("/manage/audit", params={"until": "0.5"}).status_code == 422
        project = client.post("/manage/projects", json={"name": "expiry"}).json()
        past = client.post(
            "/manage/tokens",
            json={"project_id": project["id"], "expires_at": "2000-01-01T00:00:00Z"},
        )
        assert past.status_code == 422 and "in the past" in past.text
        both = client.post(
            "/manage/tokens",
            json={
                "project_id": project["id"],
                "duration_minutes": 5,
                "expires_at": "2100-01-01T00:00:00Z",
            },
        )
        assert both.status_code == 422 and "not both" in both.text
        assert "not" in schema["TokenCreate"]  # the rule is in the schema too
        assert client.post(
            "/manage/tokens",
            json={"project_id": project["id"], "expires_at": "2100-01-01T00:00:00Z"},
        ).is_success
