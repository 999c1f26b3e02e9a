"""Endpoint data for the OpenAI wire family: URLs, auth header, body model;
Azure host detection."""

from __future__ import annotations

from pathlib import Path

import pytest

from vdm.config import is_azure_host, load_settings
from vdm.errors import InvalidRequest
from vdm.providers.endpoints import AzureEndpoint, OpenAIEndpoint


def test_openai_endpoint() -> None:
    endpoint = OpenAIEndpoint("https://api.example/v1")
    assert endpoint.chat_url("gpt-4o") == "https://api.example/v1/chat/completions"
    assert endpoint.models_url == "https://api.example/v1/models"
    assert endpoint.body_model("gpt-4o") == "gpt-4o"
    assert (endpoint.auth_header, endpoint.auth_scheme) == ("authorization", "Bearer ")


@pytest.mark.parametrize(
    "base", ["https://r.openai.azure.com", "https://r.openai.azure.com/openai"]
)
def test_azure_deployment_urls(base: str) -> None:
    endpoint = AzureEndpoint(base, "2024-10-21", {"gpt-4o": "prod-4o"})
    assert endpoint.chat_url("gpt-4o") == (
        "https://r.openai.azure.com/openai/deployments/prod-4o/chat/completions"
        "?api-version=2024-10-21"
    )
    # unmapped: the model name is the deployment
    assert endpoint.chat_url("gpt-4.1-mini").startswith(
        "https://r.openai.azure.com/openai/deployments/gpt-4.1-mini/chat/completions?"
    )
    assert endpoint.body_model("gpt-4o") == "gpt-4o"  # the URL names the deployment
    assert (endpoint.auth_header, endpoint.auth_scheme) == ("api-key", "")
    assert endpoint.models_url is None and endpoint.configured_models == ("gpt-4o",)


def test_azure_v1_urls() -> None:
    endpoint = AzureEndpoint("https://r.openai.azure.com/openai/v1", "ignored", {"gpt-4o": "d"})
    assert endpoint.v1
    assert endpoint.chat_url("anything") == "https://r.openai.azure.com/openai/v1/chat/completions"
    assert endpoint.body_model("gpt-4o") == "d"
    assert endpoint.body_model("other") == "other"


@pytest.mark.parametrize("model", ["..", ".", "a/b", "a?b", "a b", "x" * 65, "é"])
def test_azure_refuses_models_that_are_no_deployment_name(model: str) -> None:
    endpoint = AzureEndpoint("https://r.openai.azure.com", "v", {})
    with pytest.raises(InvalidRequest):
        endpoint.chat_url(model)
    with pytest.raises(InvalidRequest):
        AzureEndpoint("https://r.openai.azure.com/openai/v1", "v", {}).body_model(model)


@pytest.mark.parametrize(
    ("host", "azure"),
    [
        ("myres.openai.azure.com", True),
        ("MyRes.OpenAI.Azure.com", True),
        ("myres.cognitiveservices.azure.com", True),
        ("myres.services.ai.azure.com", True),
        ("openai.azure.com.evil.example", False),
        ("api.openai.com", False),
        ("azure.com", False),
    ],
)
def test_azure_host_detection(host: str, azure: bool) -> None:
    assert is_azure_host(host) is azure


def test_an_azure_host_makes_an_openai_format_provider_azure(tmp_path: Path) -> None:
    env = {
        "HOME": str(tmp_path),
        "FOO_API_KEY": "k",
        "FOO_BASE_URL": "https://r.openai.azure.com",
        "BAR_API_KEY": "k",
        "BAR_BASE_URL": "https://r.openai.azure.com/openai/v1",
        "BAR_API_FORMAT": "openai",
    }  # an explicit format is respected
    providers = load_settings(env, cwd=tmp_path).providers
    assert providers["foo"].api_format == "azure"
    assert providers["foo"].api_version == "2024-10-21"
    assert providers["bar"].api_format == "openai"
