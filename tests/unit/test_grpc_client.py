"""Proxy URLs and version compatibility of the LLMProxy client (vdm.grpc.client)."""

from __future__ import annotations

import pytest

from vdm.grpc.client import ProxyURL, compatibility, parse_url, parse_version


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("vibectl-server://host.example:443", ProxyURL("host.example", 443, True)),
        ("vibectl-server://tok.en.jwt@host:8443", ProxyURL("host", 8443, True, "tok.en.jwt")),
        ("vibectl-server-insecure://localhost", ProxyURL("localhost", 50051, False)),
        ("vibectl-server-insecure://t@127.0.0.1:50051/", ProxyURL("127.0.0.1", 50051, False, "t")),
        ("vibectl-server://[::1]:9000", ProxyURL("::1", 9000, True)),
    ],
)
def test_parse_url(url: str, expected: ProxyURL) -> None:
    assert parse_url(url) == expected


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("http://host:1", "vibectl-server://"),
        ("vibectl-server://", "no host"),
        ("vibectl-server://host:99999", "port"),
        ("vibectl-server://host:1/path", "only scheme"),
    ],
)
def test_parse_url_refuses(url: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_url(url)


def test_redacted_hides_the_token() -> None:
    url = parse_url("vibectl-server://secret.jwt@h:1")
    assert url.redacted() == "vibectl-server://***@h:1"
    assert parse_url("vibectl-server://[::1]:2").target == "[::1]:2"


def test_versions() -> None:
    assert parse_version("1.2.3") == (1, 2, 3)
    assert parse_version("v0.1") == (0, 1, 0)
    assert parse_version("0.1.0+source") == (0, 1, 0)
    with pytest.raises(ValueError):
        parse_version("abc")


@pytest.mark.parametrize(
    ("client", "server", "verdict"),
    [
        ("1.2.3", "1.2.9", "ok"),
        ("1.2.3", "1.3.0", "warn"),
        ("1.2.3", "2.0.0", "refuse"),
        ("2.0.0", "1.9.9", "refuse"),
        ("1.0.0", "garbage", "warn"),
    ],
)
def test_compatibility(client: str, server: str, verdict: str) -> None:
    got, message = compatibility(client, server)
    assert got == verdict
    if verdict == "refuse":
        assert message is not None and "upgrade the" in message
