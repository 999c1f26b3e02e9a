"""How a setting is declared: :func:`setting` on a section dataclass's field.

A section is a frozen dataclass with ``SECTION`` (its TOML table) and
``ENV_PREFIX`` (prepended to the upper-cased key to name its environment
variable unless the field names one).  Each field made by :func:`setting` is
a setting; the other fields are derived at load time and are not settings::

    @dataclass(frozen=True)
    class GrpcSettings:
        SECTION: ClassVar[str] = "grpc"
        ENV_PREFIX: ClassVar[str] = "GRPC_"
        port: int | None = setting(None, Int(1, 65535), "Port of the gRPC service.")

:func:`rows` turns a section into its :class:`Setting` rows: section, TOML key
(the field's name, ``_`` as ``-``), environment variable, kind, default, help,
secret.  Nothing else holds these facts.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from vdm.settings.kinds import Kind

# A default computed from the section's other values and the load's context
# (the environment, the server section): (values, context) -> value.
Derive = Callable[[Mapping[str, Any], Mapping[str, Any]], Any]


class ConfigError(ValueError):
    """One or more configuration problems, each naming where it comes from."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = problems


@dataclass(frozen=True)
class Spec:
    """What :func:`setting` records on a field (the rest comes from the field)."""

    kind: Kind
    help: str
    env: str | None  # "" : ENV_PREFIX + KEY; None: no environment variable
    key: str | None  # "" : the field's name; None: environment only
    secret: bool
    example: Any
    derive: Derive | None
    default_text: str | None


@dataclass(frozen=True)
class Setting:
    """One row of the settings table."""

    section: str  # TOML table ("" at the top level)
    key: str | None  # TOML key; None: environment only
    env: str | None  # environment variable; None: TOML only
    kind: Kind
    default: Any
    help: str
    secret: bool = False
    example: Any = None  # a valid non-default value (docs, tests)
    field: str | None = None  # the attribute of the section's dataclass
    derive: Derive | None = None
    default_text: str | None = None  # the default in words, when derived

    @property
    def path(self) -> str:
        """``section.key`` as ``config show`` and error messages name it."""
        name = self.key or (self.env or "").lower()
        return f"{self.section}.{name}" if self.section else name

    @property
    def default_shown(self) -> str:
        if self.default_text is not None:
            return self.default_text
        if self.default is None or self.default in ((), {}):
            return "-"
        if isinstance(self.default, bool):
            return str(self.default).lower()
        return str(self.default)


def setting(
    default: Any,
    kind: Kind,
    help: str,
    *,
    env: str | None = "",
    key: str | None = "",
    secret: bool = False,
    example: Any = None,
    derive: Derive | None = None,
    default_text: str | None = None,
) -> Any:
    """A dataclass field that is a setting (see the module docstring).

    ``derive`` computes the default when the setting is unset (the field's
    ``default`` is then what it gives with every other default); secrets are
    kept out of the dataclass's repr."""
    spec = Spec(kind, help, env, key, secret, example, derive, default_text)
    metadata = {"setting": spec}
    if isinstance(default, dict):
        frozen = dict(default)
        return dataclasses.field(
            default_factory=lambda: dict(frozen), metadata=metadata, repr=not secret
        )
    return dataclasses.field(default=default, metadata=metadata, repr=not secret)


def rows(section: Any) -> tuple[Setting, ...]:
    """The settings of one section dataclass, in declaration order (built once)."""
    return _rows(section)


@functools.cache
def _rows(section: Any) -> tuple[Setting, ...]:
    out = []
    for f in dataclasses.fields(section):
        spec = f.metadata.get("setting")
        if spec is None:
            continue
        key = f.name.replace("_", "-") if spec.key == "" else spec.key
        env = spec.env
        if env == "":
            env = section.ENV_PREFIX + (key or f.name).upper().replace("-", "_")
        default = f.default
        if f.default_factory is not dataclasses.MISSING:
            default = f.default_factory()
        out.append(
            Setting(
                section=section.SECTION,
                key=key,
                env=env,
                kind=spec.kind,
                default=default,
                help=spec.help,
                secret=spec.secret,
                example=spec.example,
                field=f.name,
                derive=spec.derive,
                default_text=spec.default_text,
            )
        )
    return tuple(out)
