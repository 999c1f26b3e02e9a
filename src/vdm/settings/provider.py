"""A provider's settings, declared: ``[providers.NAME]`` keys and ``{NAME}_*`` variables.

Every provider takes the same settings, named ``key`` under
``[providers.NAME]`` and ``{NAME}_SUFFIX`` in the environment
(``OPENAI_BASE_URL``); :data:`PROVIDER_SETTINGS` declares them, with
``providers.NAME`` as their section and ``{NAME}_`` in their variable, which
:func:`for_provider` fills in.  How they combine (formats, Azure, discovery)
is :mod:`vdm.config`'s.
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final, Literal

from vdm.settings.kinds import Choice, Flag, Int, Kind, Text
from vdm.settings.spec import Setting

ApiFormat = Literal["openai", "anthropic", "azure", "echo"]
API_FORMATS = ("openai", "anthropic", "azure")
AZURE = "azure"
AZURE_DEFAULT_API_VERSION = "2024-10-21"  # the latest GA dated api-version
PASSTHROUGH_KEY = "!PASSTHRU"
# {NAME}_STRUCTURED_OUTPUT: how structured output reaches a converted
# request's provider (vdm.protocols.structured): "native" its own constraint,
# "tool" a forced tool, "prompt" an instruction (no constraint).
StructuredOutput = Literal["native", "tool", "prompt"]
STRUCTURED_OUTPUTS = ("native", "tool", "prompt")
RESPONSES_APIS = ("native", "convert")
MAX_TOKENS_FIELDS = ("max_tokens", "max_completion_tokens")
ECHO: Final = "echo"
# Connections one process may hold to one provider: beyond about this, one
# source address runs out of ephemeral ports to the upstream's address.
UPSTREAM_CONNECTIONS_MAX = 60_000
# [server] upstream-max-connections and a provider's max-connections.
UPSTREAM_CONNECTIONS: Final = Int(1, UPSTREAM_CONNECTIONS_MAX)
SECTION = "providers.NAME"
ENV_PREFIX = "{NAME}_"


class Keys(Kind):
    label = "keys, whitespace-separated (a pool)"

    def parse(self, value: Any, where: str, problems: list[str]) -> tuple[str, ...]:
        return tuple(str(value).split())

    def env_text(self, value: Any) -> str:
        return " ".join(value) if isinstance(value, list) else str(value)


class Table(Kind):
    """A TOML table of names; in the environment one variable per entry
    (``{NAME}_ALIAS_{ALIAS}``) or one list (``{NAME}_DEPLOYMENTS=m=d,...``)."""

    def __init__(self, label: str) -> None:
        self._label = label

    @property
    def label(self) -> str:
        return self._label


def _row(key: str, env: str | None, kind: Kind, default: Any, help: str, **more: Any) -> Setting:
    return Setting(SECTION, key, ENV_PREFIX + env if env else None, kind, default, help, **more)


PROVIDER_SETTINGS: Final = {
    row.key: row
    for row in (
        _row(
            "api-key",
            "API_KEY",
            Keys(),
            (),
            "Its key, or several whitespace-separated ([key pools](routing.md#key-pools)); "
            "!PASSTHRU: the client's own ([!PASSTHRU keys](passthru-keys.md)).",
            secret=True,
            example="sk-1 sk-2",
        ),
        _row(
            "base-url",
            "BASE_URL",
            Text(),
            None,
            "Where it is (http or https); built in for the known providers.",
            example="https://llm.example/v1",
        ),
        _row(
            "api-format",
            "API_FORMAT",
            Choice(API_FORMATS, "api format"),
            "openai",
            "Its wire format; unset on an Azure host: azure ([Azure OpenAI](#azure-openai)).",
            example="anthropic",
        ),
        _row(
            "api-version",
            "API_VERSION",
            Text(),
            None,
            "anthropic-version sent to Anthropic-native providers (else 2023-06-01, or the client's); Azure's api-version query parameter.",
            default_text=f"{AZURE_DEFAULT_API_VERSION} for azure",
            example="2024-01-01",
        ),
        _row(
            "headers",
            "CUSTOM_HEADER_{HEADER}",
            Table("table of header = value"),
            {},
            "Extra headers of every upstream request (env: _ in the name as -).",
            example={"x-team": "blue"},
        ),
        _row(
            "aliases",
            "ALIAS_{ALIAS}",
            Table("table of alias = model"),
            {},
            "Model aliases clients may send ([Routing](routing.md#aliases)).",
            example={"fast": "small-model"},
        ),
        _row(
            "fallback-aliases",
            None,
            Table("table of alias = model"),
            {},
            "Aliases applied when this provider is the default: haiku, sonnet, opus ([Routing](routing.md#aliases)).",
            example={"haiku": "small-model"},
        ),
        _row(
            "max-tokens-field",
            "MAX_TOKENS_FIELD",
            Choice(MAX_TOKENS_FIELDS),
            "max_tokens",
            "The field that carries max_tokens upstream (OpenAI formats).",
            example="max_completion_tokens",
        ),
        _row(
            "supports-reasoning",
            "SUPPORTS_REASONING",
            Flag(),
            False,
            "It takes reasoning_effort, mapped from Anthropic thinking ([Conversion](conversion.md)).",
            example=True,
        ),
        _row(
            "deployments",
            "DEPLOYMENTS",
            Table("table of model = deployment (env: model=deployment,...)"),
            {},
            "Azure only: the deployment of each model.",
            example={"gpt-4o": "prod-4o"},
        ),
        _row(
            "responses-api",
            "RESPONSES_API",
            Choice(RESPONSES_APIS),
            "convert",
            "POST /v1/responses relayed as is (native, OpenAI format only) or converted ([Responses API](responses.md)).",
            default_text="native for openai, else convert",
            example="native",
        ),
        _row(
            "forward-organization",
            "FORWARD_ORGANIZATION",
            Flag(),
            False,
            "The client's OpenAI-Organization / OpenAI-Project go upstream (OpenAI formats).",
            example=True,
        ),
        _row(
            "structured-output",
            "STRUCTURED_OUTPUT",
            Choice(STRUCTURED_OUTPUTS),
            "native",
            "How a converted request's JSON schema reaches it: its own constraint, "
            "a forced tool, or an instruction ([Structured output](structured-output.md)).",
            example="tool",
        ),
        _row(
            "prices",
            None,
            Table(
                "table of model = {input, output, cache-read, cache-write}, USD per million tokens"
            ),
            {},
            "Its models' prices, over the genai-prices table's (self-hosted or unlisted models) ([Spend](spend.md#prices)).",
            example={"my-model": {"input": 0.5, "output": 1.5}},
        ),
        _row(
            "max-connections",
            "MAX_CONNECTIONS",
            UPSTREAM_CONNECTIONS,
            None,
            "Connections open to this provider at once; beyond, requests wait ([Upstream connections](operations.md#upstream-connections)).",
            default_text="server.upstream-max-connections",
            example=8,
        ),
    )
}


def for_provider(row: Setting, name: str) -> Setting:
    """``row`` of provider ``name``: ``providers.foo.base-url``, ``FOO_BASE_URL``."""
    env = row.env.replace("{NAME}", name.upper()) if row.env else None
    return dataclasses.replace(row, section=f"providers.{name}", env=env)


_DEFAULT: Final = {key: row.default for key, row in PROVIDER_SETTINGS.items()}


@dataclass(frozen=True)
class ProviderSettings:
    name: str
    api_format: ApiFormat
    base_url: str
    api_keys: tuple[str, ...] = ()
    api_version: str | None = None
    headers: Mapping[str, str] = field(default_factory=dict)
    max_tokens_field: str = _DEFAULT["max-tokens-field"]
    supports_reasoning: bool = _DEFAULT["supports-reasoning"]
    deployments: Mapping[str, str] = field(default_factory=dict)  # azure: model -> deployment
    # POST /v1/responses: relayed as is ("native", OpenAI's own API) or converted.
    responses_api: Literal["native", "convert"] = _DEFAULT["responses-api"]
    # The client's OpenAI-Organization / OpenAI-Project go upstream (OpenAI formats only).
    forward_organization: bool = _DEFAULT["forward-organization"]
    # How a converted request's structured output reaches the provider
    # (vdm.protocols.structured): its own constraint, a forced tool, or words.
    structured_output: StructuredOutput = _DEFAULT["structured-output"]
    # vdm.loops: why the base URL is this gateway's own address (None: it is not).
    loops_back: str | None = None
    # Upstream connections open at once ({NAME}_MAX_CONNECTIONS); None: the
    # server's UPSTREAM_MAX_CONNECTIONS.
    max_connections: int | None = _DEFAULT["max-connections"]
    # model -> {input, output, cache-read, cache-write}: USD per million tokens
    # (vdm.pricing; over the genai-prices table).
    prices: Mapping[str, Mapping[str, float]] = field(default_factory=dict)

    @property
    def has_key(self) -> bool:
        return bool(self.api_keys) or self.api_format == ECHO

    @property
    def key_fingerprints(self) -> list[str]:
        """Keys as short SHA-256 prefixes: safe to print or log."""
        return [fingerprint(k) for k in self.api_keys]


def fingerprint(secret: str) -> str:
    if secret == PASSTHROUGH_KEY:
        return PASSTHROUGH_KEY
    return "sha256:" + hashlib.sha256(secret.encode()).hexdigest()[:8]
