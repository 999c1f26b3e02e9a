"""The rest of the OpenAI API (embeddings, files, responses, ...) passed through
to OpenAI-format providers, driven by the official ``openai`` SDK against the
real gateway process and a fake upstream; and the OpenAI-shaped errors of
requests refused before any route runs."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anthropic
import httpx
import openai
import pytest

from tests.support.fakes import (
    CountBody,
    FakeUpstream,
    Hang,
    JSONReply,
    SSEReply,
    StreamBytes,
    completion,
    pattern,
)
from tests.support.gateway import Gateway, free_port, run_gateway
from tests.support.rawhttp import exchange

BIG = 200 * 1024 * 1024
EMBEDDING = {
    "object": "list",
    "model": "upstream-emb",
    "usage": {"prompt_tokens": 2, "total_tokens": 2},
    "data": [{"object": "embedding", "index": 0, "embedding": [0.1, 0.2]}],
}
FILE = {
    "id": "file-abc",
    "object": "file",
    "bytes": 3,
    "created_at": 1,
    "filename": "a.jsonl",
    "purpose": "batch",
    "status": "processed",
}


def sdk(url: str, key: str = "client-key") -> openai.OpenAI:
    return openai.OpenAI(base_url=url + "/v1", api_key=key, max_retries=0, timeout=60)


@pytest.fixture
def oai(gateway: Gateway) -> Iterator[openai.OpenAI]:
    with sdk(gateway.url) as client:
        yield client


def openai_error(response: httpx.Response, status: int) -> str:
    """Check the OpenAI error shape; return the message."""
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert set(error) >= {"message", "type", "code"}
    assert isinstance(error["message"], str) and error["message"]
    return error["message"]


def peak_rss_kb(gateway: Gateway) -> int:
    for line in Path(f"/proc/{gateway.process.pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    raise AssertionError("no VmHWM")


# ---------------------------------------------------------------- routing and auth


@pytest.mark.parametrize(
    ("model", "upstream_model", "key"),
    [
        ("fast", "gpt-fast", "Bearer sk-test-openai"),
        ("openai:text-embedding-3-small", "text-embedding-3-small", "Bearer sk-test-openai"),
        ("plain:emb", "emb", "Bearer sk-test-plain"),
    ],
)
def test_embeddings_routed_by_model(
    oai: openai.OpenAI, fake_openai: FakeUpstream, model: str, upstream_model: str, key: str
) -> None:
    fake_openai.reply(JSONReply(EMBEDDING))
    result = oai.embeddings.create(model=model, input="hello", encoding_format="float")
    assert result.data[0].embedding == [0.1, 0.2]
    assert result.model == "upstream-emb"  # the upstream's JSON, as it sent it
    sent = fake_openai.last
    assert sent.method == "POST" and sent.path == "/v1/embeddings"
    assert sent.json == {"model": upstream_model, "input": "hello", "encoding_format": "float"}
    assert sent.headers["authorization"] == key  # the provider's key, not the client's
    assert "x-api-key" not in sent.headers


def test_moderations(oai: openai.OpenAI, fake_openai: FakeUpstream) -> None:
    fake_openai.reply(
        JSONReply(
            {
                "id": "modr-1",
                "model": "omni-moderation-latest",
                "results": [{"flagged": False, "categories": {}, "category_scores": {}}],
            }
        )
    )
    result = oai.moderations.create(input="be nice")
    assert result.id == "modr-1" and result.results[0].flagged is False
    assert fake_openai.last.path == "/v1/moderations"
    assert fake_openai.last.json == {"input": "be nice"}  # no model: default provider


def test_get_with_query_and_delete(oai: openai.OpenAI, fake_openai: FakeUpstream) -> None:
    fake_openai.reply(
        JSONReply(FILE),
        JSONReply({"object": "list", "data": [FILE], "has_more": False}),
        JSONReply({"id": "file-abc", "object": "file", "deleted": True}),
    )
    assert oai.files.retrieve("file-abc").filename == "a.jsonl"
    assert fake_openai.last.method == "GET" and fake_openai.last.path == "/v1/files/file-abc"
    assert fake_openai.last.headers["authorization"] == "Bearer sk-test-openai"
    listed = oai.files.list(purpose="batch", limit=5)
    assert [f.id for f in listed.data] == ["file-abc"]
    assert sorted(fake_openai.last.query.split("&")) == ["limit=5", "purpose=batch"]
    assert oai.files.delete("file-abc").deleted is True
    assert fake_openai.last.method == "DELETE"


@pytest.mark.parametrize(
    ("method", "target"),
    [
        (b"GET", b"/v1/files/../organization/users"),
        (b"GET", b"/v1/files/%2e%2e/organization/users"),
        (b"GET", b"/v1/files/%2E%2e/organization/users"),
        (b"GET", b"/v1/files/..%2forganization%2fusers"),
        (b"GET", b"/v1/files/..%2Forganization"),
        (b"GET", b"/v1/files/%252e%252e/organization/users"),  # double-encoded
        (b"GET", b"/v1/files/%25252e%25252e/organization"),  # triple
        (b"GET", b"/v1/files/..%5corganization"),
        (b"GET", b"/v1/files/..%5Corganization"),
        (b"GET", b"/v1/files\\..\\organization\\users"),
        (b"GET", b"/v1/files/a%2Fb/content"),  # an encoded slash, even a harmless one
        (b"GET", b"/v1/files/file%2ejsonl"),  # an encoded dot, anywhere
        (b"GET", b"/v1/files/./file-abc"),
        (b"GET", b"/v1/files//file-abc"),
        (b"GET", b"/v1//files"),
        (b"GET", b"/v1/files/file-abc//"),
        (b"GET", b"/v1/files/x%00y"),
        (b"GET", b"/v1/files/x%zz"),
        (b"GET", b"/v1/organization/../files"),  # outside the allowlist before, inside after
        (b"POST", b"/v1/embeddings/../fine_tuning/jobs"),
        (b"POST", b"/v1/embeddings/%2E%2E/fine_tuning/jobs"),
        (b"GET", b"/v1/files?x=<y>|z"),  # characters outside RFC 3986
        (b"GET", b"/v1/files?x=%zz"),
    ],
)
def test_an_ambiguous_path_is_an_openai_400_and_never_goes_upstream(
    gateway: Gateway, fake_openai: FakeUpstream, method: bytes, target: bytes
) -> None:
    fake_openai.reply(JSONReply(FILE))
    answer = exchange(
        gateway.url,
        target,
        method=method,
        headers={"content-type": "application/json"},
        body=b'{"model": "emb", "input": "x"}' if method == b"POST" else b"",
    )
    assert answer.status == 400, answer.body
    error = answer.json["error"]
    assert error["type"] == "invalid_request_error" and error["message"], error
    assert fake_openai.requests == []


def test_the_upstream_gets_the_normal_path_and_the_query_as_sent(
    gateway: Gateway, fake_openai: FakeUpstream
) -> None:
    fake_openai.reply(JSONReply(FILE), JSONReply(FILE), JSONReply(FILE))
    answer = exchange(gateway.url, b"/v1/files/file-abc/content?z=1&a=%2F..%2F&a=2&p=/x?y")
    assert answer.status == 200
    assert fake_openai.last.target == "/v1/files/file-abc/content?z=1&a=%2F..%2F&a=2&p=/x?y"
    # escapes that need none are decoded, ';' and others are encoded the one way
    answer = exchange(gateway.url, b"/v1/models/ft%3agpt-4o%3Aorg%3Bx;y")
    assert answer.status == 200
    assert fake_openai.last.target == "/v1/models/ft:gpt-4o:org%3Bx%3By"
    answer = exchange(gateway.url, b"/v1/files/file-abc/")  # one trailing slash: dropped
    assert answer.status == 200
    assert fake_openai.last.target == "/v1/files/file-abc"


def test_models_retrieve_and_provider_header(oai: openai.OpenAI, fake_openai: FakeUpstream) -> None:
    fake_openai.reply(
        JSONReply({"id": "gpt-x", "object": "model", "created": 1, "owned_by": "me"}),
        JSONReply(FILE),
    )
    assert oai.models.retrieve("gpt-x").owned_by == "me"
    assert fake_openai.last.path == "/v1/models/gpt-x"
    oai.files.retrieve("file-abc", extra_headers={"x-vdm-provider": "plain"})
    assert fake_openai.last.headers["authorization"] == "Bearer sk-test-plain"
    assert "x-vdm-provider" not in fake_openai.last.headers


def test_anthropic_native_provider_is_a_400(
    oai: openai.OpenAI, gateway: Gateway, fake_anthropic: FakeUpstream
) -> None:
    with pytest.raises(openai.BadRequestError) as raised:
        oai.embeddings.create(model="ant:claude-x", input="x")
    assert "'ant'" in raised.value.message and "anthropic" in raised.value.message
    response = httpx.get(gateway.url + "/v1/files", headers={"x-vdm-provider": "ant"})
    assert "'ant'" in openai_error(response, 400)
    response = httpx.get(gateway.url + "/v1/files", headers={"x-vdm-provider": "nope"})
    assert "nope" in openai_error(response, 400)
    assert fake_anthropic.requests == []


def test_bad_json_body_is_an_openai_400(gateway: Gateway, fake_openai: FakeUpstream) -> None:
    response = httpx.post(
        gateway.url + "/v1/embeddings",
        content=b"{nope",
        headers={"content-type": "application/json"},
    )
    assert "not valid JSON" in openai_error(response, 400)
    response = httpx.post(gateway.url + "/v1/embeddings", json={"model": 5, "input": "x"})
    assert "model" in openai_error(response, 400)
    assert fake_openai.requests == []


# ---------------------------------------------------------------- relaying


def test_status_and_headers_relayed(gateway: Gateway, fake_openai: FakeUpstream) -> None:
    fake_openai.reply(
        JSONReply(
            {"id": "batch_1", "object": "batch"},
            status=201,
            headers={
                "x-request-id": "req-up-1",
                "openai-processing-ms": "42",
                "x-custom-thing": "yes",
                "keep-alive": "timeout=5",
                "proxy-authenticate": "Basic",
            },
        )
    )
    response = httpx.post(
        gateway.url + "/v1/batches",
        json={"input_file_id": "f"},
        headers={
            "x-custom": "1",
            "te": "trailers",
            "keep-alive": "300",
            "proxy-authorization": "Basic c2VjcmV0",
            "x-api-key": "client-secret",
            "authorization": "Bearer client-secret",
            "openai-beta": "assistants=v2",
        },
    )
    assert response.status_code == 201
    assert response.json() == {"id": "batch_1", "object": "batch"}
    for name, value in (
        ("x-request-id", "req-up-1"),
        ("openai-processing-ms", "42"),
        ("x-custom-thing", "yes"),
        ("x-vdm-provider", "openai"),
    ):
        assert response.headers[name] == value
    assert "keep-alive" not in response.headers
    assert "proxy-authenticate" not in response.headers
    assert response.headers["content-length"] == str(len(response.content))
    sent = fake_openai.last.headers
    assert sent["openai-beta"] == "assistants=v2"
    for name in ("te", "keep-alive", "proxy-authorization", "x-api-key", "x-custom"):
        assert name not in sent, name
    assert sent["authorization"] == "Bearer sk-test-openai"
    assert sent["host"] == f"127.0.0.1:{fake_openai.port}"
    assert "client-secret" not in str(sent)


HOSTILE_HEADERS = {
    "cookie": "session=tenant-a",
    "api-key": "client-azure-key",
    "x-http-method-override": "DELETE",
    "openai-organization": "org-someone-else",
    "openai-project": "proj-someone-else",
    "x-forwarded-for": "10.9.8.7",
    "x-custom": "1",
    "x-vdm-provider": "openai",
    "expect": "100-continue",
}
API_HEADERS = {
    "openai-beta": "assistants=v2",
    "idempotency-key": "idem-1",
    "user-agent": "OpenAI/Python 1.0",
    "x-stainless-lang": "python",
}


def test_only_the_api_headers_go_upstream(gateway: Gateway, fake_openai: FakeUpstream) -> None:
    """On the /v1/* passthrough (a JSON body and a streamed one) and the chat relay."""
    fake_openai.reply(JSONReply(EMBEDDING), CountBody(), JSONReply(completion("ok")))
    sent_headers = {**HOSTILE_HEADERS, **API_HEADERS, "authorization": "Bearer client-key"}
    embeddings = httpx.post(
        gateway.url + "/v1/embeddings", json={"model": "emb", "input": "x"}, headers=sent_headers
    )
    assert embeddings.status_code == 200, embeddings.text
    upload = httpx.post(
        gateway.url + "/v1/files",
        files={"file": ("a.jsonl", b"{}")},
        data={"purpose": "batch"},
        headers={**sent_headers, "x-vdm-provider": "openai"},
    )
    assert upload.status_code == 200, upload.text
    chat = httpx.post(
        gateway.url + "/v1/chat/completions",
        json={"model": "gpt-x", "messages": [{"role": "user", "content": "x"}]},
        headers=sent_headers,
    )
    assert chat.status_code == 200, chat.text
    assert len(fake_openai.requests) == 3
    for upstream in fake_openai.requests:
        sent = upstream.headers
        for name in HOSTILE_HEADERS:
            assert name not in sent, (upstream.path, name)
        assert {k: sent[k] for k in API_HEADERS} == API_HEADERS
        assert sent["authorization"] == "Bearer sk-test-openai"
    assert fake_openai.requests[1].headers["content-type"].startswith("multipart/form-data")


def test_a_header_sent_on_several_lines_is_relayed_whole(
    gateway: Gateway, fake_openai: FakeUpstream
) -> None:
    lines = [
        ("x-upstream-trace", "a"),
        ("x-upstream-trace", "b"),
        ("set-cookie", "__cf_bm=1; domain=.api.openai.com; HttpOnly"),
        ("request-id", "req_upstream"),
        ("x-vdm-provider", "spoofed"),
    ]
    fake_openai.reply(JSONReply({"id": "batch_1"}, headers=lines))
    response = httpx.post(gateway.url + "/v1/batches", json={"input_file_id": "f"})
    assert response.status_code == 200
    assert response.headers.get_list("x-upstream-trace") == ["a, b"]
    assert "set-cookie" not in response.headers
    assert response.headers.get_list("x-vdm-provider") == ["openai"]
    (request_id,) = response.headers.get_list("request-id")
    assert request_id != "req_upstream"


def test_upstream_error_relayed_as_sent(oai: openai.OpenAI, fake_openai: FakeUpstream) -> None:
    body = {
        "error": {
            "message": "No such File object: file-zz",
            "type": "invalid_request_error",
            "param": "id",
            "code": None,
        }
    }
    fake_openai.reply(JSONReply(body, status=404))
    with pytest.raises(openai.NotFoundError) as raised:
        oai.files.retrieve("file-zz")
    assert raised.value.body == body["error"]
    assert raised.value.response.json() == body


def test_responses_stream_relayed_byte_for_byte(
    gateway: Gateway, fake_openai: FakeUpstream
) -> None:
    chunks = [
        b'event: response.created\ndata: {"type":"response.created"}\n\n',
        b'event: response.output_text.delta\ndata: {"type":"response.output_text.del',
        b'ta","delta":"Hi"}\n\n',
        b'event: response.completed\ndata: {"type":"response.completed"}\n\n',
    ]
    fake_openai.reply(SSEReply(chunks, delay=0.02))  # (each its own write: a frame split in two)
    with httpx.stream(
        "POST",
        gateway.url + "/v1/responses",
        timeout=20,
        json={"model": "fast", "input": "hi", "stream": True},
    ) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        received = b"".join(response.iter_raw())
    assert received == b"".join(chunks)
    assert fake_openai.last.json["model"] == "gpt-fast"


def test_large_upload_streams_in_constant_memory(
    oai: openai.OpenAI, gateway: Gateway, fake_openai: FakeUpstream, tmp_path: Path
) -> None:
    path = tmp_path / "big.jsonl"
    digest = hashlib.sha256()
    with path.open("wb") as f:
        for piece in pattern(BIG):
            f.write(piece)
            digest.update(piece)
    fake_openai.reply(
        CountBody(
            {
                "id": "file-big",
                "object": "file",
                "bytes": BIG,
                "created_at": 1,
                "filename": "big.jsonl",
                "purpose": "batch",
                "status": "uploaded",
            }
        )
    )
    before = peak_rss_kb(gateway)
    with path.open("rb") as f:
        created = oai.files.create(file=f, purpose="batch")
    growth_mb = (peak_rss_kb(gateway) - before) / 1024
    assert created.id == "file-big"
    sent = fake_openai.last
    assert sent.path == "/v1/files"
    assert sent.headers["content-type"].startswith("multipart/form-data")
    assert sent.headers["authorization"] == "Bearer sk-test-openai"
    assert sent.size is not None and sent.size > BIG  # the file plus multipart framing
    assert sent.headers["content-length"] == str(sent.size)  # forwarded, not chunked
    assert growth_mb < 50, f"gateway peak RSS grew {growth_mb:.0f} MB for a 200 MB upload"


def test_large_download_streams_in_constant_memory(
    oai: openai.OpenAI, gateway: Gateway, fake_openai: FakeUpstream
) -> None:
    fake_openai.reply(StreamBytes(BIG))
    expected = hashlib.sha256()
    for piece in pattern(BIG):
        expected.update(piece)
    before = peak_rss_kb(gateway)
    digest, size = hashlib.sha256(), 0
    with oai.files.with_streaming_response.content("file-big") as response:
        assert response.headers["content-length"] == str(BIG)
        for piece in response.iter_bytes(1 << 20):
            size += len(piece)
            digest.update(piece)
    growth_mb = (peak_rss_kb(gateway) - before) / 1024
    assert fake_openai.last.path == "/v1/files/file-big/content"
    assert size == BIG and digest.hexdigest() == expected.hexdigest()
    assert growth_mb < 50, f"gateway peak RSS grew {growth_mb:.0f} MB for a 200 MB download"


def test_client_disconnect_cancels_the_upstream_call(
    gateway: Gateway, fake_openai: FakeUpstream
) -> None:
    fake_openai.reply(Hang())
    with pytest.raises(httpx.ReadTimeout):
        httpx.get(gateway.url + "/v1/batches/b1", timeout=0.5)
    assert fake_openai.wait_for(lambda: fake_openai.cancelled == 1)


# ---------------------------------------------------------------- allowlist (default)


def test_path_outside_the_allowlist(gateway: Gateway) -> None:
    # not part of the OpenAI surface: the Anthropic shape of "other" paths
    response = httpx.get(gateway.url + "/v1/organization/users")
    assert response.status_code == 404 and response.json()["type"] == "error"


def test_wrong_method_on_an_allowed_path(gateway: Gateway, fake_openai: FakeUpstream) -> None:
    response = httpx.delete(gateway.url + "/v1/embeddings")
    assert "DELETE" in openai_error(response, 405)
    response = httpx.put(gateway.url + "/v1/chat/completions")
    assert "PUT" in openai_error(response, 405)
    assert fake_openai.requests == []


def test_messages_paths_never_pass_through(gateway: Gateway) -> None:
    response = httpx.get(gateway.url + "/v1/messages/batches")
    assert response.status_code == 404 and response.json()["type"] == "error"


# ---------------------------------------------------------------- own gateways


@pytest.fixture(scope="module")
def special(
    fake_openai: FakeUpstream, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Gateway]:
    """A custom allowlist, a small MAX_UPLOAD_SIZE, a !PASSTHRU default
    provider and a provider where nothing listens."""
    env = {
        "OWN_API_KEY": "!PASSTHRU",
        "OWN_BASE_URL": fake_openai.url + "/v1",
        "DEAD_API_KEY": "sk-dead",
        "DEAD_BASE_URL": f"http://127.0.0.1:{free_port()}/v1",
        "VDM_DEFAULT_PROVIDER": "own",
        "MAX_UPLOAD_SIZE": "100000",
        "OWN_FORWARD_ORGANIZATION": "true",
        "PASSTHROUGH_ALLOW": "POST /v1/embeddings; GET,POST /v1/files",
    }
    with run_gateway(env, tmp_path_factory.mktemp("special")) as gw:
        yield gw


def test_passthru_key_is_the_clients(special: Gateway, fake_openai: FakeUpstream) -> None:
    fake_openai.reply(JSONReply(EMBEDDING))
    with sdk(special.url, key="sk-client-own") as client:
        client.embeddings.create(model="emb", input="x")
    assert fake_openai.last.headers["authorization"] == "Bearer sk-client-own"


def test_organization_headers_only_where_the_provider_says(
    special: Gateway, fake_openai: FakeUpstream
) -> None:
    """OWN_FORWARD_ORGANIZATION=true: the client's own key, its own organization."""
    fake_openai.reply(JSONReply(EMBEDDING), JSONReply(completion("ok")))
    org = {"openai-organization": "org-mine", "openai-project": "proj-mine"}
    with sdk(special.url, key="sk-client-own") as client:
        client.embeddings.create(model="emb", input="x", extra_headers=org)
        client.chat.completions.create(
            model="gpt-x", messages=[{"role": "user", "content": "x"}], extra_headers=org
        )
    assert len(fake_openai.requests) == 2
    for upstream in fake_openai.requests:
        assert {k: upstream.headers[k] for k in org} == org


def test_custom_allowlist(special: Gateway, fake_openai: FakeUpstream) -> None:
    fake_openai.reply(JSONReply(FILE))
    with sdk(special.url) as client:
        assert client.files.retrieve("file-abc").id == "file-abc"
        with pytest.raises(openai.NotFoundError):
            client.moderations.create(input="x")
        with pytest.raises(openai.APIStatusError) as raised:
            client.files.delete("file-abc")
    assert raised.value.status_code == 405
    response = httpx.post(special.url + "/v1/moderations", json={"input": "x"})
    assert "/v1/moderations" in openai_error(response, 404)  # an OpenAI path: OpenAI-shaped
    assert len(fake_openai.requests) == 1


def test_upload_over_max_upload_size(special: Gateway, fake_openai: FakeUpstream) -> None:
    with sdk(special.url) as client, pytest.raises(openai.APIStatusError) as raised:
        client.files.create(file=("a.jsonl", b"x" * 200_000), purpose="batch")
    assert raised.value.status_code == 413
    assert fake_openai.requests == []  # refused on its content-length, before any upstream call

    def chunked() -> Iterator[bytes]:  # no content-length: refused while streaming
        for _ in range(40):
            yield b"y" * 10_000

    fake_openai.reply(CountBody())
    response = httpx.post(
        special.url + "/v1/files",
        content=chunked(),
        timeout=20,
        headers={"content-type": "application/octet-stream", "authorization": "Bearer sk-own"},
    )
    assert "MAX_UPLOAD_SIZE" in openai_error(response, 413)


def test_connection_refused_is_an_openai_502(special: Gateway) -> None:
    with sdk(special.url) as client, pytest.raises(openai.InternalServerError) as raised:
        client.embeddings.create(model="dead:emb", input="x")
    assert raised.value.status_code == 502
    assert "'dead'" in raised.value.message and "sk-dead" not in raised.value.message


def test_invalid_allowlist_refuses_to_start(tmp_path: Path) -> None:
    with (
        pytest.raises(RuntimeError) as raised,
        run_gateway({"PASSTHROUGH_ALLOW": "FETCH /v1/files; POST files"}, tmp_path),
    ):
        pass
    message = str(raised.value)
    assert "PASSTHROUGH_ALLOW" in message
    assert "FETCH" in message and "'files'" in message  # every bad entry reported


# ---------------------------------------------------------------- early errors


@pytest.fixture(scope="module")
def locked(
    fake_openai: FakeUpstream, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Gateway]:
    env = {
        "OPENAI_API_KEY": "sk-test-openai",
        "OPENAI_BASE_URL": fake_openai.url + "/v1",
        "PROXY_API_KEY": "proxy-secret",
    }
    with run_gateway(env, tmp_path_factory.mktemp("locked")) as gw:
        yield gw


def test_missing_proxy_key_openai_door(locked: Gateway) -> None:
    with sdk(locked.url, key="wrong") as client:
        with pytest.raises(openai.AuthenticationError) as raised:
            client.chat.completions.create(model="m", messages=[{"role": "user", "content": "x"}])
        assert raised.value.body["type"] == "authentication_error"  # type: ignore[index]
        with pytest.raises(openai.AuthenticationError):
            client.embeddings.create(model="m", input="x")
        with pytest.raises(openai.AuthenticationError):
            client.models.list()
    assert "PROXY_API_KEY" in openai_error(httpx.get(locked.url + "/v1/files"), 401)


def test_missing_proxy_key_anthropic_door(locked: Gateway) -> None:
    with (
        anthropic.Anthropic(base_url=locked.url, api_key="wrong", max_retries=0) as client,
        pytest.raises(anthropic.AuthenticationError) as raised,
    ):
        client.messages.create(model="m", max_tokens=5, messages=[{"role": "user", "content": "x"}])
    body: Any = raised.value.body
    assert body["type"] == "error" and body["error"]["type"] == "authentication_error"


def test_proxy_key_holder_passes_through(locked: Gateway, fake_openai: FakeUpstream) -> None:
    fake_openai.reply(JSONReply(EMBEDDING))
    with sdk(locked.url, key="proxy-secret") as client:
        client.embeddings.create(model="emb", input="x")
    assert fake_openai.last.headers["authorization"] == "Bearer sk-test-openai"
