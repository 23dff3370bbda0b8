"""Model profiles: the `VECHE_LLM_*` defaults with each purpose's overrides applied."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TypeVar

from pydantic import SecretStr

from veche.settings import LLMProviderName, Settings

LOCAL_CHAT_MODEL = "smollm2-135m-instruct"
DEFAULT_PURPOSE = "default"
_T = TypeVar("_T")
PURPOSE = re.compile(r"^[a-z][a-z0-9_.-]{0,63}$")


@dataclass(frozen=True, slots=True)
class ResolvedProfile:
    purpose: str
    provider: LLMProviderName
    model: str
    base_url: str | None
    api_key: SecretStr | None
    temperature: float
    max_tokens: int
    timeout_seconds: float

    @property
    def connection(self) -> tuple[str, str | None, str | None]:
        """Profiles that share this can share one provider client."""
        key = self.api_key.get_secret_value() if self.api_key else None
        return (self.provider, self.base_url, key)


def resolve(settings: Settings, purpose: str) -> ResolvedProfile:
    """The profile for `purpose`: its overrides over the defaults (any purpose is valid)."""
    if not PURPOSE.match(purpose):
        raise ValueError(f"{purpose!r} is not a purpose name (lowercase, digits, . _ -)")
    ai = settings.ai
    override = ai.profiles.get(purpose)
    provider = (override.provider if override else None) or settings.llm_provider
    # A purpose that switches provider does not inherit the other provider's endpoint.
    inherits = override is None or override.provider in (None, settings.llm_provider)
    base_url = override.base_url if override and override.base_url else None
    api_key = override.api_key if override and override.api_key else None
    model = override.model if override and override.model else None
    if inherits:
        # The default key goes only to the default endpoint: a purpose that names its own
        # server must name its own key too.
        if base_url is None:
            api_key = api_key or settings.llm_api_key
        base_url = base_url or settings.llm_base_url
        model = model or settings.llm_model
    if model is None and provider == "local":
        model = LOCAL_CHAT_MODEL
    return ResolvedProfile(
        purpose=purpose,
        provider=provider,
        model=model or "",
        base_url=base_url,
        api_key=api_key,
        temperature=_pick(override.temperature if override else None, ai.temperature),
        max_tokens=_pick(override.max_tokens if override else None, ai.max_tokens),
        timeout_seconds=_pick(override.timeout_seconds if override else None, ai.timeout_seconds),
    )


def _pick(value: _T | None, default: _T) -> _T:
    return default if value is None else value


def configured_purposes(settings: Settings) -> list[str]:
    return [DEFAULT_PURPOSE, *sorted(p for p in settings.ai.profiles if p != DEFAULT_PURPOSE)]


def profile_problems(settings: Settings) -> list[str]:
    """Misconfiguration found without calling any provider, one line each."""
    problems: list[str] = []
    for name in settings.ai.profiles:
        if not PURPOSE.match(name):
            problems.append(f"VECHE_AI__PROFILES: {name!r} is not a purpose name")
    for purpose in configured_purposes(settings):
        if not PURPOSE.match(purpose):
            continue
        profile = resolve(settings, purpose)
        where = "VECHE_LLM_*" if purpose == DEFAULT_PURPOSE else f"profile {purpose!r}"
        if profile.provider == "openai":
            if not profile.model:
                problems.append(f"{where}: the openai provider needs a model (VECHE_LLM_MODEL)")
            if not profile.base_url and not profile.api_key:
                problems.append(
                    f"{where}: the openai provider needs VECHE_LLM_BASE_URL (a compatible "
                    "server) or VECHE_LLM_API_KEY (api.openai.com)"
                )
        elif profile.model != LOCAL_CHAT_MODEL:
            problems.append(
                f"{where}: the local provider only runs {LOCAL_CHAT_MODEL!r}, not {profile.model!r}"
            )
    return problems
