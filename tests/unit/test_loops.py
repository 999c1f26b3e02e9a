"""vdm.loops: which base URLs are the gateway's own address, hop ids, messages."""

from __future__ import annotations

import socket

import pytest

from vdm import loops


@pytest.mark.parametrize(
    ("url", "host", "port"),
    [
        ("http://127.0.0.1:8082", "127.0.0.1", 8082),
        ("http://localhost:8082/v1", "127.0.0.1", 8082),
        ("http://[::1]:8082", "127.0.0.1", 8082),
        ("http://0.0.0.0:8082", "127.0.0.1", 8082),
        ("http://127.0.0.1:8082", "0.0.0.0", 8082),
        ("http://localhost:8082", "::", 8082),
        ("http://127.0.0.1:8082", "localhost", 8082),
        ("http://10.1.2.3:8082", "10.1.2.3", 8082),
        ("http://127.0.0.1", "127.0.0.1", 80),
        ("https://localhost", "127.0.0.1", 443),
        (f"http://{socket.gethostname()}:8082", "0.0.0.0", 8082),
    ],
)
def test_own_address(url: str, host: str, port: int) -> None:
    assert loops.is_own_address(url, host, port)


@pytest.mark.parametrize(
    ("url", "host", "port"),
    [
        ("http://127.0.0.1:8083", "127.0.0.1", 8082),
        ("https://api.anthropic.com", "127.0.0.1", 8082),
        ("http://10.1.2.3:8082", "127.0.0.1", 8082),  # another host
        ("http://localhost:8082", "10.1.2.3", 8082),  # bound elsewhere: not loopback
        ("http://127.0.0.1:99999", "127.0.0.1", 8082),  # not a port
    ],
)
def test_not_own_address(url: str, host: str, port: int) -> None:
    assert not loops.is_own_address(url, host, port)


def test_gateway_id_depends_on_the_provider_table_only() -> None:
    a = loops.gateway_id([("openai", "https://x/v1"), ("echo", "builtin:echo")])
    b = loops.gateway_id([("echo", "builtin:echo"), ("openai", "https://x/v1")])
    c = loops.gateway_id([("openai", "https://y/v1"), ("echo", "builtin:echo")])
    assert a == b != c


def test_hop_header_round_trip() -> None:
    value = loops.hop_value("abc", "anthropic")
    assert loops.looped_provider(value, "abc") == "anthropic"
    assert loops.looped_provider(value, "other") is None
    assert loops.looped_provider("garbage", "abc") is None


def test_message_names_the_setting() -> None:
    env = loops.loop_message("anthropic", "http://x", "env ANTHROPIC_BASE_URL", "https://a")
    assert "ANTHROPIC_BASE_URL" in env and "https://a" in env
    dotenv = loops.loop_message("openai", "http://x", "/w/.env: OPENAI_BASE_URL", None)
    assert "OPENAI_BASE_URL (in /w/.env)" in dotenv
    toml = loops.loop_message("mine", "http://x", "/w/vdm.toml", None)
    assert "base-url under [providers.mine] in /w/vdm.toml" in toml
