"""*Who we call* for the OpenAI wire family: URLs, the auth header, the model
name the body carries.  Data and a few lines of URL building; how we speak
(the Chat Completions wire) stays in :mod:`vdm.providers.openai`.

* :class:`OpenAIEndpoint` — ``{base}/chat/completions``, ``Authorization: Bearer``.
* :class:`AzureEndpoint` — Azure OpenAI, ``api-key`` header, in one of two forms:

  - deployment URLs (base ``https://RESOURCE.openai.azure.com``):
    ``{base}/openai/deployments/{deployment}/chat/completions?api-version=V``;
  - the v1 API (base ending in ``/openai/v1``): ``{base}/chat/completions``
    with the deployment name as the body's ``model``, no ``api-version``.

  The deployment is the configured one for the model, else the model name
  itself (Azure's own habit of naming deployments after their models).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Protocol
from urllib.parse import quote

from vdm.config import AZURE, AZURE_DEFAULT_API_VERSION, AZURE_DEPLOYMENT_NAME, ProviderSettings
from vdm.errors import InvalidRequest


class Endpoint(Protocol):
    auth_header: str  # lower-case header name
    auth_scheme: str  # prefix of the key in that header ("Bearer " or "")
    models_url: str | None  # where the upstream lists its models; None: use configured_models
    configured_models: tuple[str, ...]  # what to list when there is no models_url

    def chat_url(self, model: str) -> str: ...

    def body_model(self, model: str) -> str: ...


class OpenAIEndpoint:
    auth_header = "authorization"
    auth_scheme = "Bearer "
    configured_models: tuple[str, ...] = ()

    def __init__(self, base_url: str) -> None:
        self._chat_url = base_url + "/chat/completions"
        self.models_url: str | None = base_url + "/models"

    def chat_url(self, model: str) -> str:
        return self._chat_url

    def body_model(self, model: str) -> str:
        return model


class AzureEndpoint:
    """Azure OpenAI.  Its listing endpoints (``/openai/models``) name base
    models, not deployments, so there is no ``models_url``: the configured
    deployments are what clients can call (:attr:`configured_models`)."""

    auth_header = "api-key"
    auth_scheme = ""
    models_url: str | None = None

    def __init__(self, base_url: str, api_version: str, deployments: Mapping[str, str]) -> None:
        self.deployments = dict(deployments)
        self.configured_models = tuple(self.deployments)
        self.v1 = base_url.endswith("/openai/v1")
        if self.v1:
            self._chat_url = base_url + "/chat/completions"
        else:
            root = base_url.removesuffix("/openai")
            self._prefix = root + "/openai/deployments/"
            self._suffix = "/chat/completions?api-version=" + quote(api_version, safe="")
            # URLs of the configured deployments, built once.
            self._urls = {m: self._url(d) for m, d in self.deployments.items()}

    def _url(self, deployment: str) -> str:
        return self._prefix + deployment + self._suffix

    def deployment(self, model: str) -> str:
        deployment = self.deployments.get(model)
        if deployment is not None:
            return deployment
        if not AZURE_DEPLOYMENT_NAME.match(model):
            # It would go into the URL path: refuse rather than escape it into
            # something that names no deployment.
            raise InvalidRequest(
                f"model '{model}' has no configured Azure deployment and is not a valid "
                "deployment name (letters, digits, '-', '_', '.')"
            )
        return model

    def chat_url(self, model: str) -> str:
        if self.v1:
            return self._chat_url
        url = self._urls.get(model)
        return url if url is not None else self._url(self.deployment(model))

    def body_model(self, model: str) -> str:
        # The v1 API names the deployment in the body; deployment URLs ignore it.
        return self.deployment(model) if self.v1 else model


def endpoint_for(settings: ProviderSettings) -> OpenAIEndpoint | AzureEndpoint:
    if settings.api_format == AZURE:
        return AzureEndpoint(
            settings.base_url,
            settings.api_version or AZURE_DEFAULT_API_VERSION,
            settings.deployments,
        )
    return OpenAIEndpoint(settings.base_url)
