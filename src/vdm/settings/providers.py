"""Providers from the environment and the ``[providers.NAME]`` tables.

Providers are discovered from ``{NAME}_API_KEY`` (and ``api-key`` in TOML),
but a key in the environment makes a provider only when ``NAME`` is a known
one (a ``[providers.NAME]`` table: the package catalogue in ``defaults.toml``
or the user's own TOML) or when ``{NAME}_BASE_URL`` (or ``{NAME}_API_FORMAT``)
says where it is: other tools' keys (``PINECONE_API_KEY``, ``HF_API_KEY``)
are ignored (:func:`env_providers`), never a reason to refuse to start.
Their other settings are :data:`vdm.settings.provider.PROVIDER_SETTINGS`.

Azure OpenAI providers (``api-format = "azure"``, or an OpenAI-format base URL
on an Azure host) also take ``{NAME}_DEPLOYMENTS="model=deployment,..."`` (TOML
``[providers.NAME.deployments]``); ``api-version`` is then Azure's
``api-version`` query parameter.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any, Literal
from urllib.parse import urlparse

from vdm.settings.load import pick
from vdm.settings.provider import (
    AZURE,
    AZURE_DEFAULT_API_VERSION,
    ECHO,
    PROVIDER_SETTINGS,
    ProviderSettings,
    for_provider,
)
from vdm.settings.sections import model_name_ok

# Hosts that make an OpenAI-format provider (no explicit api-format) an Azure one.
AZURE_HOST_SUFFIXES = (
    ".openai.azure.com",
    ".cognitiveservices.azure.com",
    ".services.ai.azure.com",
)
# Azure deployment names: letters, digits, '-', '_', '.'; they go into a URL path.
AZURE_DEPLOYMENT_NAME = re.compile(r"^(?!\.+$)[A-Za-z0-9._-]{1,64}$")
# Environment names that end in _API_KEY but are not providers.
_NOT_PROVIDERS = frozenset({"PROXY", "VDM"})
PROVIDER_NAME = re.compile(r"^[a-z][a-z0-9_]*$")


def env_providers(
    env: Mapping[str, str], tables: Mapping[str, Any]
) -> tuple[list[str], tuple[str, ...]]:
    """(provider names the environment's ``{NAME}_API_KEY`` variables make, in
    the environment's order; the ``*_API_KEY`` variables it ignores).

    A key makes a provider when its name is known (``tables``: the catalogue
    and the user's ``[providers.NAME]`` tables) or when ``{NAME}_BASE_URL`` or
    ``{NAME}_API_FORMAT`` is set too (a provider the user describes here).
    Anything else is some other tool's key."""
    names: list[str] = []
    ignored: list[str] = []
    for var, value in env.items():
        if not var.endswith("_API_KEY") or not value.strip():
            continue
        prefix = var[: -len("_API_KEY")]
        if not prefix or prefix in _NOT_PROVIDERS or "__" in prefix:
            continue
        name = prefix.lower()
        if not PROVIDER_NAME.match(name):
            ignored.append(var)
        elif name in tables or env.get(f"{prefix}_BASE_URL") or env.get(f"{prefix}_API_FORMAT"):
            if name not in names:
                names.append(name)
        else:
            ignored.append(var)
    return names, tuple(ignored)


def providers_of(
    tables: dict[str, Any],
    env_names: list[str],
    env: Mapping[str, str],
    sources: dict[str, str],
    problems: list[str],
) -> tuple[dict[str, ProviderSettings], dict[str, dict[str, str]], dict[str, dict[str, str]]]:
    # Discovery order: environment keys (as the environment lists them), then
    # TOML tables with an api-key.  echo is always there, last.
    names = list(env_names)
    for name, table in tables.items():
        if isinstance(table, dict) and table.get("api-key") and name not in names:
            names.append(name)

    providers: dict[str, ProviderSettings] = {}
    aliases: dict[str, dict[str, str]] = {}
    fallbacks: dict[str, dict[str, str]] = {}
    for name in names:
        if name == ECHO:
            problems.append("provider name 'echo' is reserved for the built-in offline provider")
            continue
        table = tables.get(name, {})
        provider = _provider(name, table, env, sources, problems)
        if provider is None:
            continue
        providers[name] = provider
        aliases[name] = _aliases(name, table, env, sources, problems)
        fallbacks[name] = _alias_table(table.get("fallback-aliases", {}), name, problems)
    providers[ECHO] = ProviderSettings(name=ECHO, api_format=ECHO, base_url="builtin:echo")
    aliases[ECHO] = _aliases(ECHO, tables.get(ECHO, {}), env, sources, problems)
    fallbacks[ECHO] = {}
    return providers, aliases, fallbacks


def _provider(
    name: str,
    table: dict[str, Any],
    env: Mapping[str, str],
    sources: dict[str, str],
    problems: list[str],
) -> ProviderSettings | None:
    upper = name.upper()

    def raw(key: str) -> tuple[Any, str]:
        return pick(for_provider(PROVIDER_SETTINGS[key], name), table, env, sources)

    def read(key: str) -> tuple[Any, str, bool]:
        """(value, where it came from, given): the value read, else the default."""
        value, where = raw(key)
        default = PROVIDER_SETTINGS[key].default
        if value is None or value == "":
            return default, where, False
        value = PROVIDER_SETTINGS[key].kind.parse(value, where, problems)
        return (default if value is None else value), where, True

    before = len(problems)
    fmt, _, fmt_given = read("api-format")
    if len(problems) > before:
        return None
    base_url = _base_url(name, fmt, *raw("base-url"), problems)
    if base_url is not None and not fmt_given and is_azure_host(urlparse(base_url).hostname or ""):
        fmt = AZURE
    keys, _, _ = read("api-key")
    version, _, _ = read("api-version")
    headers = {str(k): str(v) for k, v in (table.get("headers") or {}).items()}
    header_prefix = f"{upper}_CUSTOM_HEADER_"
    for var, value in env.items():
        if var.startswith(header_prefix) and len(var) > len(header_prefix):
            headers[var[len(header_prefix) :].replace("_", "-").lower()] = value
    reasoning, _, _ = read("supports-reasoning")
    field_name, _, _ = read("max-tokens-field")
    responses_api = _responses_api(name, fmt, *read("responses-api"), sources, problems)
    organization = _forward_organization(name, fmt, *read("forward-organization"), problems)
    structured, _, _ = read("structured-output")
    connections, _, _ = read("max-connections")
    deployments: dict[str, str] = {}
    if fmt == AZURE:
        version = version or AZURE_DEFAULT_API_VERSION
        deployments = _deployments(name, table, env, sources, problems)
    elif table.get("deployments") or env.get(f"{upper}_DEPLOYMENTS"):
        problems.append(
            f"provider '{name}': deployments apply only to Azure providers "
            f"(set {upper}_API_FORMAT=azure)"
        )
    if base_url is None:
        return None  # (its other problems are reported all the same)
    return ProviderSettings(
        name=name,
        api_format=fmt,
        base_url=base_url,
        api_keys=keys,
        api_version=str(version) if version else None,
        headers=headers,
        max_tokens_field=field_name,
        supports_reasoning=reasoning,
        deployments=deployments,
        responses_api=responses_api,
        forward_organization=organization,
        structured_output=structured,
        max_connections=connections,
        prices=_prices(name, table.get("prices", {}), problems),
    )


def _forward_organization(
    name: str, fmt: str, forward: bool, where: str, given: bool, problems: list[str]
) -> bool:
    """``{NAME}_FORWARD_ORGANIZATION``: may the client's ``OpenAI-Organization``
    and ``OpenAI-Project`` headers go upstream (they choose which organization
    and project a key bills)?  Off by default; only OpenAI-format providers."""
    if forward and fmt not in ("openai", AZURE):
        problems.append(
            f"{where}: organization headers are OpenAI's; provider '{name}' speaks {fmt!r}"
        )
        return False
    return forward


def _responses_api(
    name: str,
    fmt: str,
    choice: Literal["native", "convert"],
    where: str,
    given: bool,
    sources: Mapping[str, str],
    problems: list[str],
) -> Literal["native", "convert"]:
    """``{NAME}_RESPONSES_API``: whether the provider speaks the Responses API
    itself.  Only OpenAI-format providers can; the package default (``native``
    for ``openai``) quietly does not apply when that provider is pointed at
    another format, an explicit setting is an error then."""
    if choice == "native" and fmt != "openai":
        if sources.get(f"providers.{name}.responses-api") != "defaults.toml":
            problems.append(
                f"{where}: 'native' needs an OpenAI-format provider "
                f"(api format is {fmt!r}); use 'convert'"
            )
        return "convert"
    return choice


def _base_url(name: str, fmt: str, value: Any, source: str, problems: list[str]) -> str | None:
    if not value:
        example = " (https://RESOURCE.openai.azure.com)" if fmt == AZURE else ""
        problems.append(
            f"provider '{name}': no base URL; set {name.upper()}_BASE_URL{example} "
            f"(or base-url under [providers.{name}])"
        )
        return None
    base_url = str(value).rstrip("/")
    parsed = urlparse(base_url)
    if parsed.scheme not in ("http", "https") or not parsed.netloc:
        problems.append(f"{source}: not an http(s) URL: {base_url!r}")
        return None
    return base_url


def is_azure_host(host: str) -> bool:
    return host.lower().endswith(AZURE_HOST_SUFFIXES)


def _deployments(
    name: str,
    table: dict[str, Any],
    env: Mapping[str, str],
    sources: dict[str, str],
    problems: list[str],
) -> dict[str, str]:
    """model -> Azure deployment: TOML ``[providers.NAME.deployments]``, then
    ``{NAME}_DEPLOYMENTS="model=deployment,..."`` (env entries win per model).

    One env variable rather than one per model: model names carry '.' and '-'
    (``gpt-4.1-mini``), which no environment variable name can spell.
    """
    out: dict[str, str] = {}
    src = f"{sources.get(f'providers.{name}.deployments', 'config')}: providers.{name}.deployments"
    raw = table.get("deployments", {})
    if not isinstance(raw, dict):
        problems.append(f"{src}: must be a table of model = deployment")
        raw = {}
    for model, deployment in raw.items():
        _add_deployment(out, str(model), deployment, f"{src}.{model}", problems)
    var = f"{name.upper()}_DEPLOYMENTS"
    if env.get(var, "").strip():
        sources[f"providers.{name}.deployments"] = f"env {var}"
        seen: set[str] = set()
        for item in env[var].split(","):
            model, sep, deployment = (part.strip() for part in item.partition("="))
            where = f"environment variable {var}"
            if not item.strip():
                continue
            if not sep or not model:
                problems.append(f"{where}: expected model=deployment, got {item.strip()!r}")
                continue
            if model in seen:
                problems.append(f"{where}: model {model!r} is mapped twice")
                continue
            seen.add(model)
            _add_deployment(out, model, deployment, where, problems)
    return out


def _add_deployment(
    out: dict[str, str], model: str, deployment: Any, where: str, problems: list[str]
) -> None:
    if not isinstance(deployment, str) or not AZURE_DEPLOYMENT_NAME.match(deployment):
        problems.append(
            f"{where}: deployment for {model!r} must be 1-64 letters, digits, '-', '_' "
            f"or '.', got {deployment!r}"
        )
        return
    out[model] = deployment


PRICE_KEYS = ("input", "output", "cache-read", "cache-write")


def _prices(provider: str, table: Any, problems: list[str]) -> dict[str, dict[str, float]]:
    """``[providers.NAME.prices]``: model -> {input, output, cache-read,
    cache-write}, USD per million tokens, each a number >= 0."""
    where = f"providers.{provider}.prices"
    if not isinstance(table, dict):
        problems.append(f"{where}: must be a table of model = {{input = ..., output = ...}}")
        return {}
    out: dict[str, dict[str, float]] = {}
    for model, prices in table.items():
        if not isinstance(prices, dict) or not prices:
            problems.append(
                f"{where}.{model}: expected a table such as {{input = 1.0, output = 2.0}}"
            )
            continue
        row: dict[str, float] = {}
        for key, value in prices.items():
            if key not in PRICE_KEYS:
                problems.append(
                    f"{where}.{model}: unknown key {key!r} (one of {', '.join(PRICE_KEYS)})"
                )
            elif isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
                problems.append(f"{where}.{model}.{key}: expected a number >= 0, got {value!r}")
            else:
                row[key] = float(value)
        out[str(model)] = row
    return out


def _alias_table(table: Any, provider: str, problems: list[str]) -> dict[str, str]:
    if not isinstance(table, dict):
        problems.append(f"providers.{provider}: aliases must be a table of name = model")
        return {}
    out = {}
    for alias, model in table.items():
        if not isinstance(model, str) or not model:
            problems.append(f"providers.{provider}.aliases.{alias}: expected a model name")
            continue
        if model_name_ok(model, f"providers.{provider}.aliases.{alias}", problems):
            out[str(alias)] = model
    return out


def _aliases(
    name: str,
    table: dict[str, Any],
    env: Mapping[str, str],
    sources: dict[str, str],
    problems: list[str],
) -> dict[str, str]:
    out = _alias_table(table.get("aliases", {}), name, problems)
    prefix = f"{name.upper()}_ALIAS_"
    for var, model in env.items():
        if var.startswith(prefix) and len(var) > len(prefix) and model:
            alias = var[len(prefix) :].lower()  # env names are upper-case by habit
            if not model_name_ok(model, f"environment variable {var}", problems):
                continue
            out[alias] = model
            sources[f"providers.{name}.aliases.{alias}"] = f"env {var}"
    return out
