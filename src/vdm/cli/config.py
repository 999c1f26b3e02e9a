"""``vdm config``: show the effective settings, validate them, set them up.

``show`` prints every setting with the layer it came from (``default``,
``defaults.toml``, a TOML file, ``env VAR``, ``.env``); keys and other
secrets only as SHA-256 prefixes.  ``validate`` reports every problem with
its file and key (or variable) and exits 1.  ``setup`` is a wizard whose
every prompt is also a flag, so it can be scripted (``--yes`` never asks).
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import json
import os
import sys
import tempfile
import tomllib
from collections.abc import Mapping
from importlib import resources
from pathlib import Path
from typing import Annotated, Any

import typer
from dotenv import dotenv_values

from vdm.allowlist import Rule
from vdm.cli import output
from vdm.cli.common import console, errors, fail, loops, mask_url, warnings
from vdm.config import (
    API_FORMATS,
    ConfigError,
    Settings,
    fingerprint,
    lint,
    model_typos,
    user_config_path,
)
from vdm.settings.spec import rows as setting_rows
from vdm.settings_table import SECTIONS, SETTINGS
from vdm.validate import load_settings

app = typer.Typer(help="Show, check and write the configuration.", no_args_is_help=True)

# Settings shown as a SHA-256 prefix (secrets), or as a URL whose password is masked.
_SECRETS = {row.path for row in SETTINGS if row.secret}
_URLS = {row.path for row in SETTINGS if row.kind.masks_url}
# Derived or internal, not settings a user sets.
_HIDDEN = {"providers.name", "providers.loops-back", "providers.api-keys", "providers.headers"}


def _typed(key: str, value: Any) -> Any:
    """A setting's value as JSON would carry it (numbers, booleans, lists,
    tables), secrets masked."""
    if value is None:
        return None
    if key in _SECRETS:
        return fingerprint(str(value))
    if key in _URLS:
        return mask_url(str(value))
    if isinstance(value, Rule):
        methods = ",".join(sorted(value.methods)) + " " if value.methods else ""
        return methods + value.prefix
    if isinstance(value, tuple | list | frozenset):
        return [_typed(key, v) for v in value]
    if isinstance(value, Mapping):
        return {str(k): _typed(key, v) for k, v in value.items()}
    return value


def _shown(value: Any) -> str:
    """A typed value in one table cell."""
    if value is None:
        return "-"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, list):
        return ", ".join(_shown(v) for v in value) or "-"
    if isinstance(value, dict):
        return ", ".join(f"{k}={_shown(v)}" for k, v in value.items()) or "-"
    return str(value)


def _declared(settings: Settings) -> list[tuple[str, Any, str]]:
    """Every setting of every section of the table, in its order."""
    out = []
    for section in SECTIONS:
        values = getattr(settings, section.SECTION)
        for row in setting_rows(section):
            assert row.field is not None  # every row of a section has its field
            value = _typed(row.path, getattr(values, row.field))
            out.append((row.path, value, settings.sources.get(row.path, "default")))
    return out


def _section(name: str, values: Any, sources: Mapping[str, str]) -> list[tuple[str, Any, str]]:
    """One row per field of a provider's settings: ``[name]`` in TOML."""
    out = []
    for field in dataclasses.fields(values):
        key = f"{name}.{field.name.replace('_', '-')}"
        if f"{name.split('.')[0]}.{field.name.replace('_', '-')}" in _HIDDEN:
            continue
        out.append((key, _typed(key, getattr(values, field.name)), sources.get(key, "default")))
    return out


def _effective_connections(row: tuple[str, Any, str], settings: Settings) -> tuple[str, Any, str]:
    """A provider's ``max-connections`` row: unset, the server's value and name."""
    key, value, _ = row
    if key.endswith(".max-connections") and value is None:
        return key, settings.server.upstream_max_connections, "server.upstream-max-connections"
    return row


def rows(settings: Settings) -> list[tuple[str, Any, str]]:
    """(setting, typed value, source) for every effective setting, section by
    section as the TOML has them; secrets masked."""
    src = settings.sources
    out: list[tuple[str, Any, str]] = [
        ("default-provider", settings.default_provider, settings.default_provider_source)
    ]
    out += _declared(settings)
    for name, p in settings.providers.items():
        base = f"providers.{name}"
        if name == "echo":
            out.append((base, "built-in offline provider", "default"))
            continue
        out += [_effective_connections(row, settings) for row in _section(base, p, src)]
        out.append((f"{base}.api-key", p.key_fingerprints, src.get(f"{base}.api-key", "default")))
        if p.headers:
            hidden = {header: "(set; value hidden)" for header in p.headers}
            out.append((f"{base}.headers", hidden, src.get(f"{base}.headers", "config")))
        aliases = dict(settings.aliases.get(name, {}))
        if aliases:
            out.append((f"{base}.aliases", aliases, src.get(f"{base}.aliases", "config")))
    for model, alternatives in settings.fallbacks.items():
        out.append(
            (f"fallbacks.{model}", list(alternatives), src.get(f"fallbacks.{model}", "config"))
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
        bool,
        typer.Option("--json", help="One JSON object: setting -> {value, source}, values typed."),
    ] = False,
) -> None:
    """The effective settings, each with its source; secrets masked."""
    settings = _problems_or_exit()
    found = rows(settings)
    if as_json:
        output.emit_json({k: {"value": v, "source": s} for k, v, s in found})
        return
    output.table(
        ["setting", "value", "source"],
        [[k, _shown(v), s] for k, v, s in found],
        whole={"setting"},
    )


def check(
    env: Mapping[str, str] | None = None, cwd: Path | None = None
) -> tuple[Settings | None, list[str], list[str]]:
    """(settings if they load, problems, warnings) of the configuration that
    ``env`` and ``cwd`` make (default: this process's): what ``validate``
    reports and what ``setup`` requires of what it is about to write."""
    problems: list[str] = []
    settings: Settings | None = None
    try:
        settings = load_settings(env, cwd)
    except ConfigError as exc:
        problems += exc.problems
    problems += lint(env, cwd)
    if settings is None:
        return None, problems, []
    problems += loops(settings) + model_typos(settings)
    return settings, problems, [w for w in warnings(settings) if w not in problems]


@app.command("validate")
def validate() -> None:
    """Check every layer; list each problem with its file and key, exit 1 if any."""
    settings, problems, found = check()
    for warning in found:
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


@app.command("docs")
def docs(
    write: Annotated[
        Path | None, typer.Option("--write", help="Write it to this file instead of stdout.")
    ] = None,
) -> None:
    """Every setting (key, variable, type, default, help) as Markdown: docs/configuration.md."""
    from vdm.settings_docs import render

    text = render(write.read_text() if write and write.exists() else None)
    if write is None:
        sys.stdout.write(text)
        return
    write.write_text(text)
    console.print(f"wrote {write}", markup=False)


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


def _dotenv_text(path: Path, var: str, value: str) -> str:
    """The .env file at ``path`` with ``var`` set, its other lines kept."""
    lines = path.read_text().splitlines() if path.exists() else []
    lines = [line for line in lines if line.split("=", 1)[0].strip() not in (var, f"export {var}")]
    lines.append(f"{var}={_env_quote(value)}")
    return "\n".join(lines) + "\n"


def _write_atomic(path: Path, text: str, mode: int | None) -> None:
    """Replace ``path`` by ``text`` in one rename (a reader sees the old file or
    the new one, never half of one); ``mode`` None: the old file's, else as
    the umask makes a new one."""
    if mode is None:
        try:
            mode = path.stat().st_mode & 0o777
        except FileNotFoundError:
            umask = os.umask(0)
            os.umask(umask)
            mode = 0o666 & ~umask
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(temporary, mode)
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temporary)
        raise


def _check_before_writing(target: Path, toml: str, dotenv_text: str | None) -> Settings:
    """The configuration as it would be with ``toml`` written to ``target``
    (and ``dotenv_text`` to ./.env), checked as ``validate`` checks it, from a
    scratch directory: nothing is written unless it passes."""
    user = dotenv_text is None
    with tempfile.TemporaryDirectory(prefix="vdm-setup-") as scratch:
        if user:  # the candidate is the user's file; ./vdm.toml and ./.env as they are
            config_home = Path(scratch) / "config"
            candidate = user_config_path({"XDG_CONFIG_HOME": str(config_home)})
            dotenv = dotenv_values(Path.cwd() / ".env")
            overrides = {"XDG_CONFIG_HOME": str(config_home)}
            where = Path.cwd()
        else:  # the candidates are ./vdm.toml and ./.env; the user's file as it is
            candidate = Path(scratch) / "vdm.toml"
            dotenv = dotenv_values(stream=io.StringIO(dotenv_text))
            overrides = {}
            where = Path(scratch)
        candidate.parent.mkdir(parents=True, exist_ok=True)
        candidate.write_text(toml)
        env = {**{k: v for k, v in dotenv.items() if v is not None}, **os.environ, **overrides}
        settings, problems, _ = check(env, where)
    if problems or settings is None:
        for problem in problems:
            errors.print(f"  - {problem.replace(str(candidate), str(target))}", markup=False)
        fail(f"nothing written: {len(problems)} problem(s) in the new configuration", 1)
    return settings


@dataclasses.dataclass(frozen=True)
class _SetupAnswers:
    """What ``config setup`` asked for (flags, else answers, else defaults)."""

    provider: str
    builtin: dict[str, Any]  # the provider's built-in table ({} for another)
    api_format: str
    base_url: str
    api_key: str
    default: bool
    host: str
    port: int


def _setup_answers(
    provider: str | None,
    api_key: str | None,
    base_url: str | None,
    api_format: str | None,
    default: bool | None,
    host: str | None,
    port: int | None,
    interactive: bool,
) -> _SetupAnswers:
    """Each flag, else its prompt's answer, else its default; a format that is
    none of vdm's, or no base URL or key where one is needed, is an error."""
    name = str(_ask(provider, "Provider", "openai", interactive)).strip().lower()
    builtin = _known_providers().get(name, {})
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
    return _SetupAnswers(
        provider=name,
        builtin=builtin,
        api_format=fmt,
        base_url=url,
        api_key=key,
        default=_ask(default, f"Make {name} the default provider?", True, interactive),
        host=_ask(host, "Host", "127.0.0.1", interactive),
        port=int(_ask(port, "Port", 8082, interactive, type=int)),
    )


def _setup_toml(answers: _SetupAnswers, user: bool) -> str:
    """The vdm.toml of ``answers``: only what differs from the built-in
    provider's table; the key in it only for the user's file (--user)."""
    name, builtin = answers.provider, answers.builtin
    lines = ["# written by vdm config setup"]
    if answers.default:
        lines.append(f"default-provider = {_toml_string(name)}")
    lines += [
        "",
        "[server]",
        f"host = {_toml_string(answers.host)}",
        f"port = {answers.port}",
        "",
        f"[providers.{name}]",
    ]
    if answers.base_url and answers.base_url != builtin.get("base-url"):
        lines.append(f"base-url = {_toml_string(answers.base_url)}")
    if answers.api_format != builtin.get("api-format", "openai"):
        lines.append(f"api-format = {_toml_string(answers.api_format)}")
    if user:
        lines.append(f"api-key = {_toml_string(answers.api_key)}")
    return "\n".join(lines) + "\n"


def _write_setup(target: Path, answers: _SetupAnswers, user: bool) -> Settings:
    """Write ``target`` (and ./.env with the key, without --user) once the
    configuration they make is checked valid; the files holding the key 0600."""
    key = answers.api_key
    files = {target: _setup_toml(answers, user)}
    var = f"{answers.provider.upper()}_API_KEY"
    dotenv = Path.cwd() / ".env"
    if not user:
        files[dotenv] = _dotenv_text(dotenv, var, key)
    settings = _check_before_writing(target, files[target], files.get(dotenv))
    written = []
    for path, text in files.items():
        secret = user or path == dotenv
        _write_atomic(path, text, 0o600 if secret else None)
        written.append(f"{path} ({var}, key {fingerprint(key)})" if path == dotenv else str(path))
    console.print("wrote " + " and ".join(written), markup=False)
    return settings


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
    target = user_config_path(os.environ) if user else Path.cwd() / "vdm.toml"
    if target.exists() and not force:
        fail(f"{target} exists; use --force to overwrite it")
    answers = _setup_answers(
        provider, api_key, base_url, api_format, default, host, port, interactive
    )
    settings = _write_setup(target, answers, user)
    console.print(
        f"configuration is valid: default provider {settings.default_provider}, "
        f"listening on http://{answers.host}:{answers.port}",
        markup=False,
    )
