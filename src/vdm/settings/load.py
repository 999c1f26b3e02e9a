"""Reading declared settings: TOML layers, then the environment, one rule for all.

The rule (:func:`pick`): a setting's environment variable, when set and not
empty, wins over the TOML layers; the source of the value is recorded in
``sources`` (``env VAR``, or the TOML file that set the key) for ``vdm config
show``; a bad value is one problem naming the variable, or the file and key.
"""

from __future__ import annotations

import tomllib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vdm.settings.spec import Setting


@dataclass
class Read:
    """One section as read: every field's value (the default when unset) and,
    for each setting that was given, where it came from."""

    values: dict[str, Any] = field(default_factory=dict)
    where: dict[str, str] = field(default_factory=dict)  # field -> "environment variable X"

    def given(self, name: str) -> bool:
        return name in self.where

    def from_env(self, name: str) -> bool:
        return self.where.get(name, "").startswith("environment variable ")


def pick(
    row: Setting, table: Mapping[str, Any], env: Mapping[str, str], sources: dict[str, str]
) -> tuple[Any, str]:
    """(raw value or None, where it came from) for one setting."""
    if row.env and env.get(row.env):
        sources[row.path] = f"env {row.env}"
        return row.kind.from_env(env[row.env]), f"environment variable {row.env}"
    if row.key is None:
        return None, f"environment variable {row.env}"
    return table.get(row.key), f"{sources.get(row.path, 'config')}: {row.path}"


def read_section(
    settings: Iterable[Setting],
    table: Mapping[str, Any],
    env: Mapping[str, str],
    sources: dict[str, str],
    problems: list[str],
    context: Mapping[str, Any] | None = None,
) -> Read:
    """Every setting of one section: its value (parsed), else its default
    (derived from the others and ``context`` where it says so)."""
    read = Read()
    derived = []
    for row in settings:
        assert row.field is not None
        raw, where = pick(row, table, env, sources)
        value = None
        if raw is not None and raw != "":
            read.where[row.field] = where
            value = row.kind.parse(raw, where, problems)
        if value is None:
            value = row.default
            if row.derive is not None:
                derived.append(row)
        read.values[row.field] = value
    for row in derived:
        assert row.field is not None
        read.values[row.field] = row.derive(read.values, context or {})  # type: ignore[misc]
    return read


# ---------------------------------------------------------------- TOML layers


def read_toml(path: Path, source: str, problems: list[str]) -> dict[str, Any] | None:
    """One TOML file (None when there is none); a file that cannot be read
    or parsed is a problem naming it."""
    try:
        with path.open("rb") as f:
            return tomllib.load(f)
    except FileNotFoundError:
        return None
    except (OSError, tomllib.TOMLDecodeError) as exc:
        problems.append(f"{source}: cannot read: {exc}")
        return None


def merge(base: dict[str, Any], top: dict[str, Any]) -> dict[str, Any]:
    """``top`` over ``base``, table by table."""
    out = dict(base)
    for key, value in top.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge(out[key], value)
        else:
            out[key] = value
    return out


# Tables whose keys are data (header names, model names), not settings.
_DATA_TABLES = ("headers", "deployments", "models")


def record_sources(layer: dict[str, Any], source: str, sources: dict[str, str]) -> None:
    """Note ``source`` as where each key of ``layer`` (``server.port``,
    ``providers.foo.aliases.fast``) was last set."""

    def walk(prefix: str, table: dict[str, Any]) -> None:
        for key, value in table.items():
            path = f"{prefix}{key}"
            if isinstance(value, dict) and key not in _DATA_TABLES:
                walk(path + ".", value)
            else:
                sources[path] = source

    walk("", layer)
