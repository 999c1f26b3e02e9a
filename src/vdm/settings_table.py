"""The table of every setting, read from the declarations.

``SETTINGS`` lists each setting once: the top-level keys, each section's
(:data:`SECTIONS`, in the order ``vdm config show`` and the docs print them),
then a provider's (``providers.NAME``).  The TOML key check
(:func:`unknown_keys`), ``vdm config show`` and ``docs/configuration.md``
read it; nothing else lists setting names.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable
from typing import Any, Final

from vdm.cache.settings import CacheSettings
from vdm.settings.kinds import Kind, Text
from vdm.settings.provider import PROVIDER_SETTINGS
from vdm.settings.sections import GrpcSettings, MiddlewareSettings, ServerSettings
from vdm.settings.spec import Setting, rows
from vdm.tenants.settings import TenantSettings

SECTIONS: Final[tuple[type[Any], ...]] = (
    ServerSettings,
    GrpcSettings,
    MiddlewareSettings,
    TenantSettings,
    CacheSettings,
)


class Fallbacks(Kind):
    label = "table of model = [alternatives] (env: model=alt1,alt2; other=alt3)"


TOP: Final = (
    Setting(
        "",
        "default-provider",
        "VDM_DEFAULT_PROVIDER",
        Text(),
        "openai",
        "Provider of a model named without 'provider:'; when it has no key, the first "
        "configured provider, then echo.",
        example="echo",
    ),
    Setting(
        "",
        "fallbacks",
        "VDM_FALLBACKS",
        Fallbacks(),
        {},
        "Models tried in order when a model (or alias) fails before its first byte.",
        example={"echo:a": ["echo:b"]},
    ),
)

SETTINGS: Final[tuple[Setting, ...]] = (
    *TOP,
    *(row for section in SECTIONS for row in rows(section)),
    *PROVIDER_SETTINGS.values(),
)

SECTION_KEYS: Final[dict[str, frozenset[str]]] = {
    section.SECTION: frozenset(row.key for row in rows(section) if row.key) for section in SECTIONS
}
PROVIDER_KEYS: Final = frozenset(str(key) for key in PROVIDER_SETTINGS)
TOP_KEYS: Final = frozenset({*(row.key for row in TOP if row.key), *SECTION_KEYS, "providers"})


def _unknown(source: str, section: str, keys: Iterable[Any], allowed: Iterable[str]) -> list[str]:
    """``unknown key 'server.prot'; did you mean 'server.port'?`` for each key
    of ``keys`` not in ``allowed``."""
    known = sorted(allowed)
    out = []
    for key in keys:
        if key in known:
            continue
        close = difflib.get_close_matches(str(key), known, n=1, cutoff=0.6)
        hint = f"; did you mean '{section}{close[0]}'?" if close else ""
        out.append(f"{source}: unknown key '{section}{key}'{hint}")
    return out


def unknown_keys(data: dict[str, Any], source: str, provider_name: Any) -> list[str]:
    """Problems of one TOML file's shape: unknown keys and sections that are
    not tables, each naming the file and the key.  ``provider_name`` is the
    pattern a ``[providers.NAME]`` table's name must match."""
    problems = _unknown(source, "", data, TOP_KEYS)
    for section, known in SECTION_KEYS.items():
        table = data.get(section, {})
        if not isinstance(table, dict):
            problems.append(f"{source}: '{section}' must be a table")
            continue
        problems += _unknown(source, f"{section}.", table, known)
    providers = data.get("providers", {})
    if not isinstance(providers, dict):
        problems.append(f"{source}: 'providers' must be a table")
        return problems
    for name, table in providers.items():
        if not isinstance(table, dict):
            problems.append(f"{source}: 'providers.{name}' must be a table")
            continue
        if not provider_name.match(name):
            problems.append(f"{source}: provider name '{name}' must be lowercase [a-z0-9_]")
        problems += _unknown(source, f"providers.{name}.", table, PROVIDER_KEYS)
    return problems
