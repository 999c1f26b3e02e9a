"""``vdm config``: show the effective settings, validate them, set them up.

``show`` prints every setting with the layer it came from (``default``,
``defaults.toml``, a TOML file, ``env VAR``, ``.env``); keys and other
secrets only as SHA-256 prefixes.  ``validate`` reports every problem with
its file and key (or variable) and exits 1.  ``setup`` is a wizard whose
every prompt is also a flag, so it can be scripted (``--yes`` never asks).
"""

from __future__ import annotations

import dataclasses
import json
import os
import sys
import tomllib
from importlib import resources
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import urlparse

import typer
from rich.table import Table

from vdm.cli.common import console, errors, fail, loops, warnings
from vdm.config import (
    API_FORMATS,
    ConfigError,
    Settings,
    fingerprint,
    lint,
    load_settings,
    user_config_path,
)

app = typer.Typer(help="Show, check and write the configuration.", no_args_is_help=True)

_SECRET_SERVER_KEYS = {"proxy-api-key"}


def _mask_url(url: str) -> str:
    parsed = urlparse(url)
    if parsed.password:
        return url.replace(f":{parsed.password}@", ":***@", 1)
    return url


def rows(settings: Settings) -> list[tuple[str, str, str]]:
    """(setting, value, source) for every effective setting; secrets masked."""
    src = settings.sources
    out = [("default-provider", settings.default_provider, settings.default_provider_source)]
    for field in dataclasses.fields(settings.server):
        key = field.name.replace("_", "-")
        value = getattr(settings.server, field.name)
        if value is None:
            shown = "-"
        elif key in _SECRET_SERVER_KEYS:
            shown = fingerprint(str(value))
        elif key == "redis-url":
            shown = _mask_url(str(value))
        elif key == "passthrough-allow":
            shown = "; ".join(str(r) for r in value)
        elif key == "trusted-proxies":
            shown = ", ".join(value) or "-"
        else:
            shown = str(value)
        out.append((f"server.{key}", shown, src.get(f"server.{key}", "default")))
    cache = settings.cache
    for field in dataclasses.fields(cache):
        key = field.name.replace("_", "-")
        value = getattr(cache, field.name)
        if key == "models":
            shown = ", ".join(f"{m}={ttl}s" for m, ttl in value.items()) or "-"
        else:
            shown = str(value).lower() if isinstance(value, bool) else str(value)
        out.append((f"cache.{key}", shown, src.get(f"cache.{key}", "default")))
    mw = settings.middleware
    out.append(
        (
            "middleware.enabled",
            ", ".join(mw.enabled) or "-",
            src.get("middleware.enabled", "default"),
        )
    )
    for name, p in settings.providers.items():
        if name == "echo":
            out.append(("providers.echo", "built-in offline provider", "default"))
            continue
        base = f"providers.{name}"
        out.append((f"{base}.api-format", p.api_format, src.get(f"{base}.api-format", "default")))
        out.append((f"{base}.base-url", p.base_url, src.get(f"{base}.base-url", "default")))
        out.append(
            (
                f"{base}.api-key",
                ", ".join(p.key_fingerprints),
                src.get(f"{base}.api-key", "default"),
            )
        )
        if p.api_version:
            out.append(
                (f"{base}.api-version", p.api_version, src.get(f"{base}.api-version", "default"))
            )
        if p.api_format == "openai":
            out.append(
                (
                    f"{base}.responses-api",
                    p.responses_api,
                    src.get(f"{base}.responses-api", "default"),
                )
            )
        if p.forward_organization:
            out.append(
                (
                    f"{base}.forward-organization",
                    "true",
                    src.get(f"{base}.forward-organization", "config"),
                )
            )
        out.append(
            (
                f"{base}.structured-output",
                p.structured_output,
                src.get(f"{base}.structured-output", "default"),
            )
        )
        for header in p.headers:
            out.append(
                (
                    f"{base}.headers.{header}",
                    "(set; value hidden)",
                    src.get(f"{base}.headers", "config"),
                )
            )
        for model, deployment in p.deployments.items():
            out.append(
                (
                    f"{base}.deployments.{model}",
                    deployment,
                    src.get(f"{base}.deployments", "config"),
                )
            )
        for alias, model in settings.aliases.get(name, {}).items():
            out.append(
                (f"{base}.aliases.{alias}", model, src.get(f"{base}.aliases.{alias}", "config"))
            )
    for model, alternatives in settings.fallbacks.items():
        out.append(
            (f"fallbacks.{model}", ", ".join(alternatives), src.get(f"fallbacks.{model}", "config"))
        )
    return out


def _problems_or_exit() -> Settings:
    try:
        return load_settings()
    except ConfigError as exc:
        for problem in exc.problems:
            errors.print(f"  - {problem}", markup=False)
        fail(f"{len(exc.problems)} configuration problem(s)", 1)


@app.command("show")
def show(
    as_json: Annotated[
        bool, typer.Option("--json", help="One JSON object: setting -> {value, source}.")
    ] = False,
) -> None:
    """The effective settings, each with its source; secrets masked."""
    settings = _problems_or_exit()
    found = rows(settings)
    if as_json:
        console.print_json(json.dumps({k: {"value": v, "source": s} for k, v, s in found}))
        return
    table = Table(box=None, pad_edge=False)
    for column in ("setting", "value", "source"):
        table.add_column(column)
    for key, value, source in found:
        table.add_row(key, value, source)
    console.print(table)


@app.command("validate")
def validate() -> None:
    """Check every layer; list each problem with its file and key, exit 1 if any."""
    problems: list[str] = []
    settings: Settings | None = None
    try:
        settings = load_settings()
    except ConfigError as exc:
        problems += exc.problems
    problems += lint()
    if settings is not None:
        problems += loops(settings)
        for warning in warnings(settings):
            if warning not in problems:
                errors.print(f"warning: {warning}", markup=False)
    if problems:
        for problem in problems:
            errors.print(f"  - {problem}", markup=False)
        fail(f"{len(problems)} configuration problem(s)", 1)
    assert settings is not None
    names = ", ".join(settings.providers)
    console.print(
        f"configuration is valid: providers {names}; default provider {settings.default_provider}",
        markup=False,
    )


# ---------------------------------------------------------------- setup


def _known_providers() -> dict[str, dict[str, Any]]:
    text = resources.files("vdm").joinpath("defaults.toml").read_text()
    return tomllib.loads(text).get("providers", {})


def _ask(value: Any, prompt: str, default: Any, interactive: bool, **options: Any) -> Any:
    """The flag's value, else the answer to the prompt, else the default."""
    if value is not None:
        return value
    if not interactive:
        return default
    if isinstance(default, bool):
        return typer.confirm(prompt, default=default)
    return typer.prompt(prompt, default=default, **options)


def _toml_string(value: str) -> str:
    return json.dumps(value)  # a JSON string is a valid TOML basic string


def _env_quote(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _write_dotenv(path: Path, var: str, value: str) -> None:
    """Set ``var`` in a .env file, keeping its other lines."""
    lines = path.read_text().splitlines() if path.exists() else []
    lines = [line for line in lines if line.split("=", 1)[0].strip() not in (var, f"export {var}")]
    lines.append(f"{var}={_env_quote(value)}")
    path.write_text("\n".join(lines) + "\n")
    path.chmod(0o600)


@app.command("setup")
def setup(
    provider: Annotated[
        str | None, typer.Option(help="Provider name (e.g. openai, openrouter, or your own).")
    ] = None,
    api_key: Annotated[
        str | None,
        typer.Option(help="Its API key (several: space-separated; !PASSTHRU: the client's own)."),
    ] = None,
    base_url: Annotated[
        str | None, typer.Option(help="Its base URL (built in for known providers).")
    ] = None,
    api_format: Annotated[str | None, typer.Option(help="openai, anthropic or azure.")] = None,
    default: Annotated[
        bool | None, typer.Option("--default/--no-default", help="Make it the default provider.")
    ] = None,
    host: Annotated[str | None, typer.Option(help="Address the gateway binds.")] = None,
    port: Annotated[int | None, typer.Option(min=1, max=65535, help="Its port.")] = None,
    user: Annotated[
        bool,
        typer.Option(
            "--user",
            help="Write ~/.config/vdm/vdm.toml (the key in it) instead of ./vdm.toml and ./.env.",
        ),
    ] = False,
    yes: Annotated[
        bool, typer.Option("--yes", "-y", help="Ask nothing: flags or defaults.")
    ] = False,
    force: Annotated[bool, typer.Option(help="Overwrite an existing vdm.toml.")] = False,
) -> None:
    """Write vdm.toml (and .env with the key) from answers or flags."""
    interactive = not yes and sys.stdin.isatty()
    known = _known_providers()
    target = user_config_path(os.environ) if user else Path.cwd() / "vdm.toml"
    if target.exists() and not force:
        fail(f"{target} exists; use --force to overwrite it")
    name = str(_ask(provider, "Provider", "openai", interactive)).strip().lower()
    builtin = known.get(name, {})
    fmt = _ask(
        api_format,
        "API format (openai, anthropic, azure)",
        builtin.get("api-format", "openai"),
        interactive and not builtin,
    )
    if fmt not in API_FORMATS:
        fail(f"--api-format must be one of {', '.join(API_FORMATS)}, got {fmt!r}")
    url = _ask(base_url, "Base URL", builtin.get("base-url") or "", interactive)
    if not url and not builtin.get("base-url"):
        fail(f"provider '{name}' has no built-in base URL: pass --base-url")
    key = _ask(api_key, f"API key for {name}", "", interactive, hide_input=True, show_default=False)
    if not key:
        fail(f"no API key for '{name}': pass --api-key (or answer the prompt)")
    make_default = _ask(default, f"Make {name} the default provider?", True, interactive)
    bind = _ask(host, "Host", "127.0.0.1", interactive)
    listen = int(_ask(port, "Port", 8082, interactive, type=int))

    lines = ["# written by vdm config setup"]
    if make_default:
        lines.append(f"default-provider = {_toml_string(name)}")
    lines += [
        "",
        "[server]",
        f"host = {_toml_string(bind)}",
        f"port = {listen}",
        "",
        f"[providers.{name}]",
    ]
    if url and url != builtin.get("base-url"):
        lines.append(f"base-url = {_toml_string(url)}")
    if fmt != builtin.get("api-format", "openai"):
        lines.append(f"api-format = {_toml_string(fmt)}")
    if user:
        lines.append(f"api-key = {_toml_string(key)}")
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text("\n".join(lines) + "\n")
    written = [str(target)]
    if user:
        target.chmod(0o600)
    else:
        dotenv = Path.cwd() / ".env"
        _write_dotenv(dotenv, f"{name.upper()}_API_KEY", key)
        written.append(f"{dotenv} ({name.upper()}_API_KEY, key {fingerprint(key)})")
    console.print("wrote " + " and ".join(written), markup=False)
    try:
        settings = load_settings()
    except ConfigError as exc:
        for problem in exc.problems:
            errors.print(f"  - {problem}", markup=False)
        fail("the written configuration does not load; fix the problems above")
    console.print(
        f"configuration is valid: default provider {settings.default_provider}, "
        f"listening on http://{bind}:{listen}",
        markup=False,
    )
