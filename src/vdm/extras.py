"""Optional features and the package extra that installs each.

The core install (``pipx install vdm``, ``uv tool install vdm``, ``pip install
vdm``) serves every HTTP door with SQLite and this process's own memory.
Four features need libraries of their own, installed by an extra:

==============  ============================  ======================
extra           feature                       library
==============  ============================  ======================
``postgres``    ``DATABASE_URL=postgresql…``  asyncpg
``redis``       ``REDIS_URL`` (shared state)  redis
``grpc``        ``GRPC_PORT``, ``vdm grpc``,  grpcio, protobuf
                ``vdm proxy``
``otel``        ``OTEL_EXPORTER_OTLP_…``      opentelemetry-sdk,
                (OpenTelemetry traces)        its OTLP/HTTP exporter
``all``         all of the above
==============  ============================  ======================

A feature asked for without its extra stops with one line naming the extra
(:class:`MissingExtra`; the CLI prints it and exits 2), never an import
traceback; :func:`vdm.validate.missing` finds them all from the settings before a
start.
Whether a library is there is looked up without importing it: a core start
imports none of them.
"""

from __future__ import annotations

from importlib.util import find_spec

# extra -> the modules it provides
EXTRAS: dict[str, tuple[str, ...]] = {
    "postgres": ("asyncpg",),
    "redis": ("redis",),
    "grpc": ("grpc", "google.protobuf"),
    "otel": ("opentelemetry.sdk", "opentelemetry.exporter.otlp.proto.http"),
}


class MissingExtra(RuntimeError):
    """A feature was asked for whose extra is not installed."""

    def __init__(self, feature: str, extra: str) -> None:
        super().__init__(f"{feature}: install vdm[{extra}]")
        self.extra = extra


def installed(extra: str) -> bool:
    try:
        return all(find_spec(module) is not None for module in EXTRAS[extra])
    except ModuleNotFoundError:  # a parent package (google) is absent
        return False


def require(extra: str, feature: str) -> None:
    """Raise :class:`MissingExtra` unless ``extra`` is installed."""
    if not installed(extra):
        raise MissingExtra(feature, extra)
