"""schemathesis against /manage/openapi.json: no 5xx, responses match the schema."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    response_schema_conformance,
    status_code_conformance,
)

from tests.support.gateway import Gateway, run_gateway

MGMT = "schema-mgmt-token-0123456789"
AUTH = {"authorization": f"Bearer {MGMT}"}


@pytest.fixture(scope="module")
def manage_gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    tmp: Path = tmp_path_factory.mktemp("schema")
    with run_gateway(
        {"MANAGEMENT_TOKEN": MGMT, "DATABASE_URL": f"sqlite:///{tmp / 'db'}"}, tmp
    ) as gw:
        yield gw


def check(url: str) -> list[str]:
    """Every operation, a dozen generated cases each; the failures, described."""
    schema = schemathesis.openapi.from_url(url + "/manage/openapi.json", headers=AUTH)
    checks = [not_a_server_error, status_code_conformance, response_schema_conformance]
    failures: list[str] = []
    for operation in schema.get_all_operations():
        failures += _check_one(operation.ok(), url, checks)
    return failures


def _check_one(op: Any, url: str, checks: list[Any]) -> list[str]:
    @settings(
        max_examples=12, deadline=None, derandomize=True, suppress_health_check=list(HealthCheck)
    )
    @given(case=op.as_strategy())
    def run(case: schemathesis.Case) -> None:
        response = case.call(headers=AUTH, base_url=url)
        case.validate_response(response, checks=checks)

    try:
        run()
    except Exception as exc:  # every operation's failure is reported, not just the first
        return [f"{op.method.upper()} {op.path}: {exc}"]
    return []


def test_management_api_holds_to_its_schema(manage_gateway: Gateway) -> None:
    # In a process of its own: pytest's assertion rewriting of schemathesis' lazily
    # imported modules trips CPython 3.11.7's gh-106905 deep inside a full run.
    done = subprocess.run(
        [sys.executable, "-m", "tests.integration.test_manage_schema", manage_gateway.url],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=Path(__file__).parents[2],
    )
    assert done.returncode == 0, done.stdout + done.stderr


if __name__ == "__main__":
    problems = check(sys.argv[1])
    print("\n\n".join(problems))
    sys.exit(1 if problems else 0)
