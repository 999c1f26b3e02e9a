"""Where vdm keeps its files (XDG base directories): the user's configuration
(``vdm.toml``, and the secrets vdm generates beside it) and its data (the
default SQLite database)."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path


def user_config_path(env: Mapping[str, str]) -> Path:
    base = env.get("XDG_CONFIG_HOME") or str(Path(env.get("HOME", "~")).expanduser() / ".config")
    return Path(base) / "vdm" / "vdm.toml"


def data_dir(env: Mapping[str, str]) -> Path:
    base = env.get("XDG_DATA_HOME") or str(
        Path(env.get("HOME") or os.path.expanduser("~")) / ".local" / "share"
    )
    return Path(base) / "vdm"
