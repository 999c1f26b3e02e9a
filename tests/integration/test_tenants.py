"""The control plane through the real gateway process: projects and tokens made
over /manage, used through both HTTP doors, limits, audit, and no secret leaks."""

from __future__ import annotations

import concurrent.futures
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anthropic
import httpx
import openai
import pytest

from tests.support.databases import database_env
from tests.support.fakes import FakeUpstream, JSONReply, SSEReply, completion
from tests.support.gateway import Gateway, run_gateway
from tests.support.waiting import eventually

MGMT = "mgmt-secret-0123456789abcdef"
PROJECT_OPENAI_KEY = "sk-project-openai-SECRET-4242"
PROJECT_ANT_KEY = "sk-project-ant-SECRET-4343"
GATEWAY_OPENAI_KEY = "sk-gateway-openai-pool-key"
MSG = {"model": "gpt-4o", "max_tokens": 10, "messages": [{"role": "user", "content": "hi"}]}
ANT_REPLY = {
    "id": "msg_1",
    "type": "message",
    "role": "assistant",
    "model": "claude-x",
    "content": [{"type": "text", "text": "ok"}],
    "stop_reason": "end_turn",
    "stop_sequence": None,
    "usage": {"input_tokens": 3, "output_tokens": 2},
}


def env_for(
    fake_openai: FakeUpstream, fake_anthropic: FakeUpstream, tmp: Path, **extra: str
) -> dict[str, str]:
    return {
        "OPENAI_API_KEY": GATEWAY_OPENAI_KEY,
        "OPENAI_BASE_URL": fake_openai.url + "/v1",
        "ANT_API_KEY": "sk-gateway-ant-pool-key",
        "ANT_BASE_URL": fake_anthropic.url,
        "ANT_API_FORMAT": "anthropic",
        "VDM_DEFAULT_PROVIDER": "openai",
        "MANAGEMENT_TOKEN": MGMT,
        "AUDIT_LOG_FILE": str(tmp / "audit.jsonl"),
        "MAX_RETRIES": "0",
        "LOG_LEVEL": "DEBUG",
        "DATABASE_URL": f"sqlite:///{tmp / 'vdm.db'}",
        **extra,
    }


def answer_everything(fake_openai: FakeUpstream, fake_anthropic: FakeUpstream) -> None:
    fake_openai.responder = lambda r: JSONReply(completion("ok"))
    fake_anthropic.responder = lambda r: JSONReply(ANT_REPLY)


def manage(gw: Gateway) -> httpx.Client:
    return httpx.Client(base_url=gw.url, headers={"authorization": f"Bearer {MGMT}"}, timeout=10)


def ask(gw: Gateway, token: str | None, body: dict[str, Any] = MSG) -> httpx.Response:
    headers = {"x-api-key": token} if token else {}
    return httpx.post(gw.url + "/v1/messages", json=body, headers=headers, timeout=10)


@pytest.fixture
def tenant_gateway(
    fake_openai: FakeUpstream, fake_anthropic: FakeUpstream, tmp_path: Path
) -> Iterator[Gateway]:
    answer_everything(fake_openai, fake_anthropic)
    with run_gateway(env_for(fake_openai, fake_anthropic, tmp_path), tmp_path) as gw:
        yield gw


def make_project(api: httpx.Client, name: str = "team-a") -> dict[str, Any]:
    r = api.post(
        "/manage/projects",
        json={"name": name, "api_keys": {"openai": PROJECT_OPENAI_KEY, "ant": PROJECT_ANT_KEY}},
    )
    assert r.status_code == 201, r.text
    return r.json()


def make_token(api: httpx.Client, project_id: str, **fields: Any) -> dict[str, Any]:
    r = api.post("/manage/tokens", json={"project_id": project_id, **fields})
    assert r.status_code == 201, r.text
    return r.json()


def test_lifecycle_doors_substitution_revocation_and_no_leaks(
    tenant_gateway: Gateway, fake_openai: FakeUpstream, fake_anthropic: FakeUpstream, tmp_path: Path
) -> None:
    gw = tenant_gateway
    with manage(gw) as api:
        project = make_project(api)
        assert project["api_keys"] == {"openai": "sk-p…4242", "ant": "sk-p…4343"}
        assert project["api_key"] == "sk-p…4242"  # the default provider's
        assert api.post("/manage/projects", json={"name": "team-a"}).status_code == 409
        created = make_token(api, project["id"], name="ci")
        secret = created["token"]
        assert secret.startswith("sk-vdm-")

        # Anthropic door -> OpenAI provider: the project's key reaches the upstream.
        with anthropic.Anthropic(base_url=gw.url, api_key=secret, max_retries=0) as client:
            message = client.messages.create(**MSG)
        assert message.content[0].text == "ok"  # type: ignore[union-attr]
        assert fake_openai.last.headers["authorization"] == f"Bearer {PROJECT_OPENAI_KEY}"
        # OpenAI door -> Anthropic-native provider, also with the project's key.
        with openai.OpenAI(base_url=gw.url + "/v1", api_key=secret, max_retries=0) as client:
            chat = client.chat.completions.create(
                model="ant:claude-x", messages=[{"role": "user", "content": "hi"}]
            )
        assert chat.choices[0].message.content == "ok"
        assert fake_anthropic.last.headers["x-api-key"] == PROJECT_ANT_KEY
        # OpenAI passthrough door: project key too.
        with openai.OpenAI(base_url=gw.url + "/v1", api_key=secret, max_retries=0) as client:
            client.chat.completions.create(
                model="gpt-4o", messages=[{"role": "user", "content": "x"}]
            )
        assert fake_openai.last.headers["authorization"] == f"Bearer {PROJECT_OPENAI_KEY}"

        # A project without its own key for a provider uses the gateway's pool.
        bare = api.post("/manage/projects", json={"name": "bare"}).json()
        bare_token = make_token(api, bare["id"])["token"]
        assert ask(gw, bare_token).status_code == 200
        assert fake_openai.last.headers["authorization"] == f"Bearer {GATEWAY_OPENAI_KEY}"

        listed = api.get("/manage/tokens", params={"project_id": project["id"]}).json()
        assert [t["id"] for t in listed] == [created["id"]]
        assert listed[0]["token"] != secret and secret not in json.dumps(listed)
        assert listed[0]["request_count"] == 3 and listed[0]["last_used_at"]

        # Wrong and absent credentials.
        assert ask(gw, None).status_code == 401
        assert ask(gw, "sk-vdm-not-a-real-token").json()["error"]["type"] == "authentication_error"
        r = httpx.post(
            gw.url + "/v1/chat/completions",
            headers={"authorization": "Bearer x"},
            json={"model": "gpt-4o", "messages": [{"role": "user", "content": "x"}]},
        )
        assert r.status_code == 401 and r.json()["error"]["type"] == "authentication_error"

        # Revocation works on the very next request.
        assert api.delete(f"/manage/tokens/{created['id']}").status_code == 204
        r = ask(gw, secret)
        assert r.status_code == 401 and "revoked" in r.json()["error"]["message"]
        assert (
            api.patch(f"/manage/tokens/{created['id']}", json={"is_active": True}).status_code
            == 200
        )
        assert ask(gw, secret).status_code == 200
        # Deactivating the project: 403 at once.
        assert (
            api.patch(f"/manage/projects/{project['id']}", json={"is_active": False}).json()[
                "is_active"
            ]
            is False
        )
        r = ask(gw, secret)
        assert r.status_code == 403 and r.json()["error"]["type"] == "permission_error"
        api.patch(f"/manage/projects/{project['id']}", json={"is_active": True})

        # Expiry.
        # Time is the subject (the gateway's own clock): served until the moment passes.
        expires = time.time() + 2
        soon = make_token(api, project["id"], expires_at=_iso(expires))
        assert ask(gw, soon["token"]).status_code == 200
        r = eventually(lambda: ask(gw, soon["token"]), lambda r: r.status_code != 200, every=0.1)
        assert r.status_code == 401 and "expired" in r.json()["error"]["message"]
        assert time.time() >= expires - 0.1  # (not before it)

        # Allowed models / providers.
        narrow = make_token(
            api, project["id"], allowed_models=["fast"], allowed_providers=["openai"]
        )["token"]
        r = ask(gw, narrow)
        assert r.status_code == 403 and "gpt-4o" in r.json()["error"]["message"]
        assert ask(gw, narrow, {**MSG, "model": "openai:fast"}).status_code == 200

        # Management auth, validation, 404s.
        assert httpx.get(gw.url + "/manage/projects").status_code == 401
        assert (
            httpx.get(
                gw.url + "/manage/projects", headers={"authorization": "Bearer wrong"}
            ).status_code
            == 401
        )
        assert api.get("/manage/projects/nope").status_code == 404
        bad = api.post("/manage/tokens", json={"project_id": project["id"], "max_requests": 0})
        assert bad.status_code == 422 and bad.json()["detail"][0]["loc"] == ["body", "max_requests"]
        assert (
            api.post(
                "/manage/projects", content=b"{nope", headers={"content-type": "application/json"}
            ).status_code
            == 400
        )
        assert api.post("/manage/tokens", json={"project_id": "nope"}).status_code == 404
        assert (
            api.post(
                "/manage/projects", json={"name": "x", "api_keys": {"nosuch": "k"}}
            ).status_code
            == 422  # a field the body got wrong
        )

        # Audit: management actions and authentication failures, filtered and paged.
        page = api.get("/manage/audit", params={"action": "token.revoke"}).json()
        assert page["pagination"]["total"] == 1
        event = page["events"][0]
        assert event["token_id"] == created["id"] and event["client_ip"] == "127.0.0.1"
        assert event["request_id"].startswith("req_vdm_") and event["actor"] == "management"
        assert api.get(f"/manage/audit/{event['id']}").json() == event
        denied = api.get("/manage/audit", params={"outcome": "denied", "page_size": 2}).json()
        assert denied["pagination"]["total"] >= 6 and len(denied["events"]) == 2
        assert (
            api.get(
                "/manage/audit", params={"token_id": created["id"], "outcome": "denied"}
            ).json()["pagination"]["total"]
            == 2
        )  # revoked + project inactive
        failed_manage = api.get("/manage/audit", params={"action": "manage.authenticate"})
        assert failed_manage.json()["pagination"]["total"] == 2
        future = api.get("/manage/audit", params={"since": _iso(time.time() + 3600)}).json()
        assert future["pagination"]["total"] == 0
        assert api.get("/manage/audit", params={"since": "yesterday"}).status_code == 422
        assert api.post("/manage/cache/purge", json={"method": "GET", "url": "/v1/x"}).json() == {
            "deleted": False
        }
        responses = json.dumps(
            [
                api.get("/manage/projects").json(),
                api.get("/manage/tokens").json(),
                api.get("/manage/audit", params={"page_size": 500}).json(),
            ]
        )

    gw.process.terminate()
    gw.process.wait(10)
    audit_file = (tmp_path / "audit.jsonl").read_text()
    lines = [json.loads(line) for line in audit_file.splitlines()]
    assert {e["action"] for e in lines} >= {
        "project.create",
        "token.create",
        "token.revoke",
        "proxy.authenticate",
        "manage.authenticate",
    }
    database = (tmp_path / "vdm.db").read_bytes() + b"".join(
        p.read_bytes() for p in tmp_path.glob("vdm.db-*")
    )
    for text, where in (
        (gw.log(), "log"),
        (audit_file, "audit file"),
        (responses, "management responses"),
    ):
        for known in (secret, bare_token, narrow, PROJECT_OPENAI_KEY, PROJECT_ANT_KEY, MGMT):
            assert known not in text, f"a secret leaked into the {where}"
    for known in (secret, bare_token, MGMT):
        assert known.encode() not in database  # tokens only hashed; project keys: see below


def _iso(epoch: float) -> str:
    from datetime import UTC, datetime

    return datetime.fromtimestamp(epoch, UTC).isoformat()


def test_project_keys_are_encrypted_at_rest_with_the_key(
    fake_openai: FakeUpstream, fake_anthropic: FakeUpstream, tmp_path: Path
) -> None:
    from cryptography.fernet import Fernet

    answer_everything(fake_openai, fake_anthropic)
    env = env_for(
        fake_openai, fake_anthropic, tmp_path, VDM_ENCRYPTION_KEY=Fernet.generate_key().decode()
    )
    with run_gateway(env, tmp_path) as gw, manage(gw) as api:
        project = make_project(api)
        token = make_token(api, project["id"])["token"]
        assert ask(gw, token).status_code == 200
        assert fake_openai.last.headers["authorization"] == f"Bearer {PROJECT_OPENAI_KEY}"
    stored = b"".join(p.read_bytes() for p in tmp_path.glob("vdm.db*"))
    assert PROJECT_OPENAI_KEY.encode() not in stored and b"fernet:" in stored


@pytest.mark.parametrize("kind", ["sqlite", "postgresql"])
def test_exactly_max_requests_succeed_out_of_50_concurrent(
    kind: str, fake_openai: FakeUpstream, fake_anthropic: FakeUpstream, tmp_path: Path
) -> None:
    answer_everything(fake_openai, fake_anthropic)
    for db in database_env(kind, tmp_path):
        with (
            run_gateway(env_for(fake_openai, fake_anthropic, tmp_path, **db), tmp_path) as gw,
            manage(gw) as api,
        ):
            project = make_project(api)
            token = make_token(api, project["id"], max_requests=17)
            secret = token["token"]
            with concurrent.futures.ThreadPoolExecutor(50) as pool:
                statuses = list(pool.map(lambda _, s=secret: ask(gw, s).status_code, range(50)))
            assert statuses.count(200) == 17 and statuses.count(429) == 33
            assert api.get(f"/manage/tokens/{token['id']}").json()["request_count"] == 17


def test_rpm_and_tpm_limits(tenant_gateway: Gateway) -> None:
    gw = tenant_gateway
    with manage(gw) as api:
        project = make_project(api)
        rpm = make_token(api, project["id"], rpm=3)["token"]
        assert [ask(gw, rpm).status_code for _ in range(4)] == [200, 200, 200, 429]
        r = ask(gw, rpm)
        assert r.json()["error"]["type"] == "rate_limit_error"
        assert 1 <= int(r.headers["retry-after"]) <= 60
        # The fake completion reports 45 tokens a request (USAGE): 2 fit under 50.
        tpm = make_token(api, project["id"], tpm=50)["token"]
        assert [ask(gw, tpm).status_code for _ in range(3)] == [200, 200, 429]
        r = httpx.post(
            gw.url + "/v1/chat/completions",
            headers={"authorization": f"Bearer {tpm}"},
            json={"model": "gpt-4o", "messages": [{"role": "user", "content": "x"}]},
        )
        assert r.status_code == 429 and "tokens per minute" in r.json()["error"]["message"]


def test_management_api_is_off_without_its_token(gateway: Gateway) -> None:
    r = httpx.get(gateway.url + "/manage/projects")
    assert r.status_code == 404 and "MANAGEMENT_TOKEN" in r.text


def test_cli_manages_projects_tokens_and_audit(tenant_gateway: Gateway, tmp_path: Path) -> None:
    import subprocess
    import sys

    from tests.support.gateway import clean_env

    def vdm(*args: str) -> subprocess.CompletedProcess[str]:
        env = {
            **clean_env(),
            "HOME": str(tmp_path / "clihome"),
            "MANAGEMENT_TOKEN": MGMT,
            "COLUMNS": "300",
        }
        return subprocess.run(
            [sys.executable, "-m", "vdm", "manage", *args, "--url", tenant_gateway.url],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )

    made = vdm(
        "project",
        "create",
        "--name",
        "cli-team",
        "--api-key",
        f"openai={PROJECT_OPENAI_KEY}",
        "--json",
    )
    assert made.returncode == 0, made.stderr
    project = json.loads(made.stdout)
    assert PROJECT_OPENAI_KEY not in made.stdout
    token = json.loads(
        vdm("token", "create", "--project", project["id"], "--max-requests", "5", "--json").stdout
    )
    assert ask(tenant_gateway, token["token"]).status_code == 200
    table = vdm("token", "list", "--project", project["id"])
    assert table.returncode == 0 and token["id"][:8] in table.stdout
    assert token["token"] not in table.stdout
    assert vdm("token", "revoke", token["id"]).returncode == 0
    assert ask(tenant_gateway, token["token"]).status_code == 401
    audit = json.loads(vdm("audit", "list", "--action", "token.revoke", "--json").stdout)
    assert audit["events"][0]["token_id"] == token["id"]
    missing = vdm("project", "show", "nope")  # a prefix of no id
    assert missing.returncode == 1 and "no project id starts with 'nope'" in missing.stderr
    missing = vdm("project", "show", "0" * 32)  # a whole id: asked as it is
    assert missing.returncode == 1 and "404" in missing.stderr


# ---------------------------------------------------------------- the /v1/* passthrough

EMBEDDING_30 = {
    "object": "list",
    "model": "emb",
    "data": [{"object": "embedding", "index": 0, "embedding": [0.5] * 2000}],
    "usage": {"prompt_tokens": 30, "total_tokens": 30},
}


def transcription(gw: Gateway, token: str, model: str) -> httpx.Response:
    return httpx.post(
        gw.url + "/v1/audio/transcriptions",
        headers={"authorization": f"Bearer {token}"},
        files={"file": ("a.wav", b"RIFF" * 64)},
        data={"model": model},
        timeout=10,
    )


def test_the_passthrough_holds_a_token_to_its_models_and_providers(
    tenant_gateway: Gateway, fake_openai: FakeUpstream
) -> None:
    gw = tenant_gateway
    fake_openai.responder = lambda r: JSONReply(
        EMBEDDING_30 if "embeddings" in r.path else {"ok": 1}
    )
    with manage(gw) as api:
        project = make_project(api)
        narrow = make_token(api, project["id"], allowed_models=["emb-ok", "whisper-1"])["token"]
        no_openai = make_token(api, project["id"], allowed_providers=["ant"])["token"]
    with openai.OpenAI(base_url=gw.url + "/v1", api_key=narrow, max_retries=0) as client:
        client.embeddings.create(model="emb-ok", input="x")
        assert fake_openai.last.headers["authorization"] == f"Bearer {PROJECT_OPENAI_KEY}"
        fake_openai.requests.clear()
        for call in (
            lambda: client.embeddings.create(model="text-embedding-3-large", input="x"),
            lambda: client.completions.create(model="gpt-3.5-turbo-instruct", prompt="x"),
            lambda: client.images.generate(model="gpt-image-1", prompt="x"),
            lambda: client.moderations.create(model="omni-moderation-latest", input="x"),
            lambda: client.audio.speech.create(model="tts-1", voice="alloy", input="x"),
            lambda: client.fine_tuning.jobs.create(model="gpt-4o", training_file="file-1"),
        ):
            with pytest.raises(openai.PermissionDeniedError) as raised:
                call()
            assert "may not use model" in raised.value.message
    assert fake_openai.requests == []
    # a multipart body names its model too
    refused = transcription(gw, narrow, "gpt-4o-transcribe")
    assert refused.status_code == 403 and refused.json()["error"]["type"] == "permission_error"
    assert fake_openai.requests == []
    assert transcription(gw, narrow, "whisper-1").status_code == 200
    assert b'name="model"\r\n\r\nwhisper-1' in fake_openai.last.body
    # a body the model of which cannot be read: refused for this token
    sneaky = httpx.post(
        gw.url + "/v1/embeddings",
        content=b'{"model": "text-embedding-3-large", "input": "x"}',
        headers={"authorization": f"Bearer {narrow}", "content-type": "text/plain"},
    )
    assert sneaky.status_code == 400 and "JSON or multipart" in sneaky.text
    # work whose models the body does not name: a batch (even with a "model" added,
    # which the API would ignore), an eval's run, a thread's run on its assistant's model
    fake_openai.requests.clear()
    bearer = {"authorization": f"Bearer {narrow}"}
    for path, body in (
        ("/v1/batches", {"input_file_id": "file-1", "endpoint": "/v1/chat/completions"}),
        ("/v1/batches", {"input_file_id": "file-1", "model": "emb-ok"}),
        ("/v1/evals/eval-1/runs", {"data_source": {"model": "gpt-4o"}}),
        ("/v1/threads/thread-1/runs", {"assistant_id": "asst-1"}),
        ("/v1/threads/runs", {"assistant_id": "asst-1"}),
    ):
        r = httpx.post(gw.url + path, json=body, headers=bearer)
        assert r.status_code == 403 and "does not name" in r.text, (path, r.text)
    with (
        openai.OpenAI(base_url=gw.url + "/v1", api_key=narrow, max_retries=0) as client,
        pytest.raises(openai.PermissionDeniedError),
    ):
        client.batches.create(
            input_file_id="file-1", endpoint="/v1/chat/completions", completion_window="24h"
        )
    assert fake_openai.requests == []
    named = httpx.post(
        gw.url + "/v1/threads/thread-1/runs",
        json={"assistant_id": "asst-1", "model": "emb-ok"},
        headers=bearer,
    )
    assert named.status_code == 200, named.text  # a run naming an allowed model
    # model-less requests: the provider rule alone
    assert (
        httpx.get(gw.url + "/v1/files", headers={"authorization": f"Bearer {narrow}"}).status_code
        == 200
    )
    for path in ("/v1/files", "/v1/batches/b1"):
        r = httpx.get(gw.url + path, headers={"authorization": f"Bearer {no_openai}"})
        assert r.status_code == 403 and "provider 'openai'" in r.text
    assert len(fake_openai.requests) == 2


def test_passthrough_usage_counts_toward_the_tpm(
    tenant_gateway: Gateway, fake_openai: FakeUpstream
) -> None:
    gw = tenant_gateway
    fake_openai.responder = lambda r: JSONReply(EMBEDDING_30)
    with manage(gw) as api:
        project = make_project(api)
        tpm = make_token(api, project["id"], tpm=50)["token"]
    statuses = []
    for _ in range(3):
        r = httpx.post(
            gw.url + "/v1/embeddings",
            json={"model": "emb", "input": "x"},
            # (a compressed answer would hide its usage: the upstream is asked for none)
            headers={"authorization": f"Bearer {tpm}", "accept-encoding": "gzip, br"},
        )
        statuses.append(r.status_code)
    assert statuses == [200, 200, 429]  # 30 + 30 tokens: over 50
    assert all(r.headers["accept-encoding"] == "identity" for r in fake_openai.requests)
    assert len(fake_openai.requests) == 2


def test_streamed_passthrough_usage_counts_toward_the_tpm(
    tenant_gateway: Gateway, fake_openai: FakeUpstream
) -> None:
    gw = tenant_gateway
    chunks = [
        b'data: {"id":"c","object":"text_completion","choices":[{"text":"hi","index":0}],"usage":null}\n\n',
        b'data: {"id":"c","object":"text_completion","choices":[],'
        b'"usage":{"prompt_tokens":20,"completion_tokens":40,"total_tokens":60}}\n\n',
        b"data: [DONE]\n\n",
    ]
    fake_openai.responder = lambda r: SSEReply(chunks)
    with manage(gw) as api:
        project = make_project(api)
        tpm = make_token(api, project["id"], tpm=50)["token"]
    body = {
        "model": "gpt-3.5-turbo-instruct",
        "prompt": "x",
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    first = httpx.post(
        gw.url + "/v1/completions", json=body, headers={"authorization": f"Bearer {tpm}"}
    )
    assert first.status_code == 200 and b"[DONE]" in first.content
    second = httpx.post(
        gw.url + "/v1/completions", json=body, headers={"authorization": f"Bearer {tpm}"}
    )
    assert second.status_code == 429 and "tokens per minute" in second.text
