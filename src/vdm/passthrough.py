"""Transparent passthrough of the rest of the OpenAI API (embeddings, files,
batches, responses, ...): the rules, no I/O.

Every ``/v1/*`` request that is not one of the gateway's own routes and is
allowed by the allowlist goes, bytes untouched apart from ``model`` and auth,
to an OpenAI-format provider.  This module decides *whether* (the allowlist),
*where* (the provider, from the body's ``model``, ``x-vdm-provider`` or the
default) and *with which headers*; the call itself is
:meth:`vdm.providers.openai.OpenAIProvider.forward`, the ASGI glue is in
:mod:`vdm.server.app`.

Allowlist syntax (``PASSTHROUGH_ALLOW`` / ``[server] passthrough-allow``)::

    entry[; entry ...]     entry = METHODS PATH | default | none
    METHODS = GET,POST,... or *       PATH = /v1/...

``PATH`` matches itself and everything below it, segment by segment
(``/v1/files`` matches ``/v1/files/f1/content``, not ``/v1/filesystem``).
``default`` stands for :data:`DEFAULT_ALLOW` (so ``default; GET /v1/extra``
extends it); ``none`` alone turns passthrough off.

Paths (:func:`normal_path`): the allowlist is matched on, and the upstream
gets, one string, the request's path in its normal form.  A path that has no
single meaning is refused (400) before either: a ``.`` or ``..`` segment, an
empty segment (``//``; one trailing ``/`` is dropped), a backslash, a control
character, or a ``%``-escape of a dot, a slash, a backslash or ``%`` itself
(so no double encoding), in either case.  Other escapes are decoded and every segment
is encoded again the one way (RFC 3986 ``pchar``, ``;`` escaped).  The query
string goes upstream byte for byte as received (:func:`checked_query`): it is
only checked to hold RFC 3986 query characters and well-formed escapes, since
it comes after the path's ``?`` it cannot change the path.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from urllib.parse import quote_from_bytes

from vdm import ir
from vdm.errors import InvalidRequest, MethodNotAllowed, NotFound
from vdm.protocols.body import rewrite
from vdm.protocols.fields import decode_json_object
from vdm.protocols.openai import usage_from_openai
from vdm.providers.base import ClientContext
from vdm.routing import Router

if TYPE_CHECKING:
    from vdm.tenants.registry import Principal

# The public OpenAI API surface besides chat completions (the API reference, 2025).
DEFAULT_ALLOW = (
    "POST /v1/completions; POST /v1/embeddings; POST /v1/moderations; "
    "POST /v1/images; GET,POST,DELETE /v1/audio; "
    "GET,POST,DELETE /v1/files; POST /v1/uploads; GET,POST /v1/batches; "
    "GET,POST,DELETE /v1/responses; GET,POST,DELETE /v1/conversations; "
    "GET,POST,DELETE /v1/fine_tuning; GET,POST,DELETE /v1/vector_stores; "
    "GET,POST,DELETE /v1/assistants; GET,POST,DELETE /v1/threads; "
    "GET,DELETE /v1/models; GET,POST,DELETE /v1/chat/completions; POST /v1/realtime; "
    "GET,POST,DELETE /v1/evals; GET,POST,DELETE /v1/containers; GET,POST,DELETE /v1/videos"
)
METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
# Paths that belong to the Anthropic door: never forwarded to an OpenAI provider.
_ANTHROPIC_PATHS = ("/v1/messages",)
# The headers that describe a body relayed untouched, forwarded as sent (the
# API's own headers are added by the provider: vdm.providers.http.client_headers;
# no other client header goes upstream).
_REPRESENTATION = ("content-type", "accept", "accept-encoding")
PROVIDER_HEADER = "x-vdm-provider"


# ---------------------------------------------------------------- paths


class UnsafePath(InvalidRequest):
    """A passthrough path or query with more than one meaning (always OpenAI-shaped)."""


_PATH_RULE = (
    "passthrough paths may not hold '.' or '..' segments, empty segments, backslashes, "
    "control characters, or %-escapes of '.', '/', '\\' or '%'"
)
# Characters a segment keeps as they are when encoded again: RFC 3986 pchar
# less ';' (a path parameter to some servers: '..;' would be '..' to them).
_SEGMENT_SAFE = b"-._~!$&'()*+,=:@"
# Never in a decoded segment.
_REFUSED = frozenset(b"/\\%") | frozenset(range(0x20)) | {0x7F}
# Escapes refused even inside a segment: an encoded '.', '/', '\' or '%'.
_REFUSED_ESCAPES = frozenset({ord("."), ord("/"), ord("\\"), ord("%")})
_HEX = frozenset(b"0123456789abcdefABCDEF")
# RFC 3986 query: pchar / "/" / "?", and '%' for escapes (checked apart).
_QUERY_CHARS = frozenset(
    b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-._~!$&'()*+,;=:@/?%"
)


def normal_path(raw: bytes) -> str:
    """The normal form of a request path as the client encoded it (module
    docstring); :class:`UnsafePath` when it has none."""
    if not raw.startswith(b"/"):
        raise UnsafePath(_PATH_RULE)
    segments = raw[1:].split(b"/")
    if len(segments) > 1 and not segments[-1]:
        segments.pop()  # one trailing slash, as the gateway's own routes allow
    out = []
    for segment in segments:
        decoded = _unescaped(segment)
        if not decoded or decoded in (b".", b"..") or not _REFUSED.isdisjoint(decoded):
            raise UnsafePath(_PATH_RULE)
        out.append(quote_from_bytes(decoded, _SEGMENT_SAFE))
    return "/" + "/".join(out)


def _unescaped(segment: bytes) -> bytes:
    if b"%" not in segment:
        return segment
    out = bytearray()
    i, end = 0, len(segment)
    while i < end:
        byte = segment[i]
        if byte != 0x25:  # '%'
            out.append(byte)
            i += 1
            continue
        pair = segment[i + 1 : i + 3]
        if len(pair) < 2 or not _HEX.issuperset(pair):
            raise UnsafePath(f"malformed %-escape in the path; {_PATH_RULE}")
        value = int(pair, 16)
        if value in _REFUSED_ESCAPES:
            raise UnsafePath(_PATH_RULE)
        out.append(value)
        i += 3
    return bytes(out)


def checked_query(raw: bytes) -> str:
    """The query string as it goes upstream: as received, once it is known to
    hold only RFC 3986 query characters and well-formed escapes."""
    if not raw:
        return ""
    if not _QUERY_CHARS.issuperset(raw):
        raise UnsafePath("the query string holds characters outside RFC 3986 (escape them)")
    at = raw.find(b"%")
    while at != -1:
        if not _HEX.issuperset(raw[at + 1 : at + 3]) or len(raw) < at + 3:
            raise UnsafePath("malformed %-escape in the query string")
        at = raw.find(b"%", at + 3)
    return raw.decode("ascii")


# ---------------------------------------------------------------- allowlist


@dataclass(frozen=True, slots=True)
class Rule:
    methods: frozenset[str] | None  # None: every method
    prefix: str

    def covers(self, path: str) -> bool:
        return path == self.prefix or path.startswith(self.prefix + "/")


class Allowlist:
    """Which methods and paths may pass through; checked before anything else."""

    __slots__ = ("rules",)

    def __init__(self, rules: Iterable[Rule]) -> None:
        self.rules = tuple(rules)

    def covers(self, path: str) -> bool:
        """Is ``path`` under an allowed prefix (whatever the method)?"""
        return any(rule.covers(path) for rule in self.rules)

    def allows(self, method: str, path: str) -> bool:
        return any(
            rule.covers(path) and (rule.methods is None or method in rule.methods)
            for rule in self.rules
        )

    def check(self, method: str, path: str) -> None:
        """Raise 404 for a path outside the allowlist, 405 for a method not allowed."""
        rules = [rule for rule in self.rules if rule.covers(path)]
        if not rules:
            raise NotFound(f"no such endpoint: {method} {path}")
        if any(rule.methods is None or method in rule.methods for rule in rules):
            return
        allowed = sorted(set().union(*(rule.methods or () for rule in rules)))
        raise MethodNotAllowed(f"method {method} not allowed on {path}; use {', '.join(allowed)}")


def parse_allowlist(text: str) -> tuple[Rule, ...]:
    """Parse the allowlist syntax (module docstring); ValueError lists every bad entry."""
    rules: list[Rule] = []
    problems: list[str] = []
    entries = [e.strip() for e in text.split(";") if e.strip()]
    if not entries:
        raise ValueError("empty allowlist; use 'none' to turn passthrough off")
    if [e.lower() for e in entries] == ["none"]:
        return ()
    for entry in entries:
        if entry.lower() == "none":
            problems.append("'none' turns passthrough off and must be the only entry")
            continue
        if entry.lower() == "default":
            rules.extend(parse_allowlist(DEFAULT_ALLOW))
            continue
        try:
            rules.append(_rule(entry))
        except ValueError as exc:
            problems.append(f"'{entry}': {exc}")
    if problems:
        raise ValueError("; ".join(problems))
    return tuple(rules)


def _rule(entry: str) -> Rule:
    parts = entry.split()
    if len(parts) != 2:
        raise ValueError(
            "expected 'METHODS /v1/path' (e.g. 'GET,POST /v1/files'), 'default' or 'none'"
        )
    methods_text, path = parts
    if methods_text == "*":
        methods = None
    else:
        methods = frozenset(m.strip().upper() for m in methods_text.split(",") if m.strip())
        unknown = sorted(m for m in methods if m not in METHODS)
        if unknown or not methods:
            raise ValueError(
                f"unknown method {', '.join(unknown) or methods_text!r}; "
                f"use {', '.join(sorted(METHODS))} or *"
            )
    path = path.rstrip("/")
    if not path.startswith("/v1/") or "?" in path or "//" in path:
        raise ValueError(f"path {path!r} must start with /v1/ and have no query string")
    try:
        normal = normal_path(path.encode())
    except UnsafePath:
        normal = ""
    if normal != path:
        raise ValueError(f"path {path!r} is not in normal form (no '.', '..' or %-escapes)")
    if any(
        path == p or path.startswith(p + "/") or p.startswith(path + "/") for p in _ANTHROPIC_PATHS
    ):
        raise ValueError(f"path {path!r} overlaps the Anthropic Messages API (/v1/messages)")
    return Rule(methods, path)


# ---------------------------------------------------------------- where to


@dataclass(frozen=True, slots=True)
class Target:
    provider: str
    model: str | None  # the upstream model, when the body named one
    requested: str | None = field(default=None, compare=False)  # the model as the body named it


def choose(router: Router, formats: Mapping[str, str], model: Any, explicit: str | None) -> Target:
    """The provider for a passthrough request.

    ``model`` (the JSON body's ``model``, or None) routes as everywhere else;
    without it, ``explicit`` (the ``x-vdm-provider`` header) or the default
    provider.  Only OpenAI-format providers can answer the OpenAI API.
    """
    if model is not None:
        if not isinstance(model, str) or not model.strip():
            raise InvalidRequest("model: expected a non-empty string")
        route = router.resolve(model)
        target = Target(route.provider, route.model, model)
    elif explicit:
        name = explicit.strip().lower()
        if name not in formats:
            raise InvalidRequest(
                f"{PROVIDER_HEADER}: unknown provider '{explicit}'; "
                f"known providers: {', '.join(formats)}"
            )
        target = Target(name, None)
    else:
        target = Target(router.default_provider, None)
    fmt = formats[target.provider]
    if fmt != "openai":
        raise InvalidRequest(
            f"provider '{target.provider}' speaks the {fmt} format; only OpenAI-format "
            "providers serve this endpoint (route with an 'openai-provider:model' or "
            f"the {PROVIDER_HEADER} header)"
        )
    return target


def request_headers(
    headers: Mapping[str, str], *, streamed: bool, read: bool = False
) -> dict[str, str]:
    """The representation headers of the client's body as they go upstream;
    ``content-length`` only for a body streamed as it came (a body read here
    may have been rewritten: its length is recomputed).  ``accept-encoding``
    is ``identity`` when the gateway must ``read`` the answer's usage (a
    tenant's TPM) or the client sent none: the answer is relayed undecoded,
    so it comes in an encoding both can read."""
    out = {name: headers[name] for name in _REPRESENTATION if name in headers}
    if read or "accept-encoding" not in out:
        out["accept-encoding"] = "identity"
    if streamed and "content-length" in headers:
        out["content-length"] = headers["content-length"]
    return out


def is_json(headers: Mapping[str, str]) -> bool:
    ctype = headers.get("content-type", "")
    return ctype.partition(";")[0].strip().lower() == "application/json"


def route_json(
    router: Router, formats: Mapping[str, str], body: bytes, explicit: str | None
) -> tuple[Target, bytes]:
    """A JSON request read whole: its ``model`` picks the provider and is
    rewritten to the upstream model (every other byte untouched)."""
    if not body.strip():
        return choose(router, formats, None, explicit), body
    parsed = decode_json_object(body)
    target = choose(router, formats, parsed.get("model"), explicit)
    if target.model is not None:
        body = rewrite(body, parsed, {"model": target.model})
    return target, body


def is_form(headers: Mapping[str, str]) -> bool:
    ctype = headers.get("content-type", "")
    return ctype.partition(";")[0].strip().lower() == "multipart/form-data"


# The API's multipart bodies that name a model (transcriptions, translations,
# image edits and variations): read whole for it when a token's models are limited.
MODEL_FORM_PATHS = ("/v1/audio/", "/v1/images/")


def names_model_in_form(path: str) -> bool:
    return path.startswith(MODEL_FORM_PATHS)


def route_form(
    router: Router, formats: Mapping[str, str], body: bytes, content_type: str, explicit: str | None
) -> Target:
    """A multipart request read whole: the provider as for any body without a
    JSON ``model``; its form's ``model`` field is the model it asks for (sent
    upstream as it is)."""
    target = choose(router, formats, None, explicit)
    model = form_field(body, content_type, "model")
    return Target(target.provider, None, model)


def form_field(body: bytes, content_type: str, name: str) -> str | None:
    """The value of the form field ``name`` of a ``multipart/form-data`` body
    (None without one); a 400 when the body cannot be read or names it twice
    (an upstream would take one of the two, no telling which)."""
    boundary = _boundary(content_type)
    wanted = {f'name="{name}"'.encode(), f"name={name}".encode()}
    found: list[bytes] = []
    for part in body.split(b"--" + boundary)[1:]:
        if part.startswith(b"--"):
            break  # the closing delimiter
        head, sep, value = part.partition(b"\r\n\r\n")
        if not sep:
            raise InvalidRequest("multipart/form-data body: a part without headers")
        for line in head.split(b"\r\n"):
            field_name, _, params = line.partition(b":")
            if field_name.strip().lower() != b"content-disposition":
                continue
            if wanted & {p.strip() for p in params.split(b";")[1:]}:
                found.append(value.removesuffix(b"\r\n"))
    if len(found) > 1:
        raise InvalidRequest(f"multipart/form-data body: the field {name!r} is sent twice")
    if not found:
        return None
    try:
        return found[0].decode()
    except UnicodeDecodeError:
        raise InvalidRequest(f"multipart/form-data body: {name!r} is not UTF-8") from None


def _boundary(content_type: str) -> bytes:
    for param in content_type.split(";")[1:]:
        key, _, value = param.strip().partition("=")
        if key.lower() == "boundary" and value.strip('"'):
            return value.strip('"').encode("latin-1")
    raise InvalidRequest("multipart/form-data without a boundary")


# ---------------------------------------------------------------- tenants


def tenant_context(ctx: ClientContext, principal: Principal, target: Target) -> ClientContext:
    """A tenant's passthrough request: the rule of every door (the token's
    allowed providers; its allowed models for a body that names one), then its
    project's key for that provider when it has one."""
    principal.check(target.provider, target.requested, target.model)
    return ClientContext(
        client_key=ctx.client_key,
        headers=ctx.headers,
        upstream_key=principal.upstream_keys.get(target.provider),
    )


# ---------------------------------------------------------------- usage


class UsageTail:
    """Reads the usage of a relayed answer (embeddings, completions, streamed
    completions with ``include_usage``: the API puts it last) from the answer's
    last few KiB, kept as references to its last chunks (no copy per chunk).
    Only an answer in JSON or SSE and not content-encoded can be read."""

    __slots__ = ("_chunks", "_size", "readable")
    KEEP = 16 * 1024

    def __init__(self, headers: Mapping[str, str]) -> None:
        ctype = headers.get("content-type", "")
        self.readable = headers.get("content-encoding", "identity") == "identity" and (
            ctype.startswith("application/json") or ctype.startswith("text/event-stream")
        )
        self._chunks: list[bytes] = []
        self._size = 0

    def feed(self, chunk: bytes) -> None:
        chunks = self._chunks
        chunks.append(chunk)
        self._size += len(chunk)
        while len(chunks) > 1 and self._size - len(chunks[0]) >= self.KEEP:
            self._size -= len(chunks.pop(0))

    def usage(self) -> ir.Usage | None:
        if not self.readable or not self._chunks:
            return None
        text = b"".join(self._chunks)[-self.KEEP :].decode("utf-8", "replace")
        at = text.rfind('"usage"')
        if at < 0:
            return None
        colon = text.find(":", at + 7)
        if colon < 0:
            return None
        start = colon + 1
        while start < len(text) and text[start] in " \t\r\n":
            start += 1
        try:
            value, _ = _json.raw_decode(text, start)
        except ValueError:
            return None
        return usage_from_openai(value) if isinstance(value, dict) else None


_json = json.JSONDecoder()
