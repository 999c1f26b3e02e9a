"""The kinds of value a setting takes, each read the same way from TOML and env.

A TOML file gives typed values (``port = 8082``, ``models-prefetch = false``,
``trusted-proxies = ["10.0.0.0/8"]``); the environment gives strings
(``PORT=8082``, ``MODELS_PREFETCH=false``, ``TRUSTED_PROXIES=10.0.0.0/8``).
Each kind accepts both and reports a bad value as one problem that begins
with where it came from (``environment variable PORT`` or
``/path/vdm.toml: server.port``).
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

_TRUE = ("1", "true", "yes", "on")
_FALSE = ("0", "false", "no", "off")


class Kind:
    """Plain text; the base of every kind."""

    masks_url = False  # shown with the URL's password as ***

    @property
    def label(self) -> str:
        """The type in words, for the docs."""
        return "text"

    def parse(self, value: Any, where: str, problems: list[str]) -> Any:
        """The value, or None after adding a problem that starts with ``where``."""
        return str(value)

    def from_env(self, text: str) -> Any:
        """An environment variable's text as a TOML file would hold the value."""
        return text

    def env_text(self, value: Any) -> str:
        """The inverse of :meth:`from_env`: a TOML-shaped value as env text."""
        return str(value)

    def show(self, value: Any) -> str:
        """A loaded value as ``vdm config show`` prints it."""
        if value is None or value == () or value == {}:
            return "-"
        if isinstance(value, bool):
            return str(value).lower()
        if isinstance(value, tuple):
            return ", ".join(str(v) for v in value)
        return str(value)


class Text(Kind):
    pass


def masked_url(url: str) -> str:
    """``url`` with its password (if any) as ``***``."""
    parsed = urlparse(url)
    if parsed.password:
        return url.replace(f":{parsed.password}@", ":***@", 1)
    return url


@dataclass(frozen=True)
class Int(Kind):
    low: int | None = None
    high: int | None = None

    @property
    def label(self) -> str:
        if self.high is not None:
            return f"integer {self.low}-{self.high}"
        return f"integer >= {self.low}" if self.low is not None else "integer"

    def parse(self, value: Any, where: str, problems: list[str]) -> int | None:
        try:
            number = int(value) if not isinstance(value, bool | float) else None
        except (TypeError, ValueError):
            number = None
        low, high = self.low, self.high
        if (
            number is None
            or (low is not None and number < low)
            or (high is not None and number > high)
        ):
            bounds = f" between {low} and {high}" if high else (f" >= {low}" if low else "")
            problems.append(f"{where}: expected an integer{bounds}, got {value!r}")
            return None
        return number


@dataclass(frozen=True)
class Seconds(Kind):
    label = "seconds (> 0)"

    def parse(self, value: Any, where: str, problems: list[str]) -> float | None:
        try:
            number = float(value) if not isinstance(value, bool) else None
        except (TypeError, ValueError):
            number = None
        if number is None:
            problems.append(f"{where}: expected a number of seconds, got {value!r}")
            return None
        if number <= 0:
            problems.append(f"{where}: expected a positive number of seconds, got {value!r}")
            return None
        return number


@dataclass(frozen=True)
class Flag(Kind):
    label = "true or false"

    def parse(self, value: Any, where: str, problems: list[str]) -> bool | None:
        return flag(value, where, problems)

    def env_text(self, value: Any) -> str:
        return "true" if value else "false"


def flag(value: Any, where: str, problems: list[str]) -> bool | None:
    """``true``/``false`` in TOML; ``1 true yes on`` / ``0 false no off`` as text."""
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in _TRUE + _FALSE:
        return value.strip().lower() in _TRUE
    problems.append(f"{where}: expected true or false, got {value!r}")
    return None


@dataclass(frozen=True)
class Choice(Kind):
    """One of ``choices``, compared case-insensitively (kept in ``choices``' case)."""

    choices: tuple[str, ...]
    what: str = ""  # "log level": "log level must be 'DEBUG', ...", else "expected ..."

    @property
    def label(self) -> str:
        return "one of " + ", ".join(self.choices)

    def parse(self, value: Any, where: str, problems: list[str]) -> str | None:
        for choice in self.choices:
            if str(value).lower() == choice.lower():
                return choice
        rule = f"{self.what} must be" if self.what else "expected"
        problems.append(f"{where}: {rule} {spelled(self.choices)}, got {value!r}")
        return None


@dataclass(frozen=True)
class Pattern(Kind):
    """Text matching ``regex`` entirely; ``rule`` says the rule in words."""

    regex: str
    rule: str
    label = "name"

    def parse(self, value: Any, where: str, problems: list[str]) -> str | None:
        if not isinstance(value, str) or not re.fullmatch(self.regex, value):
            problems.append(f"{where}: {self.rule}")
            return None
        return value


@dataclass(frozen=True)
class Url(Kind):
    schemes: tuple[str, ...]
    masks_url = True

    @property
    def label(self) -> str:
        return "URL (" + ", ".join(f"{s}://" for s in self.schemes) + ")"

    def show(self, value: Any) -> str:
        return "-" if value is None else masked_url(str(value))

    def parse(self, value: Any, where: str, problems: list[str]) -> str | None:
        if urlparse(str(value)).scheme not in self.schemes:
            names = [f"{s}://" for s in self.schemes]
            spelled = ", ".join(names[:-1]) + " or " + names[-1] if len(names) > 1 else names[0]
            problems.append(f"{where}: expected a {spelled} URL")
            return None
        return str(value)


@dataclass(frozen=True)
class Names(Kind):
    """A list: a TOML array of strings, or one comma-separated string; each
    name checked by ``check`` (which adds its own problem and says False)."""

    check: Callable[[str, str, list[str]], bool] | None = None
    label = "list (TOML array, or comma-separated)"

    def parse(self, value: Any, where: str, problems: list[str]) -> tuple[str, ...] | None:
        if isinstance(value, str):
            items = [n.strip() for n in value.split(",")]
        elif isinstance(value, list) and all(isinstance(n, str) for n in value):
            items = [n.strip() for n in value]
        else:
            problems.append(f"{where}: expected a list of names (or one comma-separated string)")
            return None
        check = self.check
        return tuple(n for n in items if n and (check is None or check(n, where, problems)))

    def env_text(self, value: Any) -> str:
        return ",".join(value)


@dataclass(frozen=True)
class Networks(Kind):
    """IP addresses or networks (CIDR), each normalised (``10.1.2.3/8`` ->
    ``10.0.0.0/8``)."""

    label = "IP networks (TOML array, or comma-separated)"

    def parse(self, value: Any, where: str, problems: list[str]) -> tuple[str, ...] | None:
        items = value.split(",") if isinstance(value, str) else value
        if not isinstance(items, list | tuple):
            problems.append(f"{where}: expected IP addresses or networks, e.g. '10.0.0.0/8, ::1'")
            return None
        out = []
        for item in items:
            try:
                out.append(str(ipaddress.ip_network(str(item).strip(), strict=False)))
            except ValueError:
                problems.append(
                    f"{where}: {str(item).strip()!r} is not an IP address or network "
                    "(e.g. 10.0.0.0/8, 192.168.1.7, fd00::/8)"
                )
        return tuple(out)

    def env_text(self, value: Any) -> str:
        return ",".join(value)


@dataclass(frozen=True)
class File(Kind):
    """The path of a file that must exist (``~`` expanded when it is opened)."""

    label = "path of an existing file"

    def parse(self, value: Any, where: str, problems: list[str]) -> str | None:
        if not Path(str(value)).expanduser().is_file():
            problems.append(f"{where}: no such file: {value}")
            return None
        return str(value)


def spelled(choices: Sequence[str]) -> str:
    """``'a', 'b' or 'c'``."""
    quoted = [repr(c) for c in choices]
    return ", ".join(quoted[:-1]) + " or " + quoted[-1] if len(quoted) > 1 else quoted[0]
