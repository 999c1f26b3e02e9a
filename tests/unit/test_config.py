"""load_settings: defaults < user TOML < ./vdm.toml < (.env <) environment,
provider discovery, validation errors that name their source, default
provider precedence."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from vdm.config import ConfigError, Settings, load_settings, user_config_path


@pytest.fixture
def home(tmp_path: Path) -> Path:
    path = tmp_path / "home"
    path.mkdir()
    return path


@pytest.fixture
def cwd(tmp_path: Path) -> Path:
    path = tmp_path / "work"
    path.mkdir()
    return path


def base_env(home: Path, **extra: str) -> dict[str, str]:
    return {"HOME": str(home), "XDG_CONFIG_HOME": str(home / ".config"), **extra}


def user_toml(home: Path, text: str) -> Path:
    path = home / ".config" / "vdm" / "vdm.toml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def load(home: Path, cwd: Path, **env: str) -> Settings:
    return load_settings(env=base_env(home, **env), cwd=cwd)


def problems(home: Path, cwd: Path, **env: str) -> str:
    with pytest.raises(ConfigError) as raised:
        load(home, cwd, **env)
    assert raised.value.problems
    return str(raised.value)


# ---------------------------------------------------------------- paths


def test_user_config_path() -> None:
    assert user_config_path({"XDG_CONFIG_HOME": "/x/cfg", "HOME": "/h"}) == Path(
        "/x/cfg/vdm/vdm.toml"
    )
    assert user_config_path({"HOME": "/h"}) == Path("/h/.config/vdm/vdm.toml")


# ---------------------------------------------------------------- layering


def test_package_defaults(home: Path, cwd: Path) -> None:
    settings = load(home, cwd)
    server = settings.server
    assert (server.host, server.port, server.log_level) == ("127.0.0.1", 8082, "INFO")
    assert server.request_timeout == 90.0
    assert server.max_body_size == 32 * 1024 * 1024
    assert server.max_tokens_limit is None and server.proxy_api_key is None


def test_timeouts_left_unset_follow_request_timeout(home: Path, cwd: Path) -> None:
    def timeouts(settings: Settings) -> tuple[float, ...]:
        server = settings.server
        return (
            server.connect_timeout,
            server.first_byte_timeout,
            server.idle_timeout,
            settings.grpc.request_timeout,
        )

    assert timeouts(load(home, cwd, REQUEST_TIMEOUT="5")) == (5, 5, 5, 5)
    assert timeouts(load(home, cwd, REQUEST_TIMEOUT="30")) == (10, 30, 30, 30)  # connect <= 10
    assert timeouts(load(home, cwd, REQUEST_TIMEOUT="30", CONNECT_TIMEOUT="20"))[0] == 20


def test_layers_user_then_local_then_env(home: Path, cwd: Path) -> None:
    user_toml(
        home,
        '[server]\nport = 9001\nlog-level = "debug"\nrequest-timeout = 11\n'
        "max-tokens-limit = 1000\n",
    )
    assert load(home, cwd).server.port == 9001
    (cwd / "vdm.toml").write_text("[server]\nport = 9002\nrequest-timeout = 12.5\n")
    settings = load(home, cwd)
    assert settings.server.port == 9002
    assert settings.server.request_timeout == 12.5
    assert settings.server.log_level == "DEBUG"  # from the user file, untouched by ./vdm.toml
    assert settings.server.max_tokens_limit == 1000
    settings = load(home, cwd, PORT="9003", MAX_TOKENS_LIMIT="77", LOG_LEVEL="warning")
    assert settings.server.port == 9003
    assert settings.server.max_tokens_limit == 77
    assert settings.server.log_level == "WARNING"
    assert settings.server.request_timeout == 12.5
    assert settings.sources["server.port"] == "env PORT"


def test_provider_tables_merge_across_layers(home: Path, cwd: Path) -> None:
    user_toml(
        home,
        '[providers.foo]\napi-key = "user-key"\nbase-url = "https://user.example/v1"\n'
        '[providers.foo.aliases]\nfast = "foo-fast"\n',
    )
    (cwd / "vdm.toml").write_text(
        '[providers.foo]\nbase-url = "https://local.example/v1"\n'
        '[providers.foo.aliases]\nslow = "foo-slow"\n'
    )
    settings = load(home, cwd)
    foo = settings.providers["foo"]
    assert foo.api_keys == ("user-key",)
    assert foo.base_url == "https://local.example/v1"
    assert settings.aliases["foo"] == {"fast": "foo-fast", "slow": "foo-slow"}
    settings = load(
        home,
        cwd,
        FOO_BASE_URL="https://env.example/v1",
        FOO_API_KEY="env-key",
        FOO_ALIAS_FAST="env-fast",
    )
    assert settings.providers["foo"].base_url == "https://env.example/v1"
    assert settings.providers["foo"].api_keys == ("env-key",)
    assert settings.aliases["foo"]["fast"] == "env-fast"


# ---------------------------------------------------------------- .env


@pytest.fixture
def bare_environ(monkeypatch: pytest.MonkeyPatch, home: Path, cwd: Path) -> None:
    """os.environ holds nothing that configures vdm; cwd is the work dir."""
    for name in list(os.environ):
        monkeypatch.delenv(name)
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(home / ".config"))
    monkeypatch.chdir(cwd)


@pytest.mark.usefixtures("bare_environ")
def test_dotenv_is_read_only_when_env_is_not_given(
    home: Path, cwd: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (cwd / ".env").write_text(
        "DOT_API_KEY=from-dotenv\nDOT_BASE_URL=https://dot.example/v1\nPORT=9100\n"
    )
    settings = load_settings(env=None, cwd=cwd)
    assert settings.providers["dot"].api_keys == ("from-dotenv",)
    assert settings.server.port == 9100
    # cwd defaults to the current directory
    assert load_settings().providers["dot"].base_url == "https://dot.example/v1"
    # an explicit env means exactly that env: no .env
    explicit = load_settings(env=base_env(home), cwd=cwd)
    assert "dot" not in explicit.providers
    assert explicit.server.port == 8082
    # the real environment wins over .env
    monkeypatch.setenv("PORT", "9200")
    monkeypatch.setenv("DOT_API_KEY", "from-environ")
    settings = load_settings(env=None, cwd=cwd)
    assert settings.server.port == 9200
    assert settings.providers["dot"].api_keys == ("from-environ",)


# ---------------------------------------------------------------- provider discovery


def test_provider_from_environment(home: Path, cwd: Path) -> None:
    settings = load(
        home,
        cwd,
        FOO_API_KEY="k-foo",
        FOO_BASE_URL="https://foo.example/api/",
        FOO_API_FORMAT="Anthropic",
        FOO_API_VERSION="2024-01-01",
        FOO_CUSTOM_HEADER_X_FOO="bar",
        FOO_CUSTOM_HEADER_X_TWO_WORDS="baz",
    )
    foo = settings.providers["foo"]
    assert foo.api_format == "anthropic"
    assert foo.base_url == "https://foo.example/api"  # trailing slash dropped
    assert foo.api_version == "2024-01-01"
    assert dict(foo.headers) == {"x-foo": "bar", "x-two-words": "baz"}
    assert foo.api_keys == ("k-foo",)
    assert foo.has_key
    assert list(settings.providers)[-1] == "echo"


def test_well_known_providers_need_only_a_key(home: Path, cwd: Path) -> None:
    settings = load(
        home,
        cwd,
        OPENAI_API_KEY="a",
        GROQ_API_KEY="b",
        ANTHROPIC_API_KEY="c",
        GEMINI_API_KEY="d",
        OLLAMA_API_KEY="e",
    )
    p = settings.providers
    assert p["openai"].base_url == "https://api.openai.com/v1"
    assert p["openai"].api_format == "openai"
    assert p["openai"].max_tokens_field == "max_completion_tokens"
    assert p["openai"].supports_reasoning
    assert p["groq"].base_url == "https://api.groq.com/openai/v1"
    assert p["anthropic"].base_url == "https://api.anthropic.com"
    assert p["anthropic"].api_format == "anthropic"
    assert p["gemini"].base_url == "https://generativelanguage.googleapis.com/v1beta/openai"
    assert p["ollama"].base_url == "http://127.0.0.1:11434/v1"
    assert settings.fallback_aliases["openai"]["sonnet"] == "gpt-4o"
    # known but without a key: not configured
    assert "openrouter" not in p and "deepseek" not in p


def test_another_tools_key_is_ignored_not_a_provider(home: Path, cwd: Path) -> None:
    settings = load(home, cwd, PINECONE_API_KEY="abc", HF_API_KEY="hf", OPENAI_API_KEY="k")
    assert list(settings.providers) == ["openai", "echo"]
    assert settings.ignored_keys == ("PINECONE_API_KEY", "HF_API_KEY")


def test_unknown_name_with_base_url_is_a_provider(home: Path, cwd: Path) -> None:
    settings = load(home, cwd, MYSTERY_API_KEY="k", MYSTERY_BASE_URL="http://m.example/v1")
    assert settings.providers["mystery"].base_url == "http://m.example/v1"
    assert settings.ignored_keys == ()


def test_a_user_toml_table_makes_a_name_known(home: Path, cwd: Path) -> None:
    (cwd / "vdm.toml").write_text('[providers.mine]\nbase-url = "http://mine.example/v1"\n')
    assert "mine" in load(home, cwd, MINE_API_KEY="k").providers
    assert "mine" not in load(home, cwd).providers  # known, but no key


def test_unknown_provider_described_without_base_url_is_an_error(home: Path, cwd: Path) -> None:
    message = problems(home, cwd, MYSTERY_API_KEY="k", MYSTERY_API_FORMAT="anthropic")
    assert "mystery" in message and "MYSTERY_BASE_URL" in message


def test_known_provider_without_base_url_is_still_an_error(home: Path, cwd: Path) -> None:
    assert "AZURE_BASE_URL" in problems(home, cwd, AZURE_API_KEY="k")


def test_not_providers_and_empty_keys_are_ignored(home: Path, cwd: Path) -> None:
    settings = load(home, cwd, PROXY_API_KEY="p", VDM_API_KEY="v", EMPTY_API_KEY="  ")
    assert list(settings.providers) == ["echo"]
    assert settings.server.proxy_api_key == "p"


def test_discovery_order_follows_the_environment(home: Path, cwd: Path) -> None:
    env = {
        "ZED_API_KEY": "1",
        "ZED_BASE_URL": "http://z.example",
        "ALPHA_API_KEY": "2",
        "ALPHA_BASE_URL": "http://a.example",
    }
    settings = load(home, cwd, **env)
    assert list(settings.providers) == ["zed", "alpha", "echo"]


def test_provider_from_toml_table(home: Path, cwd: Path) -> None:
    (cwd / "vdm.toml").write_text(
        '[providers.local]\napi-key = "k1 k2"\nbase-url = "http://localhost:8000/v1"\n'
        'max-tokens-field = "max_completion_tokens"\nsupports-reasoning = true\n'
        '[providers.local.headers]\nx-team = "blue"\n'
    )
    local = load(home, cwd).providers["local"]
    assert local.api_keys == ("k1", "k2")
    assert dict(local.headers) == {"x-team": "blue"}
    assert local.max_tokens_field == "max_completion_tokens"
    assert local.supports_reasoning is True


def test_key_pool_is_whitespace_separated(home: Path, cwd: Path) -> None:
    settings = load(home, cwd, OPENAI_API_KEY=" k1 k2\tk3\n k4 ")
    assert settings.providers["openai"].api_keys == ("k1", "k2", "k3", "k4")
    fingerprints = settings.providers["openai"].key_fingerprints
    assert len(fingerprints) == 4 and all(f.startswith("sha256:") for f in fingerprints)
    assert not any(k in "".join(fingerprints) for k in ("k1", "k2", "k3", "k4"))


# ---------------------------------------------------------------- errors name their source


def test_bad_api_format_from_env_names_the_variable(home: Path, cwd: Path) -> None:
    message = problems(
        home, cwd, FOO_API_KEY="k", FOO_BASE_URL="http://f.example", FOO_API_FORMAT="grpc"
    )
    assert "FOO_API_FORMAT" in message and "grpc" in message


def test_bad_api_format_from_toml_names_file_and_key(home: Path, cwd: Path) -> None:
    path = cwd / "vdm.toml"
    path.write_text(
        '[providers.foo]\napi-key = "k"\nbase-url = "http://f.example"\napi-format = "soap"\n'
    )
    message = problems(home, cwd)
    assert str(path) in message and "providers.foo.api-format" in message


@pytest.mark.parametrize("url", ["ftp://x.example", "not a url", "http://", "localhost:8000"])
def test_bad_base_url_from_env(home: Path, cwd: Path, url: str) -> None:
    message = problems(home, cwd, FOO_API_KEY="k", FOO_BASE_URL=url)
    assert "FOO_BASE_URL" in message and "URL" in message


def test_bad_base_url_from_user_toml_names_file_and_key(home: Path, cwd: Path) -> None:
    path = user_toml(home, '[providers.foo]\napi-key = "k"\nbase-url = "file:///etc"\n')
    message = problems(home, cwd)
    assert str(path) in message and "providers.foo.base-url" in message


@pytest.mark.parametrize(
    ("text", "key"),
    [
        ("colour = 1\n", "'colour'"),
        ("[server]\nprot = 1\n", "'server.prot'"),
        (
            '[providers.foo]\napi-key = "k"\nbase_url = "http://x.example"\n',
            "'providers.foo.base_url'",
        ),
    ],
)
@pytest.mark.parametrize("where", ["user", "local"])
def test_unknown_toml_key_names_file_and_key(
    home: Path, cwd: Path, text: str, key: str, where: str
) -> None:
    if where == "user":
        path = user_toml(home, text)
    else:
        path = cwd / "vdm.toml"
        path.write_text(text)
    message = problems(home, cwd)
    assert str(path) in message and key in message and "unknown key" in message


def test_broken_toml_names_the_file(home: Path, cwd: Path) -> None:
    path = cwd / "vdm.toml"
    path.write_text("[server\nport = 1\n")
    assert str(path) in problems(home, cwd)


@pytest.mark.parametrize(
    ("env", "needle"),
    [
        ({"PORT": "eighty"}, "PORT"),
        ({"PORT": "70000"}, "PORT"),
        ({"REQUEST_TIMEOUT": "-1"}, "REQUEST_TIMEOUT"),
        ({"LOG_LEVEL": "chatty"}, "LOG_LEVEL"),
        ({"MAX_BODY_SIZE": "10"}, "MAX_BODY_SIZE"),
    ],
)
def test_bad_server_values_from_env(
    home: Path, cwd: Path, env: dict[str, str], needle: str
) -> None:
    assert needle in problems(home, cwd, **env)


def test_bad_server_value_from_toml_names_file_and_key(home: Path, cwd: Path) -> None:
    path = cwd / "vdm.toml"
    path.write_text('[server]\nport = "high"\n')
    message = problems(home, cwd)
    assert str(path) in message and "server.port" in message


def test_every_problem_is_reported_at_once(home: Path, cwd: Path) -> None:
    with pytest.raises(ConfigError) as raised:
        load(
            home,
            cwd,
            PORT="x",
            FOO_API_KEY="k",
            FOO_BASE_URL="nope",
            BAR_API_KEY="k",
            BAR_BASE_URL="http://b.example",
            BAR_API_FORMAT="x",
        )
    assert len(raised.value.problems) == 3


def test_echo_is_reserved(home: Path, cwd: Path) -> None:
    assert "reserved" in problems(home, cwd, ECHO_API_KEY="k", ECHO_BASE_URL="http://e.example")


# ---------------------------------------------------------------- default provider


TWO = {
    "FIRST_API_KEY": "1",
    "FIRST_BASE_URL": "http://first.example",
    "SECOND_API_KEY": "2",
    "SECOND_BASE_URL": "http://second.example",
    "THIRD_API_KEY": "3",
    "THIRD_BASE_URL": "http://third.example",
}


def test_default_provider_precedence(home: Path, cwd: Path) -> None:
    # package default "openai" has no key: the first configured provider
    settings = load(home, cwd, **TWO)
    assert settings.default_provider == "first"
    # with a key, the package default applies
    assert load(home, cwd, **TWO, OPENAI_API_KEY="k").default_provider == "openai"
    user_toml(home, 'default-provider = "second"\n')
    assert load(home, cwd, **TWO, OPENAI_API_KEY="k").default_provider == "second"
    (cwd / "vdm.toml").write_text('default-provider = "third"\n')
    settings = load(home, cwd, **TWO, OPENAI_API_KEY="k")
    assert settings.default_provider == "third"
    assert str(cwd / "vdm.toml") in settings.default_provider_source
    settings = load(home, cwd, **TWO, VDM_DEFAULT_PROVIDER="First")
    assert settings.default_provider == "first"
    assert settings.default_provider_source == "env VDM_DEFAULT_PROVIDER"


@pytest.mark.parametrize("where", ["env", "user", "local"])
def test_explicit_default_must_be_configured(home: Path, cwd: Path, where: str) -> None:
    env = dict(TWO)
    if where == "env":
        env["VDM_DEFAULT_PROVIDER"] = "groq"
    elif where == "user":
        user_toml(home, 'default-provider = "groq"\n')
    else:
        (cwd / "vdm.toml").write_text('default-provider = "groq"\n')
    message = problems(home, cwd, **env)
    assert "groq" in message and "not configured" in message
    assert "GROQ_API_KEY" in message


def test_no_keys_at_all_means_echo(home: Path, cwd: Path) -> None:
    settings = load(home, cwd)
    assert list(settings.providers) == ["echo"]
    assert settings.default_provider == "echo"
    assert settings.providers["echo"].has_key
    assert settings.aliases["echo"] == {}


def test_echo_may_be_named_as_default(home: Path, cwd: Path) -> None:
    assert load(home, cwd, **TWO, VDM_DEFAULT_PROVIDER="echo").default_provider == "echo"


# ---------------------------------------------------------------- model lists


def test_model_list_settings_defaults_and_overrides(home: Path, cwd: Path) -> None:
    server = load(home, cwd).server
    assert (server.models_cache_ttl, server.models_wait, server.models_prefetch) == (
        600.0,
        2.0,
        True,
    )
    (cwd / "vdm.toml").write_text("[server]\nmodels-cache-ttl = 60\nmodels-prefetch = false\n")
    server = load(home, cwd, MODELS_WAIT="0.5").server
    assert (server.models_cache_ttl, server.models_wait, server.models_prefetch) == (
        60.0,
        0.5,
        False,
    )


def test_bad_model_list_settings_name_their_variables(home: Path, cwd: Path) -> None:
    message = problems(
        home, cwd, MODELS_CACHE_TTL="-1", MODELS_WAIT="soon", MODELS_PREFETCH="maybe"
    )
    assert "MODELS_CACHE_TTL" in message and "MODELS_WAIT" in message
    assert "MODELS_PREFETCH" in message


def test_passthrough_settings(home: Path, cwd: Path) -> None:
    from vdm.allowlist import Rule

    assert load(home, cwd).server.passthrough_allow is None  # the package default list
    assert load(home, cwd).server.max_upload_size == 512 * 1024 * 1024
    (cwd / "vdm.toml").write_text(
        '[server]\npassthrough-allow = ["GET /v1/files", "POST /v1/embeddings"]\n'
        "max-upload-size = 2048\n"
    )
    server = load(home, cwd).server
    assert server.passthrough_allow == (
        Rule(frozenset({"GET"}), "/v1/files"),
        Rule(frozenset({"POST"}), "/v1/embeddings"),
    )
    assert server.max_upload_size == 2048
    assert load(home, cwd, PASSTHROUGH_ALLOW="none").server.passthrough_allow == ()


def test_passthrough_settings_errors_name_their_source(home: Path, cwd: Path) -> None:
    (cwd / "vdm.toml").write_text("[server]\npassthrough-allow = 3\n")
    with pytest.raises(ConfigError) as raised:
        load(home, cwd, MAX_UPLOAD_SIZE="big")
    text = str(raised.value)
    assert "server.passthrough-allow" in text and "MAX_UPLOAD_SIZE" in text
    with pytest.raises(ConfigError, match=r"PASSTHROUGH_ALLOW.*FETCH"):
        load(home, cwd, PASSTHROUGH_ALLOW="FETCH /v1/files")


def test_responses_api_is_native_only_for_openai_by_default(home: Path, cwd: Path) -> None:
    settings = load(
        home,
        cwd,
        OPENAI_API_KEY="k",
        GROQ_API_KEY="k",
        ANT_API_KEY="k",
        ANT_BASE_URL="https://a.example",
        ANT_API_FORMAT="anthropic",
    )
    apis = {n: p.responses_api for n, p in settings.providers.items()}
    assert apis == {"openai": "native", "groq": "convert", "ant": "convert", "echo": "convert"}
    assert (
        load(
            home,
            cwd,
            OPENAI_API_KEY="k",
            OPENAI_RESPONSES_API="convert",
            GROQ_API_KEY="k",
            GROQ_RESPONSES_API="NATIVE",
        )
        .providers["groq"]
        .responses_api
        == "native"
    )


def test_the_default_native_quietly_yields_to_another_format(home: Path, cwd: Path) -> None:
    settings = load(home, cwd, OPENAI_API_KEY="k", OPENAI_BASE_URL="https://r.openai.azure.com")
    assert settings.providers["openai"].api_format == "azure"
    assert settings.providers["openai"].responses_api == "convert"


def test_bad_responses_api_settings_name_their_source(home: Path, cwd: Path) -> None:
    user_toml(
        home,
        '[providers.zz]\napi-key = "k"\nbase-url = "https://z.example"\n'
        'api-format = "anthropic"\nresponses-api = "native"\n',
    )
    with pytest.raises(ConfigError) as raised:
        load(home, cwd, GROQ_API_KEY="k", GROQ_RESPONSES_API="sometimes")
    problems = raised.value.problems
    assert any("GROQ_RESPONSES_API" in p and "'native' or 'convert'" in p for p in problems)
    assert any("providers.zz.responses-api" in p and "OpenAI-format" in p for p in problems)


def test_forward_organization_is_off_unless_set_and_only_for_openai_formats(
    home: Path, cwd: Path
) -> None:
    user_toml(
        home,
        '[providers.own]\napi-key = "k"\nbase-url = "https://o.example/v1"\n'
        "forward-organization = true\n",
    )
    settings = load(
        home, cwd, OPENAI_API_KEY="k", GROQ_API_KEY="k", GROQ_FORWARD_ORGANIZATION="yes"
    )
    forwards = {n: p.forward_organization for n, p in settings.providers.items()}
    assert forwards == {"openai": False, "groq": True, "own": True, "echo": False}
    user_toml(
        home,
        '[providers.zz]\napi-key = "k"\nbase-url = "https://z.example"\n'
        'api-format = "anthropic"\nforward-organization = true\n',
    )
    with pytest.raises(ConfigError) as raised:
        load(home, cwd, GROQ_API_KEY="k", GROQ_FORWARD_ORGANIZATION="sometimes")
    problems = raised.value.problems
    assert any("GROQ_FORWARD_ORGANIZATION" in p and "true or false" in p for p in problems)
    assert any("providers.zz.forward-organization" in p and "OpenAI" in p for p in problems)


def test_structured_output_is_native_but_for_the_providers_known_to_lack_it(
    home: Path, cwd: Path
) -> None:
    settings = load(
        home,
        cwd,
        OPENAI_API_KEY="k",
        DEEPSEEK_API_KEY="k",
        ZAI_API_KEY="k",
        GROQ_API_KEY="k",
        GROQ_STRUCTURED_OUTPUT="Prompt",
    )
    modes = {n: p.structured_output for n, p in settings.providers.items()}
    assert modes == {
        "openai": "native",
        "deepseek": "tool",
        "zai": "tool",
        "groq": "prompt",
        "echo": "native",
    }


def test_a_bad_structured_output_setting_names_its_source(home: Path, cwd: Path) -> None:
    user_toml(
        home,
        '[providers.zz]\napi-key = "k"\nbase-url = "https://z.example"\nstructured-output = "json"\n',
    )
    with pytest.raises(ConfigError) as raised:
        load(home, cwd, GROQ_API_KEY="k", GROQ_STRUCTURED_OUTPUT="grammar")
    problems = raised.value.problems
    assert any(
        "GROQ_STRUCTURED_OUTPUT" in p and "'native', 'tool' or 'prompt'" in p for p in problems
    )
    assert any("providers.zz.structured-output" in p for p in problems)


def test_trusted_proxies_none_by_default_networks_when_named(home: Path, cwd: Path) -> None:
    assert load(home, cwd).server.trusted_proxies == ()
    named = load(home, cwd, TRUSTED_PROXIES="10.1.2.3/8, 192.168.0.7 ,fd00::/8")
    assert named.server.trusted_proxies == ("10.0.0.0/8", "192.168.0.7/32", "fd00::/8")
    (cwd / "vdm.toml").write_text('[server]\ntrusted-proxies = ["127.0.0.1"]\n')
    assert load(home, cwd).server.trusted_proxies == ("127.0.0.1/32",)
    text = problems(home, cwd, TRUSTED_PROXIES="10.0.0.0/8, *")
    assert "TRUSTED_PROXIES" in text and "'*' is not an IP address" in text


# ---------------------------------------------------------------- upstream connections


def test_upstream_connections_default_to_1024_for_every_provider(home: Path, cwd: Path) -> None:
    settings = load(home, cwd, OA_API_KEY="k", OA_BASE_URL="http://127.0.0.1:1/v1")
    assert settings.server.upstream_max_connections == 1024
    assert settings.providers["oa"].max_connections is None  # the server's


def test_upstream_connections_server_wide_and_per_provider(home: Path, cwd: Path) -> None:
    (cwd / "vdm.toml").write_text(
        "[server]\nupstream-max-connections = 64\n"
        '[providers.oa]\nbase-url = "http://127.0.0.1:1/v1"\nmax-connections = 8\n'
    )
    settings = load(home, cwd, OA_API_KEY="k", OTHER_API_KEY="k", OTHER_BASE_URL="http://h/v1")
    assert settings.server.upstream_max_connections == 64
    assert settings.providers["oa"].max_connections == 8
    assert settings.providers["other"].max_connections is None
    env = load(
        home,
        cwd,
        OA_API_KEY="k",
        OA_MAX_CONNECTIONS="3",
        UPSTREAM_MAX_CONNECTIONS="5",
    )
    assert (env.server.upstream_max_connections, env.providers["oa"].max_connections) == (5, 3)


@pytest.mark.parametrize("value", ["0", "-4", "many", "60001"])
def test_bad_upstream_connections_name_their_variable(home: Path, cwd: Path, value: str) -> None:
    message = problems(home, cwd, UPSTREAM_MAX_CONNECTIONS=value)
    assert "UPSTREAM_MAX_CONNECTIONS" in message and "between 1 and 60000" in message
    message = problems(
        home, cwd, OA_API_KEY="k", OA_BASE_URL="http://127.0.0.1:1/v1", OA_MAX_CONNECTIONS=value
    )
    assert "OA_MAX_CONNECTIONS" in message


def test_bad_provider_connections_in_toml_name_file_and_key(home: Path, cwd: Path) -> None:
    path = cwd / "vdm.toml"
    path.write_text('[providers.oa]\nbase-url = "http://127.0.0.1:1/v1"\nmax-connections = 0\n')
    message = problems(home, cwd, OA_API_KEY="k")
    assert str(path) in message and "providers.oa.max-connections" in message


def test_loading_the_settings_imports_none_of_the_parts_they_configure(tmp_path: Path) -> None:
    """The settings sit below what they configure (pyproject.toml's layers): reading
    them, middleware and passthrough allowlist included, loads no door, pipeline,
    provider, middleware or codec."""
    code = (
        "import sys\n"
        "from vdm.config import load_settings\n"
        f"load_settings(env={{'HOME': {str(tmp_path)!r}, 'MIDDLEWARE': 'request-log',"
        " 'PASSTHROUGH_ALLOW': 'default'})\n"
        "print(' '.join(sorted(m for m in sys.modules if m.startswith('vdm.'))))\n"
    )
    loaded = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, check=True
    ).stdout.split()
    above = ("vdm.middleware", "vdm.passthrough", "vdm.pipeline", "vdm.providers", "vdm.protocols")
    assert "vdm.config" in loaded
    assert [m for m in loaded if m.startswith(above)] == []
