"""schemathesis against /manage/openapi.json: no 5xx, responses match the schema."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

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
    with run_gateway({"MANAGEMENT_TOKEN": MGMT, "DATABASE_URL": f"sqlite:///{tmp / 'db'}"},
                     tmp) as gw:
        yield gw


def test_management_api_holds_to_its_schema(manage_gateway: Gateway) -> None:
    schema = schemathesis.openapi.from_url(manage_gateway.url + "/manage/openapi.json",
                                           headers=AUTH)
    checks = [not_a_server_error, status_code_conformance, response_schema_conformance]
    failures: list[str] = []
    for operation in schema.get_all_operations():
        op = operation.ok()

        @settings(max_examples=12, deadline=None, derandomize=True,
                  suppress_health_check=list(HealthCheck))
        @given(case=op.as_strategy())
        def run(case: schemathesis.Case) -> None:
            response = case.call(headers=AUTH, base_url=manage_gateway.url)
            case.validate_response(response, checks=checks)

        try:
            run()
        except Exception as exc:  # collect every operation's failure, then report all
            failures.append(f"{op.method.upper()} {op.path}: {exc}")
    assert not failures, "\n\n".join(failures)
