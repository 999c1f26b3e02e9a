"""Router: provider prefixes, user aliases, fallback aliases and the order
in which they win."""

from __future__ import annotations

import pytest

from vdm.errors import InvalidRequest
from vdm.routing import Route, Router, normalise

PROVIDERS = ["openai", "ollama", "ant", "echo"]


def router(
    aliases: dict[str, dict[str, str]] | None = None,
    fallbacks: dict[str, dict[str, str]] | None = None,
    *,
    providers: list[str] | None = None,
    default: str = "openai",
) -> Router:
    return Router(providers or PROVIDERS, default, aliases or {}, fallbacks or {})


def resolve(r: Router, model: str) -> tuple[str, str]:
    route = r.resolve(model)
    return route.provider, route.model


# ---------------------------------------------------------------- prefixes


@pytest.mark.parametrize(
    ("model", "expected"),
    [
        ("openai:gpt-4o", ("openai", "gpt-4o")),
        ("ollama:llama3:8b", ("ollama", "llama3:8b")),  # only the first colon splits
        ("ollama:a:b:c", ("ollama", "a:b:c")),
        ("OpenAI:gpt-4o", ("openai", "gpt-4o")),  # prefixes are case-insensitive
        ("ant:claude-opus-4-1", ("ant", "claude-opus-4-1")),
        ("echo:anything", ("echo", "anything")),
        ("  openai:gpt-4o  ", ("openai", "gpt-4o")),
    ],
)
def test_prefix_routing(model: str, expected: tuple[str, str]) -> None:
    assert resolve(router(), model) == expected


def test_bare_model_goes_to_the_default_provider_as_is() -> None:
    assert resolve(router(), "gpt-4.1-mini") == ("openai", "gpt-4.1-mini")
    assert resolve(router(default="ollama"), "qwen3") == ("ollama", "qwen3")
    assert router().resolve("gpt-4.1-mini").alias is None


@pytest.mark.parametrize(
    "model",
    [
        "ft:gpt-4o-mini-2024-07-18:acme::9abc",  # an OpenAI fine-tune
        "llama3:8b",  # an Ollama tag
        "meta-llama/llama-3.1-8b-instruct:free",  # an OpenRouter variant
        "anthropic.claude-3-5-sonnet-20240620-v1:0",  # a Bedrock id
        "opnai:gpt-4o",  # a typo: the upstream's error will name it
        "OPENAI_X:y",
    ],
)
def test_a_prefix_that_names_no_provider_is_part_of_the_model(model: str) -> None:
    assert resolve(router(), model) == ("openai", model)
    assert resolve(router(default="ollama"), model) == ("ollama", model)
    # ... and the whole name still meets the aliases
    assert resolve(router({"ant": {"tuned": "claude-x"}}), model + "-tuned") == ("ant", "claude-x")


@pytest.mark.parametrize("model", ["", "   ", "openai:", "ant:"])
def test_empty_model_is_invalid(model: str) -> None:
    with pytest.raises(InvalidRequest):
        router().resolve(model)


# ---------------------------------------------------------------- user aliases


def test_user_alias_matching_is_case_insensitive_dash_underscore_and_substring() -> None:
    r = router({"openai": {"fast": "gpt-4o-mini"}, "ant": {"big_brain": "claude-opus"}})
    for model in ("fast", "FAST", "Fast", "my-fast-model", "superfast", "MY_FAST"):
        assert resolve(r, model) == ("openai", "gpt-4o-mini"), model
    for model in ("big_brain", "big-brain", "BIG-BRAIN", "a-big-brain-please"):
        assert resolve(r, model) == ("ant", "claude-opus"), model
    assert r.resolve("my-fast-model") == Route("openai", "gpt-4o-mini", "fast")
    assert resolve(r, "fa-st") == ("openai", "fa-st")  # not a substring: default, as is
    assert normalise("A-b_C") == "a_b_c"


def test_user_alias_of_another_provider_wins_over_the_default() -> None:
    r = router({"ant": {"claude": "claude-x"}})
    assert resolve(r, "claude") == ("ant", "claude-x")
    assert resolve(r, "claude-3-haiku") == ("ant", "claude-x")


def test_exact_beats_substring() -> None:
    r = router({"openai": {"fast": "m-fast", "fast_model": "m-fast-model"}})
    assert resolve(r, "fast") == ("openai", "m-fast")
    assert resolve(r, "fast-model") == ("openai", "m-fast-model")


def test_exact_beats_longer_substring_and_earlier_provider() -> None:
    r = router({"openai": {"code": "gpt-code"}, "ant": {"code_x": "claude-code"}})
    assert resolve(r, "code-x") == ("ant", "claude-code")


def test_longest_substring_wins() -> None:
    r = router({"ant": {"fast": "ant-fast"}, "openai": {"very_fast": "oa-very-fast"}})
    # "very_fast" is longer; provider order (openai first) is not needed to decide
    assert resolve(r, "my-very-fast-model") == ("openai", "oa-very-fast")
    r = router({"openai": {"fast": "oa-fast"}, "ant": {"very_fast": "ant-very-fast"}})
    assert resolve(r, "my-very-fast-model") == ("ant", "ant-very-fast")


def test_provider_order_breaks_ties() -> None:
    aliases = {"ant": {"fast": "ant-fast"}, "ollama": {"fast": "ollama-fast"}}
    assert resolve(router(aliases), "fast") == ("ollama", "ollama-fast")  # ollama before ant
    assert resolve(router(aliases), "x-fast") == ("ollama", "ollama-fast")
    reordered = router(aliases, providers=["ant", "ollama", "openai", "echo"])
    assert resolve(reordered, "fast") == ("ant", "ant-fast")


def test_alphabetical_breaks_the_last_ties() -> None:
    r = router({"openai": {"zeta": "m-zeta", "beta": "m-beta"}})
    assert resolve(r, "beta-zeta") == ("openai", "m-beta")
    assert resolve(r, "zeta-beta") == ("openai", "m-beta")


def test_aliases_within_a_prefixed_provider() -> None:
    r = router({"openai": {"fast": "gpt-fast"}, "ant": {"fast": "claude-fast"}})
    assert resolve(r, "ant:fast") == ("ant", "claude-fast")
    assert resolve(r, "ant:my-fast") == ("ant", "claude-fast")
    assert resolve(r, "openai:fast") == ("openai", "gpt-fast")
    # a prefixed provider without such an alias takes the model as is
    assert resolve(r, "ollama:fast") == ("ollama", "fast")


# ---------------------------------------------------------------- fallback aliases


FALLBACKS = {
    "openai": {"sonnet": "gpt-4o", "haiku": "gpt-4o-mini"},
    "ollama": {"sonnet": "qwen3:32b"},
}


def test_fallback_aliases_apply_only_within_the_default_or_prefixed_provider() -> None:
    r = router(fallbacks=FALLBACKS)
    assert resolve(r, "sonnet") == ("openai", "gpt-4o")
    assert resolve(r, "claude-sonnet-4-5") == ("openai", "gpt-4o")
    assert resolve(r, "claude-3-5-haiku-latest") == ("openai", "gpt-4o-mini")
    assert resolve(r, "ollama:sonnet") == ("ollama", "qwen3:32b")
    # ollama's fallback never applies to a bare model while openai is the default
    assert resolve(r, "ollama:haiku") == ("ollama", "haiku")
    r = router(fallbacks=FALLBACKS, default="ollama")
    assert resolve(r, "sonnet") == ("ollama", "qwen3:32b")
    assert resolve(r, "haiku") == ("ollama", "haiku")  # openai's fallback does not leak
    r = router(fallbacks=FALLBACKS, default="ant")
    assert resolve(r, "claude-sonnet-4-5") == ("ant", "claude-sonnet-4-5")


def test_user_alias_overrides_fallback() -> None:
    r = router({"openai": {"Sonnet": "my-sonnet"}}, FALLBACKS)
    assert resolve(r, "sonnet") == ("openai", "my-sonnet")
    assert resolve(r, "openai:claude-sonnet-4") == ("openai", "my-sonnet")
    assert resolve(r, "haiku") == ("openai", "gpt-4o-mini")  # other fallbacks stay
    active = r.active_aliases()
    assert active["openai"]["Sonnet"] == "my-sonnet"
    assert "sonnet" not in active["openai"]
    assert active["ollama"] == {"sonnet": "qwen3:32b"}


def test_user_alias_anywhere_beats_default_fallback() -> None:
    r = router({"ant": {"sonnet": "claude-sonnet-4-5"}}, FALLBACKS)
    assert resolve(r, "sonnet") == ("ant", "claude-sonnet-4-5")
    assert resolve(r, "openai:sonnet") == ("openai", "gpt-4o")


def test_aliases_of_unknown_providers_are_ignored() -> None:
    r = router({"ghost": {"fast": "boo"}}, {"ghost": {"sonnet": "boo"}})
    assert resolve(r, "fast") == ("openai", "fast")
    assert resolve(r, "sonnet") == ("openai", "sonnet")


def test_resolution_is_memoised_and_stable() -> None:
    r = router({"openai": {"fast": "gpt-fast"}})
    first = r.resolve("my-fast")
    assert r.resolve("my-fast") is first
    with pytest.raises(InvalidRequest):
        r.resolve("openai:")
    with pytest.raises(InvalidRequest):  # errors are not cached as routes
        r.resolve("openai:")
