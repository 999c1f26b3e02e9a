"""The README and the documentation site say what the code does: every command
and option of the CLI, every setting, the first steps, and the test command CI
runs.  (`mkdocs build --strict` in `make test` checks the site's links.)"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import typer

from vdm import config
from vdm.cli.main import app
from vdm.config import ServerSettings
from vdm.settings.spec import rows
from vdm.settings_table import PROVIDER_KEYS, SECTION_KEYS

ROOT = Path(__file__).resolve().parents[2]
README = (ROOT / "README.md").read_text(encoding="utf-8")
DOCS = ROOT / "docs"


def _section(text: str, heading: str) -> str:
    """The text under ``heading`` (a whole line) up to the next heading of its level."""
    level = heading.split(" ", 1)[0]
    lines = text.splitlines()
    start = lines.index(heading) + 1
    end = next(
        (i for i in range(start, len(lines)) if lines[i].startswith(level + " ")), len(lines)
    )
    return "\n".join(lines[start:end])


def _code_blocks(text: str) -> list[str]:
    return re.findall(r"^```[a-z]*\n(.*?)^```", text, flags=re.MULTILINE | re.DOTALL)


# ---------------------------------------------------------------- README


def test_readme_is_a_first_screen_for_users() -> None:
    assert len(README.splitlines()) <= 200
    headings = [line for line in README.splitlines() if line.startswith("## ")]
    for wanted in ("## Install", "## The first request", "## Claude Code", "## Contributing"):
        assert wanted in headings
    assert any(h.startswith("## A real provider") for h in headings)
    # The contributor set-up comes after everything a user needs.
    users = README.split("## Contributing", 1)[0]
    for contributor_word in ("chromium", "npm", "CI=true", "pytest"):
        assert contributor_word not in users


def test_readme_states_the_discovery_rule_and_the_base_url_pitfall() -> None:
    rule = _section(README, "## A real provider in three lines")
    assert "`{NAME}_API_KEY`" in rule and "`{NAME}_BASE_URL`" in rule
    assert "PINECONE_API_KEY" in rule  # someone else's key is ignored
    pitfall = _section(README, "## Claude Code")
    assert "ANTHROPIC_BASE_URL" in pitfall and "OPENAI_BASE_URL" in pitfall
    assert "508" in pitfall


def test_readme_known_providers_are_the_catalogue() -> None:
    rule = _section(README, "## A real provider in three lines")
    named = set(re.findall(r"`([a-z]+)`", rule.split("Which variables make a provider", 1)[1]))
    catalogue = set(config._package_defaults()["providers"])
    assert catalogue <= named


def test_readme_test_command_is_what_ci_runs() -> None:
    (block,) = _code_blocks(_section(README, "## Contributing"))
    assert block.split("#", 1)[0].strip() == "make test"
    ci = [line.strip() for line in (ROOT / ".ci" / "run").read_text().splitlines()]
    assert [line for line in ci if line and not line.startswith("#")][-1] == "make test"
    makefile = (ROOT / "Makefile").read_text()
    test_target = makefile.split("\ntest:", 1)[1].split("\n\n", 1)[0]
    assert "mkdocs build --strict" in test_target


def test_readme_links_reach_files() -> None:
    for target in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", README):
        if "://" not in target:
            assert (ROOT / target).is_file(), target


# ---------------------------------------------------------------- CLI page


def _commands(command: Any, path: tuple[str, ...]) -> dict[tuple[str, ...], Any]:
    if hasattr(command, "commands"):
        found: dict[tuple[str, ...], Any] = {}
        for name, sub in command.commands.items():
            if not sub.hidden:
                found.update(_commands(sub, (*path, name)))
        return found
    return {path: command}


def _options(command: Any) -> list[tuple[str, ...]]:
    """Each visible option's spellings (``--yes``, ``-y``; ``--daemon``, ``--no-daemon``)."""
    return [
        (*p.opts, *p.secondary_opts)
        for p in command.params
        if p.param_type_name == "option" and p.name != "help" and not p.hidden
    ]


def _synopsis() -> dict[tuple[str, ...], str]:
    """docs/cli.md's synopsis: each ``vdm …`` entry (continuation lines joined,
    comments dropped) under the command path it names."""
    text = (DOCS / "cli.md").read_text(encoding="utf-8")
    block = _code_blocks(_section(text, "## Synopsis"))[0]
    entries: list[str] = []
    for line in block.splitlines():
        line = re.split(r"\s{2,}#", line, maxsplit=1)[0]
        if line.startswith((" ", "\t")) and entries:
            entries[-1] += " " + line.strip()
        elif line.strip():
            entries.append(line.strip())
    root = typer.main.get_command(app)
    documented: dict[tuple[str, ...], str] = {}
    for entry in entries:
        words = entry.split()
        if words[0] != "vdm":
            continue  # claude.vdm: the console script of `vdm wrap claude`
        command, path = root, ("vdm",)
        for word in words[1:]:
            if not hasattr(command, "commands") or word not in command.commands:
                break
            command, path = command.commands[word], (*path, word)
        assert not hasattr(command, "commands"), f"not a command: {entry}"
        assert path not in documented, f"documented twice: {' '.join(path)}"
        documented[path] = entry
    return documented


def test_cli_page_lists_every_command() -> None:
    real = _commands(typer.main.get_command(app), ("vdm",))
    documented = _synopsis()
    assert sorted(" ".join(p) for p in real) == sorted(" ".join(p) for p in documented)


@pytest.mark.parametrize(
    "path", sorted(_commands(typer.main.get_command(app), ("vdm",))), ids=" ".join
)
def test_cli_page_lists_every_option(path: tuple[str, ...]) -> None:
    command = _commands(typer.main.get_command(app), ("vdm",))[path]
    entry = _synopsis()[path]
    shown = set(re.findall(r"(?<![\w-])(--?[a-z][a-z-]*)", entry))
    spellings = _options(command)
    for names in spellings:
        assert shown & set(names), f"{' '.join(path)}: {names[0]} is not in docs/cli.md"
    known = {name for names in spellings for name in names}
    assert shown <= known, f"{' '.join(path)}: docs/cli.md shows {shown - known}, unknown"


def test_cli_page_shows_the_root_options() -> None:
    text = (DOCS / "cli.md").read_text(encoding="utf-8")
    for names in _options(typer.main.get_command(app)):
        assert any(f"vdm {name}" in text for name in names)


# ---------------------------------------------------------------- configuration page


_TABLES: dict[str, set[str]] = {
    **{f"## `[{name}]`": set(keys) for name, keys in SECTION_KEYS.items()},
    "## Providers": set(PROVIDER_KEYS),
}


@pytest.mark.parametrize("heading", list(_TABLES))
def test_configuration_page_names_every_key(heading: str) -> None:
    text = _section((DOCS / "configuration.md").read_text(encoding="utf-8"), heading)
    missing = {key for key in _TABLES[heading] if f"`{key}`" not in text}
    assert not missing, f"docs/configuration.md {heading} lacks {sorted(missing)}"


def test_configuration_page_names_every_server_variable() -> None:
    text = _section((DOCS / "configuration.md").read_text(encoding="utf-8"), "## `[server]`")
    names = {row.env for row in rows(ServerSettings) if row.env}
    missing = {name for name in names if f"`{name}`" not in text}
    assert not missing, f"docs/configuration.md [server] lacks {sorted(missing)}"
