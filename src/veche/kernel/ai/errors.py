"""The AI services' expected failures, each with its status and stable code.

Provider details (URLs, keys, raw bodies) never reach the problem: the log has the cause.
"""

from __future__ import annotations

from veche.kernel.errors import ProblemError


class AIError(ProblemError):
    status = 502
    code = "ai_error"
    title = "The AI service failed"


class ProviderUnavailable(AIError):
    """Retries ran out, or the circuit breaker is open and fails fast."""

    status = 503
    code = "ai_provider_unavailable"
    title = "The AI provider is unavailable"


class ProviderTimeout(AIError):
    status = 504
    code = "ai_provider_timeout"
    title = "The AI provider did not answer in time"


class ProviderRejected(AIError):
    """The provider refused the request itself (bad model name, context too long...)."""

    status = 502
    code = "ai_provider_rejected"
    title = "The AI provider rejected the request"


class InvalidModelOutput(AIError):
    """Structured output stayed invalid after the repair attempt."""

    status = 502
    code = "ai_invalid_output"
    title = "The model's answer did not match the expected structure"


class ModelNotInstalled(AIError):
    status = 503
    code = "ai_model_not_installed"
    title = "The local model is not installed"


class BudgetExceeded(ProblemError):
    status = 429
    code = "ai_budget_exceeded"
    title = "Daily AI token budget used up"
