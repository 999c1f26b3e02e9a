"""The credential that lets a client into the gateway never leaves it.

One real gateway that checks credentials (``PROXY_API_KEY``, API tokens with
``MANAGEMENT_TOKEN``, JWTs) in front of two ``!PASSTHRU`` providers, one per wire
family, on fake upstreams that record every request.  On every door, a
``!PASSTHRU`` provider gets the client's *other* credential, and a client that
sent only the gateway's gets a 401 saying how to send one, with the upstream
asked nothing.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import httpx
import jwt
import pytest

from tests.support.fakes import FakeUpstream, JSONReply, Recorded, Reply, anthropic_message
from tests.support.fakes import completion as chat_completion
from tests.support.gateway import Gateway, run_gateway

PROXY = "proxy-secret-0123456789"
MGMT = "mgmt-secret-0123456789abcdef"
JWT_SECRET = "j" * 48
PROVIDER_KEY = "sk-provider-own-4242"
ASK = [{"role": "user", "content": "hi"}]
EMBEDDING = {
    "object": "list",
    "model": "emb",
    "usage": {"prompt_tokens": 2, "total_tokens": 2},
    "data": [{"object": "embedding", "index": 0, "embedding": [0.1]}],
}

# door -> (method, path, JSON body, the fake that should be asked)
DOORS: dict[str, tuple[str, str, dict[str, Any] | None, str]] = {
    "messages->anthropic": (
        "POST",
        "/v1/messages",
        {"model": "antp:claude-x", "max_tokens": 5, "messages": ASK},
        "anthropic",
    ),
    "messages->openai": (
        "POST",
        "/v1/messages",
        {"model": "own:gpt-x", "max_tokens": 5, "messages": ASK},
        "openai",
    ),
    "count_tokens": (
        "POST",
        "/v1/messages/count_tokens",
        {"model": "antp:claude-x", "messages": ASK},
        "anthropic",
    ),
    "chat": ("POST", "/v1/chat/completions", {"model": "own:gpt-x", "messages": ASK}, "openai"),
    "responses": ("POST", "/v1/responses", {"model": "own:gpt-x", "input": "hi"}, "openai"),
    "embeddings": ("POST", "/v1/embeddings", {"model": "own:emb", "input": "x"}, "openai"),
    "files": ("GET", "/v1/files/file-abc", None, "openai"),
}


def _openai_answer(recorded: Recorded) -> Reply:
    if recorded.path.endswith("/chat/completions"):
        return JSONReply(chat_completion("ok"))
    if recorded.path.endswith("/embeddings"):
        return JSONReply(EMBEDDING)
    if recorded.path.endswith("/models"):
        return JSONReply({"object": "list", "data": [{"id": "private-ft", "object": "model"}]})
    return JSONReply({"id": "file-abc", "object": "file"})


def _anthropic_answer(recorded: Recorded) -> Reply:
    if recorded.path.endswith("/count_tokens"):
        return JSONReply({"input_tokens": 3})
    if recorded.path.endswith("/models"):
        return JSONReply({"data": [{"id": "claude-private", "type": "model"}], "has_more": False})
    return JSONReply(anthropic_message("ok"))


@pytest.fixture(scope="module")
def locked(
    fake_openai: FakeUpstream,
    fake_anthropic: FakeUpstream,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Gateway]:
    tmp = tmp_path_factory.mktemp("passthru-credentials")
    env = {
        "OWN_API_KEY": "!PASSTHRU",
        "OWN_BASE_URL": fake_openai.url + "/v1",
        "ANTP_API_KEY": "!PASSTHRU",
        "ANTP_BASE_URL": fake_anthropic.url,
        "ANTP_API_FORMAT": "anthropic",
        "VDM_DEFAULT_PROVIDER": "own",
        "PROXY_API_KEY": PROXY,
        "MANAGEMENT_TOKEN": MGMT,
        "DATABASE_URL": f"sqlite:///{tmp / 'vdm.db'}",
        "VDM_JWT_SECRET": JWT_SECRET,
        "MAX_RETRIES": "0",
    }
    with run_gateway(env, tmp) as gw:
        yield gw


@pytest.fixture
def fakes(fake_openai: FakeUpstream, fake_anthropic: FakeUpstream) -> dict[str, FakeUpstream]:
    fake_openai.responder = _openai_answer
    fake_anthropic.responder = _anthropic_answer
    yield {"openai": fake_openai, "anthropic": fake_anthropic}
    fake_openai.responder = None
    fake_anthropic.responder = None


def a_jwt() -> str:
    now = int(time.time())
    claims = {"sub": "team-a", "iss": "vdm", "iat": now, "exp": now + 600, "jti": "j-1"}
    return jwt.encode(claims, JWT_SECRET, algorithm="HS256")


def call(gw: Gateway, door: str, headers: dict[str, str]) -> httpx.Response:
    method, path, body, _ = DOORS[door]
    return httpx.request(method, gw.url + path, json=body, headers=headers, timeout=20)


def everything_sent(fakes: dict[str, FakeUpstream]) -> str:
    return repr([(r.headers, r.target, r.body) for f in fakes.values() for r in f.requests])


@pytest.mark.parametrize("door", list(DOORS))
@pytest.mark.parametrize(
    "placement",
    ["gateway in x-api-key, provider in bearer", "gateway in bearer, provider in x-api-key"],
)
def test_the_provider_gets_the_other_credential(
    locked: Gateway, fakes: dict[str, FakeUpstream], door: str, placement: str
) -> None:
    if placement.startswith("gateway in x-api-key"):
        headers = {"x-api-key": PROXY, "authorization": f"Bearer {PROVIDER_KEY}"}
    else:
        headers = {"authorization": f"Bearer {PROXY}", "x-api-key": PROVIDER_KEY}
    response = call(locked, door, headers)
    assert response.status_code == 200, response.text
    fake = fakes[DOORS[door][3]]
    sent = fake.last.headers
    if fake is fakes["anthropic"]:
        assert sent["x-api-key"] == PROVIDER_KEY
    else:
        assert sent["authorization"] == f"Bearer {PROVIDER_KEY}"
    assert PROXY not in everything_sent(fakes)


@pytest.mark.parametrize("door", list(DOORS))
@pytest.mark.parametrize(
    "headers",
    [
        {"x-api-key": PROXY},
        {"authorization": f"Bearer {PROXY}"},
        {"x-api-key": PROXY, "authorization": f"Bearer {PROXY}"},
        {"x-api-key": PROXY, "authorization": f"Bearer {MGMT}"},  # the management token
        {"x-api-key": PROXY, "authorization": "Bearer sk-vdm-not-a-provider-key"},
    ],
    ids=["x-api-key", "bearer", "both", "management-token", "a-token-shaped-other"],
)
def test_the_gateways_credential_alone_is_a_401_that_says_how(
    locked: Gateway, fakes: dict[str, FakeUpstream], door: str, headers: dict[str, str]
) -> None:
    response = call(locked, door, headers)
    assert response.status_code == 401, response.text
    assert "in the other" in response.text and "never forwarded" in response.text
    assert all(not f.requests for f in fakes.values())


def test_a_jwt_and_an_api_token_stay_too(locked: Gateway, fakes: dict[str, FakeUpstream]) -> None:
    with httpx.Client(
        base_url=locked.url, headers={"authorization": f"Bearer {MGMT}"}, timeout=10
    ) as api:
        project = api.post("/manage/projects", json={"name": "team-a"}).json()
        token = api.post("/manage/tokens", json={"project_id": project["id"]}).json()["token"]
    for gateway_credential in (a_jwt(), token):
        for headers in (
            {"authorization": f"Bearer {gateway_credential}", "x-api-key": PROVIDER_KEY},
            {"x-api-key": gateway_credential, "authorization": f"Bearer {PROVIDER_KEY}"},
        ):
            assert call(locked, "chat", headers).status_code == 200
            assert fakes["openai"].last.headers["authorization"] == f"Bearer {PROVIDER_KEY}"
            assert call(locked, "messages->anthropic", headers).status_code == 200
            assert fakes["anthropic"].last.headers["x-api-key"] == PROVIDER_KEY
        alone = call(locked, "embeddings", {"authorization": f"Bearer {gateway_credential}"})
        assert alone.status_code == 401
        assert gateway_credential not in everything_sent(fakes)


def test_model_lists_use_the_other_credential_only(
    locked: Gateway, fakes: dict[str, FakeUpstream]
) -> None:
    response = httpx.get(locked.url + "/v1/models", headers={"x-api-key": PROXY}, timeout=20)
    assert response.status_code == 200
    assert "private-ft" not in response.text and "claude-private" not in response.text
    assert all(not f.requests for f in fakes.values())  # nothing to list with: nobody asked
    response = httpx.get(
        locked.url + "/v1/models",
        headers={"x-api-key": PROXY, "authorization": f"Bearer {PROVIDER_KEY}"},
        timeout=20,
    )
    assert "own:private-ft" in response.text and "antp:claude-private" in response.text
    assert fakes["openai"].last.headers["authorization"] == f"Bearer {PROVIDER_KEY}"
    assert fakes["anthropic"].last.headers["x-api-key"] == PROVIDER_KEY
    assert PROXY not in everything_sent(fakes)
