"""Logs for machines: with ``LOG_FORMAT=json`` every line is one JSON object and
an access record carries its fields (door, provider, model, status, latency,
tokens, tenant ids, client ip), read from a real gateway process; Alembic's
start-up chatter stays out at INFO."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import anthropic
import httpx
import openai

from tests.support.fakes import (
    FakeUpstream,
    JSONReply,
    SSEReply,
    completion,
    stream_of,
)
from tests.support.gateway import Gateway, run_gateway

MGMT = "mgmt-secret-0123456789abcdef"
FIELDS = {
    "ts",
    "level",
    "logger",
    "request_id",
    "message",
    "method",
    "path",
    "door",
    "status",
    "provider",
    "model",
    "latency_ms",
    "first_byte_ms",
    "input_tokens",
    "output_tokens",
    "cache_read_tokens",
    "cost_usd",
    "project_id",
    "token_id",
    "client_ip",
    "cache",
    "error",
    "client_disconnected",
}


def _records(gw: Gateway) -> list[dict[str, Any]]:
    lines = [line for line in gw.log().splitlines() if line.startswith("{")]
    return [json.loads(line) for line in lines]


def _access(gw: Gateway, request_id: str) -> dict[str, Any]:
    gw.wait_log(f'"request_id":"{request_id}"')  # written once the answer has gone out
    found = [
        r for r in _records(gw) if r["logger"] == "vdm.access" and r["request_id"] == request_id
    ]
    assert len(found) == 1, found
    return found[0]


def _four_requests(gw: Gateway, fake_openai: FakeUpstream, secret: str) -> None:
    """A tenant's chat completion, its converted stream, a request without a
    token (401) and one with a malformed body (400), each with its request id."""
    # A tenant's chat completion (the OpenAI door, relayed to an OpenAI provider).
    fake_openai.reply(
        JSONReply(completion("hi", usage={"prompt_tokens": 11, "completion_tokens": 7}, model="m1"))
    )
    with openai.OpenAI(
        base_url=gw.url + "/v1", api_key=secret, max_retries=0, timeout=20
    ) as client:
        client.chat.completions.create(
            model="gpt-x",
            messages=[{"role": "user", "content": "hi"}],
            extra_headers={"x-request-id": "rid-chat"},
        )
    # An Anthropic client's stream, converted from the OpenAI provider.
    fake_openai.reply(
        SSEReply(stream_of(completion("a b c", usage={"prompt_tokens": 5, "completion_tokens": 3})))
    )
    with (
        anthropic.Anthropic(base_url=gw.url, api_key=secret, max_retries=0, timeout=20) as client,
        client.messages.stream(
            model="gpt-y",
            max_tokens=20,
            messages=[{"role": "user", "content": "hi"}],
            extra_headers={"x-request-id": "rid-stream"},
        ) as stream,
    ):
        assert stream.get_final_text() == "a b c"
    # No token: refused, and logged.
    refused = httpx.post(
        gw.url + "/v1/messages",
        json={"model": "ant:claude", "max_tokens": 5, "messages": []},
        headers={"x-request-id": "rid-refused"},
        timeout=10,
    )
    assert refused.status_code == 401
    bad = httpx.post(
        gw.url + "/v1/chat/completions",
        content=b"{not json",
        headers={
            "x-request-id": "rid-bad",
            "authorization": f"Bearer {secret}",
            "content-type": "application/json",
        },
        timeout=10,
    )
    assert bad.status_code == 400


def test_json_access_records_carry_their_fields(
    tmp_path: Path, fake_openai: FakeUpstream, fake_anthropic: FakeUpstream
) -> None:
    env = {
        "LOG_FORMAT": "json",
        "OPENAI_API_KEY": "sk-gateway-openai",
        "OPENAI_BASE_URL": fake_openai.url + "/v1",
        "ANT_API_KEY": "sk-gateway-ant",
        "ANT_BASE_URL": fake_anthropic.url,
        "ANT_API_FORMAT": "anthropic",
        "VDM_DEFAULT_PROVIDER": "openai",
        "MANAGEMENT_TOKEN": MGMT,
        "DATABASE_URL": f"sqlite:///{tmp_path / 'vdm.db'}",
        "MAX_RETRIES": "0",
    }
    with run_gateway(env, tmp_path) as gw:
        api = httpx.Client(base_url=gw.url, headers={"authorization": f"Bearer {MGMT}"}, timeout=10)
        with api:
            project = api.post("/manage/projects", json={"name": "team-a"}).json()
            token = api.post("/manage/tokens", json={"project_id": project["id"]}).json()

        _four_requests(gw, fake_openai, token["token"])

        chat = _access(gw, "rid-chat")
        assert chat.keys() >= FIELDS
        assert chat["door"] == "openai" and chat["status"] == 200
        assert chat["method"] == "POST" and chat["path"] == "/v1/chat/completions"
        assert (chat["provider"], chat["model"]) == ("openai", "gpt-x")
        assert (chat["input_tokens"], chat["output_tokens"]) == (11, 7)
        assert chat["project_id"] == project["id"] and chat["token_id"] == token["id"]
        assert chat["client_ip"] == "127.0.0.1"
        assert isinstance(chat["latency_ms"], float) and chat["latency_ms"] >= 0
        assert chat["error"] is None and chat["client_disconnected"] is False
        assert chat["cost_usd"] is None  # (gpt-x has no price: no cost, never 0)

        streamed = _access(gw, "rid-stream")
        assert streamed["door"] == "anthropic" and streamed["status"] == 200
        assert (streamed["input_tokens"], streamed["output_tokens"]) == (5, 3)
        assert streamed["first_byte_ms"] is not None
        assert streamed["latency_ms"] >= streamed["first_byte_ms"]
        assert streamed["project_id"] == project["id"]

        refused_record = _access(gw, "rid-refused")
        assert refused_record["status"] == 401 and refused_record["door"] == "anthropic"
        assert refused_record["error"].startswith("authentication")
        assert refused_record["project_id"] is None and refused_record["input_tokens"] is None

        assert _access(gw, "rid-bad")["status"] == 400

        log = gw.log()
        assert token["token"] not in log and MGMT not in log
        # Every line after the start-up summary is a JSON object; no Alembic chatter.
        records = _records(gw)
        assert records and all(r["level"] for r in records)
        assert not [r for r in records if r["logger"].startswith("alembic")]
        assert "Context impl" not in log


def test_console_access_line_is_unchanged(tmp_path: Path, fake_openai: FakeUpstream) -> None:
    env = {
        "OPENAI_API_KEY": "sk-gateway-openai",
        "OPENAI_BASE_URL": fake_openai.url + "/v1",
    }
    fake_openai.reply(
        JSONReply(completion("hi", usage={"prompt_tokens": 2, "completion_tokens": 1}))
    )
    with run_gateway(env, tmp_path) as gw:
        with openai.OpenAI(base_url=gw.url + "/v1", api_key="k", max_retries=0) as client:
            client.chat.completions.create(
                model="gpt-x",
                messages=[{"role": "user", "content": "hi"}],
                extra_headers={"x-request-id": "rid-console"},
            )
        # The access line is written once the answer has gone out: wait for it.
        log = gw.wait_log("request_id=rid-console: POST")
        lines = [line for line in log.splitlines() if " vdm.access " in line]
        assert len(lines) == 1
        assert (
            "request_id=rid-console: POST /v1/chat/completions 200 openai:gpt-x in=2 out=1 "
            in (lines[0])
        )
        assert "{" not in lines[0]
