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
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from vdm.errors import InvalidRequest, MethodNotAllowed, NotFound
from vdm.protocols.body import rewrite
from vdm.protocols.fields import decode_json_object
from vdm.providers.http import HOP_BY_HOP_REQUEST
from vdm.routing import Router

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
# Client headers never forwarded: hop-by-hop ones, the client's credentials
# (replaced by the provider's), and the gateway's own.
_DROP_REQUEST = HOP_BY_HOP_REQUEST | {
    "authorization",
    "x-api-key",
    "x-vdm-provider",
    "content-length",
    "expect",
}
PROVIDER_HEADER = "x-vdm-provider"


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
        target = Target(route.provider, route.model)
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


def request_headers(headers: Mapping[str, str], *, streamed: bool) -> dict[str, str]:
    """The client's headers as they go upstream: hop-by-hop, credentials and the
    gateway's own removed; ``content-length`` kept only for a body streamed as
    it came (a body read here may have been rewritten: its length is recomputed)."""
    out = {
        k: v for k, v in headers.items() if k not in _DROP_REQUEST and not k.startswith("proxy-")
    }
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
