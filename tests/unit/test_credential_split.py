"""Unit tests: which credential is the gateway's, which may go to a !PASSTHRU provider."""

from __future__ import annotations

from vdm.auth.proxy_key import ProxyKey, presented_key
from vdm.auth.split import CredentialSplit
from vdm.doors import KEY_HEADERS

PROXY = ProxyKey("proxy-secret")
MGMT = ProxyKey("mgmt-secret-0123456789")
JWT = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJ4In0.sig"


def headers(api_key: str | None = None, bearer: str | None = None) -> dict[str, str]:
    out = {}
    if api_key is not None:
        out["x-api-key"] = api_key
    if bearer is not None:
        out["authorization"] = f"Bearer {bearer}"
    return out


def test_checked_gateway_the_other_credential_goes() -> None:
    split = CredentialSplit(
        (PROXY, MGMT), key_headers=KEY_HEADERS, checks=True, tokens=True, jwts=True
    )
    assert split.gateway(headers("proxy-secret", "sk-p")) == "proxy-secret"
    assert split.provider(headers("proxy-secret", "sk-p")) == "sk-p"
    assert split.gateway(headers("sk-p", "proxy-secret")) == "proxy-secret"  # the reverse
    assert split.provider(headers("sk-p", "proxy-secret")) == "sk-p"
    assert split.provider(headers("sk-vdm-abc", "sk-p")) == "sk-p"
    assert split.provider(headers("sk-p", JWT)) == "sk-p"
    for alone in (headers("proxy-secret"), headers(bearer="proxy-secret"), headers(JWT, JWT)):
        assert split.provider(alone) is None
    # never a gateway credential of another kind as the "other" one
    assert split.provider(headers("proxy-secret", "mgmt-secret-0123456789")) is None
    assert split.provider(headers("proxy-secret", "sk-vdm-x")) is None
    assert split.provider(headers("sk-vdm-x", JWT)) is None
    # an unknown pair: the first is what the check refuses; the other is not handed on
    assert split.gateway(headers("wrong", "sk-p")) == "wrong"


def test_open_gateway_the_clients_key_goes_but_never_ours() -> None:
    split = CredentialSplit((MGMT,), key_headers=KEY_HEADERS, checks=False)
    assert split.provider(headers("sk-p")) == "sk-p"
    assert split.provider(headers(bearer="sk-p")) == "sk-p"
    assert split.provider(headers("mgmt-secret-0123456789")) is None
    assert split.provider(headers("mgmt-secret-0123456789", "sk-p")) == "sk-p"
    assert split.provider(headers("sk-vdm-x")) is None
    assert split.provider(headers(JWT)) == JWT  # JWTs are not the gateway's here


def test_every_doors_key_header_is_read_and_split_alike() -> None:
    """A door that declares its own key header (Gemini's ``x-goog-api-key``)
    is read in the doors' order, the bearer last, under the same rule."""
    split = CredentialSplit(
        (PROXY,), key_headers=("x-api-key", "x-goog-api-key"), checks=True, tokens=True
    )
    goog = {"x-goog-api-key": "proxy-secret", "authorization": "Bearer sk-p"}
    assert split.gateway(goog) == "proxy-secret"
    assert split.provider(goog) == "sk-p"
    assert split.provider({"x-goog-api-key": "sk-p", "authorization": "Bearer proxy-secret"}) == (
        "sk-p"
    )
    assert split.provider({"x-api-key": "proxy-secret", "x-goog-api-key": "sk-vdm-x"}) is None
    assert presented_key({"x-goog-api-key": "k"}, ("x-api-key", "x-goog-api-key")) == "k"
    assert presented_key({"x-goog-api-key": "k"}, ("x-api-key",)) is None
