"""Which raw ``/v1/*`` requests may pass through to an OpenAI-format provider
(:mod:`vdm.passthrough`): the allowlist and the paths' normal form.  Pure
functions, no I/O; the settings parse ``PASSTHROUGH_ALLOW`` with
:func:`parse_allowlist`.

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

from collections.abc import Iterable
from dataclasses import dataclass
from urllib.parse import quote_from_bytes

from vdm.errors import InvalidRequest, MethodNotAllowed, NotFound

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
