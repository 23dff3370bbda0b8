"""The orchestrator's planning, as pure functions: the plan the planner model must return
(`PlanDraft`), its validation into an executable `Plan` (no missing or cyclic dependencies,
waves of steps that can run at once, one of the user's agents on every step), the cost and
time a plan will take, the cache key of a request's plan, the choice between running a
message on one agent and orchestrating it, and the planner's prompt. Nothing here reads the
database, the network or the clock, so the orchestrator can call it anywhere and tests need
no fixtures."""

from veche.apps.agents.planning.estimates import (
    DEFAULT_COMPLETION_TOKENS,
    DEFAULT_PROMPT_TOKENS,
    DEFAULT_STEP_MS,
    Estimate,
    Price,
    approximate_tokens,
    estimate,
)
from veche.apps.agents.planning.matching import AgentCard, Route, choose_agent, route
from veche.apps.agents.planning.plans import (
    MAX_PLAN_TASKS,
    MAX_TASK_DESCRIPTION,
    TASK_ID_PATTERN,
    Plan,
    PlanDraft,
    PlanInvalid,
    PlannedTask,
    PlanProblem,
    PlanStep,
    validate,
    waves,
)
from veche.apps.agents.planning.prompt import normalize_request, plan_cache_key, planner_messages

__all__ = [
    "DEFAULT_COMPLETION_TOKENS",
    "DEFAULT_PROMPT_TOKENS",
    "DEFAULT_STEP_MS",
    "MAX_PLAN_TASKS",
    "MAX_TASK_DESCRIPTION",
    "TASK_ID_PATTERN",
    "AgentCard",
    "Estimate",
    "Plan",
    "PlanDraft",
    "PlanInvalid",
    "PlanProblem",
    "PlanStep",
    "PlannedTask",
    "Price",
    "Route",
    "approximate_tokens",
    "choose_agent",
    "estimate",
    "normalize_request",
    "plan_cache_key",
    "planner_messages",
    "route",
    "validate",
    "waves",
]
