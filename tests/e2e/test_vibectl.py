"""The real vibectl client against ``vdm grpc serve``: ``setup-proxy configure``
and ``setup-proxy test`` with a token from ``vdm token generate``, plaintext and TLS."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.e2e.vibectl_cli import ensure_vibectl, run_vibectl, vibectl_env
from tests.support.grpc_server import run_grpc
from vdm import __version__

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def vibectl() -> Path:
    try:
        return ensure_vibectl()
    except RuntimeError as exc:
        if os.environ.get("CI") == "true":
            pytest.fail(f"vibectl is required under CI=true for the interop test: {exc}")
        pytest.skip(f"cannot install vibectl: {exc}")


# The first run installs vibectl (~1.5 min, more on a busy machine) in the fixture,
# which counts against the test's timeout.
@pytest.mark.timeout(900)
@pytest.mark.parametrize("tls", [False, True], ids=["insecure", "tls"])
def test_vibectl_setup_proxy_configures_and_tests_against_vdm(
    vibectl: Path,
    tmp_path: Path,
    tls: bool,
) -> None:
    with run_grpc({"ECHO_ALIAS_QUICK": "echo"}, tmp_path, tls=tls) as server:
        token = server.token("vibectl-user", "1d")
        env = vibectl_env(tmp_path / "vibectl-home")
        if tls:
            env["VIBECTL_CA_BUNDLE"] = str(tmp_path / "server.crt")
            url = f"vibectl-server://{token}@localhost:{server.port}"
        else:
            url = f"vibectl-server-insecure://{token}@127.0.0.1:{server.port}"
        configured = run_vibectl(vibectl, "setup-proxy", "configure", "vdm", url, env=env)
        assert configured.returncode == 0, configured.stdout + configured.stderr
        assert "Connection test successful" in configured.stdout
        tested = run_vibectl(vibectl, "setup-proxy", "test", env=env)
        out = tested.stdout
        assert tested.returncode == 0, out + tested.stderr
        assert "Connection successful" in out
        assert "vdm-llm-proxy" in out
        assert __version__ in out
        assert "echo:echo" in out and "quick" in out  # our models, aliases included
        # and a call without the token is refused
        bare = url.replace(f"{token}@", "")
        refused = run_vibectl(vibectl, "setup-proxy", "test", bare, env=env)
        assert refused.returncode != 0
        assert "requires JWT authentication" in refused.stdout + refused.stderr  # UNAUTHENTICATED
