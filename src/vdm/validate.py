"""The settings as the gateway's parts check them.

:func:`vdm.config.load_settings` reads and checks every layer on its own; what
only a part above it knows comes in as an argument, given here, so the
settings never import the parts they configure.  Every entry point (the CLI,
the server's start and reload) loads its settings through this module:

* the names ``[middleware]`` may list are the chain's
  (:data:`vdm.middleware.chain.FACTORIES`);
* :func:`missing`: the features the settings ask for whose package extra is
  not installed (checked before a start).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from vdm import config, tracing
from vdm.config import Settings
from vdm.extras import MissingExtra, installed
from vdm.middleware.chain import FACTORIES


def load_settings(env: Mapping[str, str] | None = None, cwd: Path | None = None) -> Settings:
    """:func:`vdm.config.load_settings` with the middleware names the chain knows."""
    return config.load_settings(env, cwd, middleware=FACTORIES)


def missing(settings: Settings) -> list[MissingExtra]:
    """What these settings ask for that is not installed (a start would fail on it)."""
    asked = []
    if settings.server.redis_url:
        asked.append(("redis", "REDIS_URL is set"))
    if settings.tenants.enabled and settings.tenants.shared:
        asked.append(("postgres", "DATABASE_URL is PostgreSQL"))
    if settings.grpc.port is not None:
        asked.append(("grpc", "GRPC_PORT (--grpc-port) is set"))
    if tracing.enabled():
        asked.append(("otel", "OTEL_EXPORTER_OTLP_ENDPOINT is set"))
    return [MissingExtra(feature, extra) for extra, feature in asked if not installed(extra)]
