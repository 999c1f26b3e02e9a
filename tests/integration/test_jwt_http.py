"""The JWTs `vdm token generate` issues for gRPC, accepted on the HTTP doors
with the same secret and the same revocation list (issue: control plane)."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import anthropic
import httpx
import jwt
import openai
import pytest

from tests.support.cli import run_vdm
from tests.support.gateway import Gateway, run_gateway
from tests.support.waiting import eventually

SECRET = "s" * 48
ASK = [{"role": "user", "content": "hello"}]


def vdm(home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {"HOME": str(home), "XDG_CONFIG_HOME": str(home / ".config"), "VDM_JWT_SECRET": SECRET}
    return run_vdm(args, env)


@pytest.fixture(scope="module")
def guarded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    tmp = tmp_path_factory.mktemp("jwt-http")
    with run_gateway({"PROXY_API_KEY": "proxy-key", "VDM_JWT_SECRET": SECRET}, tmp) as gateway:
        yield gateway


def home_of(gateway: Gateway) -> Path:
    return gateway.log_path.parent / "home"


def token(gateway: Gateway, subject: str = "team-a") -> str:
    done = vdm(home_of(gateway), "token", "generate", subject, "--expires-in", "1h")
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def status(gateway: Gateway, credential: str) -> httpx.Response:
    return httpx.post(
        gateway.url + "/v1/messages",
        timeout=10,
        headers={"authorization": f"Bearer {credential}"},
        json={"model": "echo:echo", "max_tokens": 5, "messages": ASK},
    )


def test_a_jwt_opens_both_doors(guarded: Gateway) -> None:
    issued = token(guarded)
    with anthropic.Anthropic(base_url=guarded.url, api_key=issued, max_retries=0) as client:
        message = client.messages.create(model="echo:echo", max_tokens=5, messages=ASK)  # type: ignore[arg-type]
    assert message.content[0].text == "hello"  # type: ignore[union-attr]
    with openai.OpenAI(base_url=guarded.url + "/v1", api_key=issued, max_retries=0) as oai:
        answer = oai.chat.completions.create(model="echo:echo", messages=ASK)  # type: ignore[arg-type]
    assert answer.choices[0].message.content == "hello"
    assert status(guarded, "proxy-key").status_code == 200  # the simple mode still works
    assert issued not in guarded.log()


@pytest.mark.parametrize(
    ("forge", "reason"),
    [
        (
            lambda: jwt.encode(
                {
                    "sub": "x",
                    "iss": "vdm",
                    "iat": int(time.time()),
                    "exp": int(time.time()) + 60,
                    "jti": "j1",
                },
                "another-secret" * 4,
                algorithm="HS256",
            ),
            "bad signature",
        ),
        (
            lambda: jwt.encode(
                {
                    "sub": "x",
                    "iss": "vdm",
                    "iat": int(time.time()) - 120,
                    "exp": int(time.time()) - 60,
                    "jti": "j2",
                },
                SECRET,
                algorithm="HS256",
            ),
            "expired",
        ),
        (
            lambda: jwt.encode(
                {
                    "sub": "x",
                    "iss": "vdm",
                    "iat": int(time.time()),
                    "exp": int(time.time()) + 60,
                    "jti": "j3",
                },
                None,
                algorithm="none",
            ),
            "malformed",
        ),
        (
            lambda: jwt.encode(
                {
                    "sub": "x",
                    "iss": "vdm",
                    "iat": int(time.time()),
                    "exp": int(time.time()) + 60,
                    "jti": "j4",
                },
                SECRET * 2,
                algorithm="HS512",
            ),
            "malformed",
        ),
    ],
)
def test_bad_jwts_are_401_naming_why(guarded: Gateway, forge: object, reason: str) -> None:
    response = status(guarded, forge())  # type: ignore[operator]
    assert response.status_code == 401
    assert response.json()["error"]["type"] == "authentication_error"
    assert reason in response.json()["error"]["message"]


def test_a_revoked_jwt_is_refused_on_the_next_requests(guarded: Gateway) -> None:
    issued = token(guarded, "soon-revoked")
    assert status(guarded, issued).status_code == 200
    jti = jwt.decode(issued, options={"verify_signature": False})["jti"]
    done = vdm(home_of(guarded), "token", "revoke", jti)
    assert done.returncode == 0, done.stderr
    response = eventually(
        lambda: status(guarded, issued), lambda r: r.status_code != 200, every=0.1
    )
    assert response.status_code == 401, "revocation not seen"
    assert "revoked" in response.json()["error"]["message"]


def test_an_open_gateway_does_not_start_checking_for_jwts(tmp_path: Path) -> None:
    with run_gateway({"VDM_JWT_SECRET": SECRET}, tmp_path) as gateway:
        assert status(gateway, "anything").status_code == 200
        response = httpx.post(
            gateway.url + "/v1/messages",
            timeout=10,
            json={"model": "echo:echo", "max_tokens": 5, "messages": ASK},
        )
        assert response.status_code == 200


def test_a_jwt_request_without_a_control_plane_is_logged_in_full(guarded: Gateway) -> None:
    """PROXY_API_KEY + VDM_JWT_SECRET, no database: the request's usage and access
    line are recorded after its answer, with no traceback."""
    response = httpx.post(
        guarded.url + "/v1/messages",
        timeout=10,
        headers={"authorization": f"Bearer {token(guarded)}", "x-request-id": "jwt-no-plane"},
        json={"model": "echo:echo", "max_tokens": 5, "messages": ASK},
    )
    assert response.status_code == 200
    log = guarded.wait_log("request_id=jwt-no-plane")
    assert "POST /v1/messages 200 echo:echo" in log
    assert "Traceback" not in log and "AttributeError" not in log
