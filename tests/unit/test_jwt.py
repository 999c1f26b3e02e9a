"""JWT issue/verify rules (vdm.auth.jwt): each refusal names its reason."""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import sys
import time
from pathlib import Path

import jwt
import pytest

from vdm.auth import jwt as vjwt
from vdm.config import GrpcSettings

SECRET = "unit-test-secret-unit-test-secret-0000"


class NoneRevoked:
    def __init__(self, *revoked: str) -> None:
        self.revoked = set(revoked)

    def is_revoked(self, jti: str) -> bool:
        return jti in self.revoked


def claims(**changes: object) -> dict[str, object]:
    now = int(time.time())
    out = {"sub": "alice", "iss": "vdm", "iat": now, "exp": now + 86400, "jti": "j1", **changes}
    return {k: v for k, v in out.items() if v is not None}


def reason_of(token: str | None, *revoked: str) -> str:
    with pytest.raises(vjwt.TokenRejected) as caught:
        vjwt.Verifier(SECRET, NoneRevoked(*revoked)).verify(token)
    assert SECRET not in caught.value.message
    return caught.value.reason


def test_issue_then_verify() -> None:
    token, issued = vjwt.issue(SECRET, "alice", 3600)
    assert set(issued) == {"sub", "iss", "iat", "exp", "jti"}
    assert issued["exp"] - issued["iat"] == 3600
    principal = vjwt.Verifier(SECRET, NoneRevoked()).verify(token)
    assert (principal.subject, principal.jti) == ("alice", issued["jti"])
    assert jwt.get_unverified_header(token)["alg"] == "HS256"


@pytest.mark.parametrize(
    ("token", "reason"),
    [
        (None, "missing"),
        ("", "missing"),
        ("abc", "malformed"),
        (jwt.encode(claims(exp=int(time.time()) - 1), SECRET, algorithm="HS256"), "expired"),
        (jwt.encode(claims(), "x" * 40, algorithm="HS256"), "bad signature"),
        (jwt.encode(claims(exp=None), SECRET, algorithm="HS256"), "malformed"),
        (jwt.encode(claims(jti=None), SECRET, algorithm="HS256"), "malformed"),
        (jwt.encode(claims(iss="someone-else"), SECRET, algorithm="HS256"), "malformed"),
        (jwt.encode(claims(), SECRET * 2, algorithm="HS512"), "malformed"),  # not HS256
        (jwt.encode(claims(sub=""), SECRET, algorithm="HS256"), "malformed"),
    ],
)
def test_refusals_name_their_reason(token: str | None, reason: str) -> None:
    assert reason_of(token) == reason


def test_revoked_is_checked_on_every_call() -> None:
    token, issued = vjwt.issue(SECRET, "bob", 60)
    revocations = NoneRevoked()
    verifier = vjwt.Verifier(SECRET, revocations)
    verifier.verify(token)  # now cached
    revocations.revoked.add(str(issued["jti"]))
    with pytest.raises(vjwt.TokenRejected) as caught:
        verifier.verify(token)
    assert caught.value.reason == "revoked"


def test_the_cache_does_not_outlive_expiry(monkeypatch: pytest.MonkeyPatch) -> None:
    token, issued = vjwt.issue(SECRET, "carol", 10)
    verifier = vjwt.Verifier(SECRET, NoneRevoked())
    verifier.verify(token)
    later = float(issued["exp"]) + 1  # type: ignore[arg-type]
    monkeypatch.setattr(vjwt.time, "time", lambda: later)
    with pytest.raises(vjwt.TokenRejected) as caught:
        verifier.verify(token)
    assert caught.value.reason == "expired"


@pytest.mark.parametrize(
    ("value", "token"),
    [
        (None, None),
        ("Bearer abc", "abc"),
        ("bearer  abc ", "abc"),
    ],
)
def test_bearer(value: str | None, token: str | None) -> None:
    assert vjwt.bearer(value) == token


@pytest.mark.parametrize("value", ["Basic abc", "Bearer", "Bearer   ", "abc"])
def test_bearer_refuses_other_schemes(value: str) -> None:
    with pytest.raises(vjwt.TokenRejected) as caught:
        vjwt.bearer(value)
    assert caught.value.reason == "malformed"


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("3600s", 3600),
        ("90min", 5400),
        ("12h", 43200),
        ("30d", 30 * 86400),
        ("30", 30 * 86400),
        ("2w", 14 * 86400),
        ("6m", 180 * 86400),
        ("6mo", 180 * 86400),
        ("1y", 365 * 86400),
    ],
)
def test_parse_duration(text: str, seconds: int) -> None:
    assert vjwt.parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "0d", "-1d", "soon", "1.5h", "3x"])
def test_parse_duration_refuses(text: str) -> None:
    with pytest.raises(ValueError, match="not a duration"):
        vjwt.parse_duration(text)


def test_generated_secret_is_private_and_stable(tmp_path: Path) -> None:
    env = {"HOME": str(tmp_path), "XDG_CONFIG_HOME": str(tmp_path / "cfg")}
    first = vjwt.load_secret(GrpcSettings(), env)
    path = tmp_path / "cfg" / "vdm" / "jwt-secret"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert len(first) >= 32
    assert vjwt.load_secret(GrpcSettings(), env) == first
    assert vjwt.load_secret(GrpcSettings(jwt_secret="c" * 32), env) == "c" * 32


def test_processes_generating_the_secret_at_once_agree_on_a_whole_one(tmp_path: Path) -> None:
    """As the workers of --workers N do when no secret exists yet."""
    env = {**os.environ, "HOME": str(tmp_path), "XDG_CONFIG_HOME": str(tmp_path / "cfg")}
    # Each says "ready" once imported, then waits for a line on its standard
    # input: all start their attempt at the same moment, however slow the start.
    code = (
        "import sys; from vdm.auth.jwt import load_secret; "
        "from vdm.config import GrpcSettings; "
        "print('ready', flush=True); sys.stdin.readline(); "
        "print(load_secret(GrpcSettings()))"
    )
    for _ in range(3):
        shutil.rmtree(tmp_path / "cfg", ignore_errors=True)
        runs = [
            subprocess.Popen(
                [sys.executable, "-c", code],
                env=env,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
            )
            for _ in range(6)
        ]
        for run in runs:
            assert run.stdout is not None and run.stdout.readline() == b"ready\n"
        for run in runs:
            assert run.stdin is not None
            run.stdin.write(b"go\n")
            run.stdin.flush()
        secrets = {run.communicate(timeout=30)[0].decode().strip() for run in runs}
        assert len(secrets) == 1 and len(secrets.pop()) >= 32
        assert [p.name for p in (tmp_path / "cfg" / "vdm").iterdir()] == ["jwt-secret"]
