"""Unit tests: the passthrough allowlist, provider choice and header rules."""

from __future__ import annotations

import pytest

from vdm.allowlist import (
    DEFAULT_ALLOW,
    Allowlist,
    Rule,
    UnsafePath,
    checked_query,
    normal_path,
    parse_allowlist,
)
from vdm.errors import InvalidRequest, MethodNotAllowed, NotFound
from vdm.passthrough import (
    Target,
    UsageTail,
    choose,
    form_field,
    request_headers,
    route_json,
)
from vdm.providers.http import client_headers
from vdm.routing import Router


def test_parse_entries() -> None:
    rules = parse_allowlist(" GET,post /v1/files/ ;POST /v1/embeddings; * /v1/x ")
    assert rules == (
        Rule(frozenset({"GET", "POST"}), "/v1/files"),
        Rule(frozenset({"POST"}), "/v1/embeddings"),
        Rule(None, "/v1/x"),
    )


def test_default_and_none() -> None:
    default = parse_allowlist(DEFAULT_ALLOW)
    extended = parse_allowlist("default; GET /v1/custom")
    assert extended == (*default, Rule(frozenset({"GET"}), "/v1/custom"))
    assert parse_allowlist("none") == ()
    assert Allowlist(default).allows("POST", "/v1/audio/transcriptions")
    assert Allowlist(default).allows("GET", "/v1/chat/completions/cc_1/messages")
    assert not Allowlist(default).allows("POST", "/v1/models/m")


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("", "empty"),
        ("FETCH /v1/files", "FETCH"),
        ("GET files", "must start with /v1/"),
        ("GET /v1/files?x=1", "query"),
        ("GET", "expected 'METHODS /v1/path'"),
        ("GET /v1/files extra", "expected"),
        ("POST /v1/messages/batches", "Anthropic"),
        ("POST /v1/messages", "Anthropic"),
        ("none; GET /v1/files", "only entry"),
    ],
)
def test_invalid_entries(text: str, needle: str) -> None:
    with pytest.raises(ValueError) as raised:
        parse_allowlist(text)
    assert needle in str(raised.value)


def test_every_bad_entry_is_reported() -> None:
    with pytest.raises(ValueError) as raised:
        parse_allowlist("FETCH /v1/a; GET /v1/ok; GET b")
    assert "'FETCH /v1/a'" in str(raised.value) and "'GET b'" in str(raised.value)


def test_matching_is_by_segment() -> None:
    allow = Allowlist(parse_allowlist("GET,POST /v1/files; DELETE /v1/files/old"))
    assert allow.allows("GET", "/v1/files") and allow.allows("GET", "/v1/files/f1/content")
    assert not allow.covers("/v1/filesystem")
    assert allow.allows("DELETE", "/v1/files/old/x")
    with pytest.raises(NotFound):
        allow.check("GET", "/v1/filesystem")
    with pytest.raises(MethodNotAllowed) as raised:
        allow.check("DELETE", "/v1/files/f1")
    assert "GET, POST" in raised.value.message
    allow.check("DELETE", "/v1/files/old")


ROUTER = Router(["openai", "plain", "ant", "echo"], "openai", {"openai": {"fast": "gpt-fast"}}, {})
FORMATS = {"openai": "openai", "plain": "openai", "ant": "anthropic", "echo": "echo"}


def test_choose() -> None:
    assert choose(ROUTER, FORMATS, "fast", None) == Target("openai", "gpt-fast")
    assert choose(ROUTER, FORMATS, "plain:emb", "openai") == Target("plain", "emb")
    assert choose(ROUTER, FORMATS, None, "Plain") == Target("plain", None)
    assert choose(ROUTER, FORMATS, None, None) == Target("openai", None)
    assert choose(ROUTER, FORMATS, "zz:x", None) == Target("openai", "zz:x")
    for model, explicit, needle in (
        (None, "ant", "'ant'"),
        ("echo:x", None, "'echo'"),
        (None, "nope", "unknown provider 'nope'"),
        (3, None, "model"),
        ("  ", None, "model"),
    ):
        with pytest.raises(InvalidRequest) as raised:
            choose(ROUTER, FORMATS, model, explicit)
        assert needle in raised.value.message


def test_route_json_rewrites_only_the_model() -> None:
    body = b'{"input": "x", "model": "fast", "dimensions": 3}'
    target, out = route_json(ROUTER, FORMATS, body, None)
    assert target == Target("openai", "gpt-fast")
    assert out == b'{"input": "x", "model":"gpt-fast", "dimensions": 3}'
    assert route_json(ROUTER, FORMATS, b'{"input": "x"}', "plain") == (
        Target("plain", None),
        b'{"input": "x"}',
    )
    assert route_json(ROUTER, FORMATS, b"", None) == (Target("openai", None), b"")
    with pytest.raises(InvalidRequest):
        route_json(ROUTER, FORMATS, b"[1]", None)


def test_request_headers() -> None:
    incoming = {
        "authorization": "Bearer c",
        "x-api-key": "c",
        "host": "gw",
        "connection": "x",
        "keep-alive": "1",
        "te": "trailers",
        "transfer-encoding": "chunked",
        "proxy-authorization": "p",
        "proxy-foo": "p",
        "upgrade": "h2c",
        "x-vdm-provider": "plain",
        "content-length": "10",
        "expect": "100-continue",
        "content-type": "multipart/form-data; boundary=b",
        "openai-beta": "v2",  # (added by the provider: client_headers)
        "cookie": "session=1",
        "api-key": "azure-key",
        "x-http-method-override": "DELETE",
        "openai-organization": "org-x",
    }
    kept = {"content-type": "multipart/form-data; boundary=b", "accept-encoding": "identity"}
    assert request_headers(incoming, streamed=False) == kept
    assert request_headers(incoming, streamed=True) == {**kept, "content-length": "10"}
    assert request_headers({"accept-encoding": "gzip"}, streamed=False) == {
        "accept-encoding": "gzip"
    }


HOSTILE = {
    "authorization": "Bearer c",
    "x-api-key": "c",
    "api-key": "c",
    "cookie": "session=1",
    "x-http-method-override": "DELETE",
    "x-vdm-provider": "plain",
    "openai-organization": "org-x",
    "openai-project": "proj-x",
    "host": "gw",
    "x-forwarded-for": "10.0.0.1",
    "x-custom": "1",
}
API = {
    "openai-beta": "assistants=v2",
    "anthropic-version": "2023-06-01",
    "anthropic-beta": "tools-2024",
    "idempotency-key": "k1",
    "user-agent": "OpenAI/Python 1.0",
    "x-stainless-lang": "python",
    "x-stainless-retry-count": "0",
}


def test_client_headers_an_allowlist_per_family() -> None:
    incoming = {**HOSTILE, **API}
    assert client_headers(incoming, "openai") == {
        k: v for k, v in API.items() if not k.startswith("anthropic-")
    }
    assert client_headers(incoming, "anthropic") == {
        k: v for k, v in API.items() if k != "openai-beta"
    }
    with_org = client_headers(incoming, "openai", organization=True)
    assert with_org["openai-organization"] == "org-x" and with_org["openai-project"] == "proj-x"
    assert "cookie" not in with_org and "api-key" not in with_org
    assert client_headers(None, "openai") == {}


@pytest.mark.parametrize(
    ("raw", "normal"),
    [
        (b"/v1/files/file-abc", "/v1/files/file-abc"),
        (b"/v1/files/file-abc/", "/v1/files/file-abc"),
        (b"/v1/models/ft%3Agpt-4o%3aorg", "/v1/models/ft:gpt-4o:org"),
        (b"/v1/files/a b", "/v1/files/a%20b"),
        (b"/v1/files/..;", "/v1/files/..%3B"),  # a path parameter to some servers: escaped
        (b"/v1/x/%E6%A8%A1", "/v1/x/%E6%A8%A1"),
    ],
)
def test_normal_path(raw: bytes, normal: str) -> None:
    assert normal_path(raw) == normal
    assert normal_path(normal.encode()) == normal  # the normal form is its own


@pytest.mark.parametrize(
    "raw",
    [
        b"/v1/files/../x",
        b"/v1/files/./x",
        b"/v1/files/%2e%2E/x",
        b"/v1/files/x%2ey",
        b"/v1/files/..%2fx",
        b"/v1/files/%252e%252e",
        b"/v1/files/%5cx",
        b"/v1/files\\x",
        b"/v1//files",
        b"/v1/files//",
        b"/v1/files/%00",
        b"/v1/files/\x7f",
        b"/v1/files/%4",
        b"/v1/files/%g0",
        b"v1/files",
    ],
)
def test_ambiguous_paths_are_refused(raw: bytes) -> None:
    with pytest.raises(UnsafePath):
        normal_path(raw)


def test_query_is_checked_not_changed() -> None:
    assert checked_query(b"a=%2F..%2F&b=/c?d") == "a=%2F..%2F&b=/c?d"
    for bad in (b"a=%", b"a=%2", b"a=%zz", b"a#b", b"a=<b>", b"a=\xff"):
        with pytest.raises(UnsafePath):
            checked_query(bad)


def test_allowlist_paths_must_be_normal() -> None:
    with pytest.raises(ValueError, match="normal form"):
        parse_allowlist("GET /v1/files/../admin")
    with pytest.raises(ValueError, match="normal form"):
        parse_allowlist("GET /v1/fi%6ces")


def form(*fields: tuple[str, bytes]) -> tuple[bytes, str]:
    parts = [
        b'--bnd\r\nContent-Disposition: form-data; name="%s"\r\n\r\n%s\r\n' % (n.encode(), v)
        for n, v in fields
    ]
    return b"".join(parts) + b"--bnd--\r\n", "multipart/form-data; boundary=bnd"


def test_form_field() -> None:
    body, ctype = form(("file", b'RIFF\r\n\r\nname="model"'), ("model", b"whisper-1"))
    assert form_field(body, ctype, "model") == "whisper-1"
    assert form_field(*form(("file", b"x")), "model") is None
    with pytest.raises(InvalidRequest, match="twice"):
        form_field(*form(("model", b"a"), ("model", b"b")), "model")
    with pytest.raises(InvalidRequest, match="boundary"):
        form_field(body, "multipart/form-data", "model")


def test_usage_tail_reads_the_last_usage_without_copying_chunks() -> None:
    tail = UsageTail({"content-type": "application/json"})
    tail.feed(b'{"data": [' + b"0.1," * 50_000)
    tail.feed(b'0.2], "usage": {"prompt_tokens": 9, "total_tokens": 9}}')
    usage = tail.usage()
    assert usage is not None and (usage.input_tokens, usage.output_tokens) == (9, 0)
    stream = UsageTail({"content-type": "text/event-stream"})
    stream.feed(b'data: {"choices":[],"usage":null}\n\n')
    stream.feed(b'data: {"choices":[],"usage":{"prompt_tokens":2,"completion_tokens":5}}\n\n')
    stream.feed(b"data: [DONE]\n\n")
    usage = stream.usage()
    assert usage is not None and (usage.input_tokens, usage.output_tokens) == (2, 5)
    assert not UsageTail({"content-type": "application/json", "content-encoding": "gzip"}).readable
    assert not UsageTail({"content-type": "application/octet-stream"}).readable
    assert UsageTail({"content-type": "application/json"}).usage() is None
