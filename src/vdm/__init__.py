"""vdm: a fast LLM gateway."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("vdm")
except PackageNotFoundError:  # pragma: no cover - running from a source tree
    __version__ = "0.0.0+source"
