"""The client side of LLMProxy: proxy URLs, version compatibility, server info.

URLs are vibectl's: ``vibectl-server://[jwt@]host[:port]`` (TLS) and
``vibectl-server-insecure://[jwt@]host[:port]`` (plaintext); the port
defaults to 50051.  The token may also come from ``VDM_PROXY_TOKEN``.

Versions are semantic: a different major version is refused (the wire may
have changed), a different minor version is a warning.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote, urlsplit

import grpc

from vdm.dirs import user_config_path
from vdm.grpc import llm_proxy_pb2 as pb
from vdm.grpc import llm_proxy_pb2_grpc as pb_grpc

SCHEMES = {"vibectl-server": True, "vibectl-server-insecure": False}  # scheme -> TLS
DEFAULT_PORT = 50051


@dataclass(frozen=True)
class ProxyURL:
    host: str
    port: int
    tls: bool
    token: str | None = None

    @property
    def target(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"

    def redacted(self) -> str:
        scheme = "vibectl-server" if self.tls else "vibectl-server-insecure"
        who = "***@" if self.token else ""
        return f"{scheme}://{who}{self.target}"


def parse_url(url: str) -> ProxyURL:
    """Parse a proxy URL; ValueError names what is wrong (never echoing a token)."""
    parts = urlsplit(url.strip())
    if parts.scheme not in SCHEMES:
        raise ValueError(
            "expected vibectl-server://[jwt@]host[:port] (TLS) or "
            "vibectl-server-insecure://[jwt@]host[:port] (no TLS)"
        )
    try:
        port = parts.port or DEFAULT_PORT
    except ValueError:
        raise ValueError("the port must be a number between 1 and 65535") from None
    if not parts.hostname:
        raise ValueError("the URL names no host")
    if parts.path not in ("", "/") or parts.query or parts.fragment:
        raise ValueError("the URL must be only scheme://[jwt@]host[:port]")
    token = unquote(parts.username) if parts.username else None
    return ProxyURL(parts.hostname, port, SCHEMES[parts.scheme], token)


def parse_version(text: str) -> tuple[int, int, int]:
    core = text.strip().lstrip("v").split("+")[0].split("-")[0]
    numbers = core.split(".")
    try:
        values = [int(n) for n in numbers[:3]]
    except ValueError:
        raise ValueError(f"not a semantic version: {text!r}") from None
    if not values:
        raise ValueError(f"not a semantic version: {text!r}")
    values += [0] * (3 - len(values))
    return values[0], values[1], values[2]


def compatibility(client: str, server: str) -> tuple[str, str | None]:
    """``("ok" | "warn" | "refuse", message)`` for a client and server version."""
    try:
        c, s = parse_version(client), parse_version(server)
    except ValueError as exc:
        return "warn", f"cannot compare versions: {exc}"
    if c[0] != s[0]:
        newer = "client" if c[0] < s[0] else "server"
        return "refuse", (
            f"incompatible versions: client {client}, server {server} (major "
            f"versions differ); upgrade the {newer} to {max(c, s)[0]}.x "
            "(pip install -U vdm)"
        )
    if c[1] != s[1]:
        return "warn", (
            f"version skew: client {client}, server {server} (minor versions "
            "differ); newer features may be missing; consider upgrading the older"
        )
    return "ok", None


def server_info(
    url: ProxyURL, *, timeout: float = 10.0, ca_bundle: str | None = None
) -> pb.GetServerInfoResponse:
    """Call GetServerInfo (raises grpc.RpcError)."""
    if url.tls:
        roots = Path(ca_bundle).expanduser().read_bytes() if ca_bundle else None
        channel = grpc.secure_channel(url.target, grpc.ssl_channel_credentials(roots))
    else:
        channel = grpc.insecure_channel(url.target)
    token = url.token or os.environ.get("VDM_PROXY_TOKEN")
    metadata = [("authorization", f"Bearer {token}")] if token else []
    with channel:
        stub = pb_grpc.VibectlLLMProxyStub(channel)
        return stub.GetServerInfo(pb.GetServerInfoRequest(), metadata=metadata, timeout=timeout)


# ---------------------------------------------------------------- the saved configuration


def config_path(env: Mapping[str, str] | None = None) -> Path:
    return user_config_path(os.environ if env is None else env).parent / "proxy.json"


def save(url: str, ca_bundle: str | None, env: Mapping[str, str] | None = None) -> Path:
    """Write the proxy URL (it may hold a token: mode 0600)."""
    path = config_path(env)
    path.parent.mkdir(parents=True, exist_ok=True)
    data = {"url": url, "ca_bundle": ca_bundle}
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump(data, f)
    path.chmod(0o600)
    return path


def load(env: Mapping[str, str] | None = None) -> dict[str, str | None] | None:
    try:
        data = json.loads(config_path(env).read_text())
    except (FileNotFoundError, ValueError):
        return None
    return data if isinstance(data, dict) and isinstance(data.get("url"), str) else None
