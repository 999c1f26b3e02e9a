"""``[grpc]`` / ``GRPC_*`` / ``VDM_JWT_SECRET*`` settings and their errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from vdm.config import ConfigError, load_settings


def settings(tmp_path: Path, **env: str):  # type: ignore[no-untyped-def]
    return load_settings(env={"HOME": str(tmp_path), **env}, cwd=tmp_path)


def problems(tmp_path: Path, **env: str) -> str:
    with pytest.raises(ConfigError) as caught:
        settings(tmp_path, **env)
    return "\n".join(caught.value.problems)


def test_defaults(tmp_path: Path) -> None:
    grpc = settings(tmp_path, REQUEST_TIMEOUT="42").grpc
    assert grpc.port is None and grpc.tls_cert is None and grpc.jwt_secret is None
    assert grpc.max_input_length == 1_000_000 and grpc.request_timeout == 42
    assert grpc.max_requests_per_minute is None


def test_environment(tmp_path: Path) -> None:
    grpc = settings(
        tmp_path,
        GRPC_PORT="50052",
        GRPC_MAX_REQUESTS_PER_MINUTE="60",
        GRPC_MAX_CONCURRENT_REQUESTS_PER_TOKEN="2",
        GRPC_DEFAULT_MODEL="fast",
        VDM_JWT_SECRET="s" * 32,
    ).grpc
    assert (
        grpc.port,
        grpc.max_requests_per_minute,
        grpc.max_concurrent_requests_per_token,
        grpc.default_model,
        grpc.jwt_secret,
    ) == (50052, 60, 2, "fast", "s" * 32)
    assert "s" * 32 not in repr(grpc)  # the secret stays out of reprs (and so of logs)


def test_toml_and_secret_file(tmp_path: Path) -> None:
    secret = tmp_path / "secret"
    secret.write_text("f" * 40 + "\n")
    (tmp_path / "vdm.toml").write_text(
        f'[grpc]\nport = 6000\nmax-input-length = 10\njwt-secret-file = "{secret}"\n'
    )
    grpc = settings(tmp_path).grpc
    assert (grpc.port, grpc.max_input_length, grpc.jwt_secret) == (6000, 10, "f" * 40)


def test_errors_are_collected_and_name_their_source(tmp_path: Path) -> None:
    (tmp_path / "vdm.toml").write_text("[grpc]\nportt = 1\n")
    out = problems(
        tmp_path,
        GRPC_PORT="http",
        GRPC_MAX_CONCURRENT_REQUESTS="0",
        GRPC_TLS_CERT=str(tmp_path / "missing.crt"),
        VDM_JWT_SECRET="short",
    )
    for expected in (
        "grpc.portt",
        "GRPC_PORT",
        "GRPC_MAX_CONCURRENT_REQUESTS",
        "GRPC_TLS_CERT: no such file",
        "GRPC_TLS_KEY",
        "VDM_JWT_SECRET: the JWT secret must be at least 32 bytes",
    ):
        assert expected in out
    assert "short" not in out.replace("VDM_JWT_SECRET", "")


def test_unreadable_secret_file(tmp_path: Path) -> None:
    out = problems(tmp_path, VDM_JWT_SECRET_FILE=str(tmp_path / "nope"))
    assert "VDM_JWT_SECRET_FILE: cannot read the secret file" in out
