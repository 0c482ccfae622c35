"""Model specs as people type them — ``offline``, ``openai:gpt-4o-mini``, ``anthropic:claude-…`` — to
configs, for ``accord serve --model`` and for an agent's own ``model`` field.

One Model instance per spec is kept (``ModelPool``), so every run of every agent on the same spec shares
one SDK client and its connection pool instead of opening a new one per run.
"""

from __future__ import annotations

from dataclasses import dataclass

from ...model.errors import InvalidInput
from .base import Model, ModelConfig
from .offline import OfflineConfig

PROVIDERS = ("offline", "openai", "anthropic")


def check_spec(spec: str) -> str:
    provider, _, name = spec.partition(":")
    if provider not in PROVIDERS or (provider != "offline" and not name) or (provider == "offline" and name):
        raise InvalidInput(f"a model is 'offline', 'openai:<model>' or 'anthropic:<model>', not {spec!r}")
    return spec


@dataclass(frozen=True, slots=True)
class Endpoint:
    """Where a provider is reached (``--base-url``) and with which key (``--api-key`` or its env var)."""

    base_url: str | None = None
    api_key: str | None = None


def config_for(spec: str, endpoint: Endpoint = Endpoint()) -> ModelConfig:
    provider, _, name = check_spec(spec).partition(":")
    if provider == "offline":
        return OfflineConfig()
    if provider == "openai":
        from .openai import OpenAIConfig

        return OpenAIConfig(name, base_url=endpoint.base_url, api_key=endpoint.api_key)
    from .anthropic import AnthropicConfig

    return AnthropicConfig(name, base_url=endpoint.base_url, api_key=endpoint.api_key)


class _Ready:
    """A config whose ``create`` hands out one already-made model."""

    def __init__(self, model: Model) -> None:
        self.model = model

    def create(self) -> Model:
        return self.model


class ModelPool:
    """``pool.config(spec)`` for the worker: the server's default spec, or an agent's own."""

    def __init__(self, default: str = "offline", endpoint: Endpoint = Endpoint()) -> None:
        self.default = check_spec(default)
        self.endpoint = endpoint
        self._models: dict[str, Model] = {}

    def config(self, spec: str | None) -> ModelConfig:
        spec = spec or self.default
        model = self._models.get(spec)
        if model is None:
            model = self._models[spec] = config_for(spec, self.endpoint).create()
        return _Ready(model)
