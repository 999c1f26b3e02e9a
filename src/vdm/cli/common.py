"""What every ``vdm`` command group shares: consoles, settings, one-line errors.

Every CLI failure is one clear line on stderr and a non-zero exit
(:func:`fail`), never a traceback.
"""

from __future__ import annotations

import os
import sys
import traceback
from typing import Annotated, NoReturn
from urllib.parse import urlparse

import typer
from rich.console import Console
from rich.markup import escape

from vdm.config import ConfigError, Settings, model_typos
from vdm.validate import load_settings

console = Console(stderr=False, highlight=False, soft_wrap=True)
errors = Console(stderr=True, highlight=False, soft_wrap=True)


TokenOpt = Annotated[
    str | None,
    typer.Option(
        "--token",
        envvar="VDM_API_KEY",
        show_envvar=False,
        help="Credential to present to the gateway (default: VDM_API_KEY, else "
        "PROXY_API_KEY, else MANAGEMENT_TOKEN).",
    ),
]
NEEDS_TOKEN = (
    "the gateway requires a token: pass --token (an sk-vdm-… token, PROXY_API_KEY or "
    "MANAGEMENT_TOKEN), or set VDM_API_KEY, PROXY_API_KEY or MANAGEMENT_TOKEN"
)


def operator_token(token: str | None, settings: Settings | None = None) -> str | None:
    """What the operator's own CLI presents to the gateway: ``--token`` (or
    ``VDM_API_KEY``), else the operator's credential (:attr:`Settings.operator_key`:
    ``MANAGEMENT_TOKEN``, which the gateway admits on its doors too, else
    ``PROXY_API_KEY``), from the settings when they load, else from the environment."""
    if token:
        return token
    if settings is not None:
        return settings.operator_key
    return os.environ.get("MANAGEMENT_TOKEN") or os.environ.get("PROXY_API_KEY") or None


def debugging() -> bool:
    """``--debug`` or ``VDM_DEBUG``: tracebacks with errors."""
    return os.environ.get("VDM_DEBUG", "").lower() in ("1", "true", "yes", "on")


def fail(message: str, code: int = 1) -> NoReturn:
    """``error: message`` on one line and exit ``code``; with ``--debug``, the
    traceback of the exception being handled (if any) first."""
    if debugging() and sys.exc_info()[1] is not None:
        traceback.print_exc()
    errors.print(f"[bold red]error:[/] {escape(message)}", markup=True, highlight=False)
    raise typer.Exit(code)


def settings_or_exit() -> Settings:
    """The settings, or each configuration problem on a line of its own
    (``error: configuration: …``) and exit 2."""
    try:
        return load_settings()
    except ConfigError as exc:
        for problem in exc.problems:
            errors.print(f"[bold red]error:[/] configuration: {escape(problem)}")
        raise typer.Exit(2) from None


def mask_url(url: str) -> str:
    """``url`` with its password (if any) as ``***``: safe to print."""
    password = urlparse(url).password
    return url.replace(f":{password}@", ":***@", 1) if password else url


def loops(settings: Settings) -> list[str]:
    """Providers whose base URL is the gateway's own address (vdm.loops)."""
    return [p.loops_back for p in settings.providers.values() if p.loops_back]


CLAUDE_NAMES = ("haiku", "sonnet", "opus")


def missing_claude_aliases(settings: Settings) -> list[str]:
    """The Claude model families (haiku, sonnet, opus) a bare Claude name
    would reach the default provider unmapped with: empty when the default
    provider speaks Anthropic's format (or is echo) or has an alias for each."""
    from vdm.routing import Router

    default = settings.providers[settings.default_provider]
    if default.api_format in ("anthropic", "echo"):
        return []
    router = Router(
        list(settings.providers),
        settings.default_provider,
        settings.aliases,
        settings.fallback_aliases,
    )
    return [name for name in CLAUDE_NAMES if router.resolve(name).alias is None]


def warnings(settings: Settings) -> list[str]:
    """What the start-up summary and ``config validate`` warn of."""
    found = loops(settings) + model_typos(settings)
    missing = missing_claude_aliases(settings)
    if missing:
        name = settings.default_provider
        found.append(
            f"default provider '{name}' is not Anthropic-native and has no "
            f"{'/'.join(missing)} alias: Claude Code's model names (claude-sonnet-4-5, "
            f"haiku, …) reach it unmapped; map them, e.g. "
            f"{name.upper()}_ALIAS_{missing[0].upper()}=<one of its models>"
        )
    return found


def settings_or_none() -> Settings | None:
    """The settings when they load (commands that work without them)."""
    try:
        return load_settings()
    except ConfigError:
        return None
