"""Transparent passthrough of the rest of the OpenAI API (embeddings, files,
batches, responses, ...): the rules, no I/O.

Every ``/v1/*`` request that is not one of the gateway's own routes and is
allowed by the allowlist goes, bytes untouched apart from ``model`` and auth,
to an OpenAI-format provider.  This module decides *whether* (the allowlist),
*where* (the provider, from the body's ``model``, ``x-vdm-provider`` or the
default) and *with which headers*; the call itself is
:meth:`vdm.providers.openai.OpenAIProvider.forward`, the ASGI glue is in
:mod:`vdm.server.relay`, and a tenant's token is held to the rule of every
door by :meth:`vdm.pipeline.Gateway.passthrough_context`.

The paths it may forward and their normal form are :mod:`vdm.allowlist`'s
(read by the settings too).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from vdm import ir

# Whether a request may pass: the allowlist's rules, named here too for the door's glue.
from vdm.allowlist import DEFAULT_ALLOW as DEFAULT_ALLOW
from vdm.allowlist import Allowlist as Allowlist
from vdm.allowlist import UnsafePath as UnsafePath
from vdm.allowlist import checked_query as checked_query
from vdm.allowlist import normal_path as normal_path
from vdm.allowlist import parse_allowlist as parse_allowlist
from vdm.errors import InvalidRequest
from vdm.protocols.body import rewrite
from vdm.protocols.fields import decode_json_object
from vdm.protocols.openai_upstream import usage_from_openai
from vdm.routing import Router

# The headers that describe a body relayed untouched, forwarded as sent (the
# API's own headers are added by the provider: vdm.providers.http.client_headers;
# no other client header goes upstream).
_REPRESENTATION = ("content-type", "accept", "accept-encoding")
PROVIDER_HEADER = "x-vdm-provider"


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


def runs_unnamed_models(method: str, path: str, names_model: bool) -> bool:
    """Whether a request would set models to work that its body does not name:
    a batch (its models are in an uploaded file) and an eval's run (its data
    source's) always; a run on a thread unless its body names the model (else
    the assistant's).  A token limited to some models may make none of these:
    a ``model`` added to a batch's body would be checked and then ignored."""
    if method != "POST":
        return False
    parts = path.strip("/").split("/")
    if parts == ["v1", "batches"]:
        return True
    if len(parts) == 4 and parts[:2] == ["v1", "evals"] and parts[3] == "runs":
        return True
    thread_run = parts == ["v1", "threads", "runs"] or (
        len(parts) == 4 and parts[:2] == ["v1", "threads"] and parts[3] == "runs"
    )
    return thread_run and not names_model


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
