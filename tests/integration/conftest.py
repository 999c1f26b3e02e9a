"""The gRPC server process shared by the gRPC integration tests."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.conftest import upstream_env
from tests.support.fakes import FakeUpstream
from tests.support.grpc_server import GrpcServer, run_grpc

GRPC_ENV = {
    "GRPC_DEFAULT_MODEL": "fast",
    "GRPC_REQUEST_TIMEOUT": "3",
    "GRPC_MAX_INPUT_LENGTH": "5000",
}


@pytest.fixture(scope="session")
def grpc_server(
    fake_openai: FakeUpstream,
    fake_anthropic: FakeUpstream,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[GrpcServer]:
    """``vdm grpc serve`` (JWT auth on) in front of the session's fake upstreams."""
    env = {**upstream_env(fake_openai, fake_anthropic), **GRPC_ENV}
    with run_grpc(env, tmp_path_factory.mktemp("grpc")) as server:
        yield server


@pytest.fixture(scope="session")
def grpc_token(grpc_server: GrpcServer) -> str:
    return grpc_server.token("session-client")
