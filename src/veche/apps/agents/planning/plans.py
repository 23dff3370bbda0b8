"""The plan the planner model must return (`PlanDraft`) and its validation into an
executable `Plan`: no missing or cyclic dependencies, waves of steps that can run at once,
one of the user's agents on every step."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from difflib import SequenceMatcher
from typing import Annotated, Literal, Protocol

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from veche.apps.agents.planning.matching import (
    AgentCard,
    capability_score,
    choose_agent,
    words_of,
)

MAX_PLAN_TASKS = 20
MAX_TASK_DESCRIPTION = 4000
TASK_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_-]{0,31}$"

TaskId = Annotated[str, StringConstraints(pattern=TASK_ID_PATTERN)]
TaskDescription = Annotated[
    str, StringConstraints(strip_whitespace=True, min_length=1, max_length=MAX_TASK_DESCRIPTION)
]

PlanProblem = Literal[
    "agents.plan_empty",
    "agents.plan_too_large",
    "agents.plan_duplicate_task",
    "agents.plan_unknown_agent",
    "agents.plan_missing_dependency",
    "agents.plan_cycle",
    "agents.plan_self_dependency",
]


# -- what the planner model returns -------------------------------------------------------


class PlannedTask(BaseModel):
    model_config = ConfigDict(extra="forbid")

    id: str = Field(pattern=TASK_ID_PATTERN, description="Short id unique in the plan, e.g. t1")
    description: TaskDescription = Field(
        description="A complete instruction for the agent that runs this task"
    )
    agent: str | None = Field(
        default=None, description="The name of the agent to run it, one of the listed agents"
    )
    depends_on: list[TaskId] = Field(
        default_factory=list,
        max_length=MAX_PLAN_TASKS,
        description="Ids of the tasks whose results this task needs",
    )


class PlanDraft(BaseModel):
    model_config = ConfigDict(extra="forbid")

    tasks: list[PlannedTask] = Field(min_length=1, max_length=MAX_PLAN_TASKS)


# -- a validated plan ---------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class PlanStep:
    """A validated task. `assigned_by` is "capabilities" when planning replaced the model's
    choice of agent, and `note` then says why."""

    id: str
    description: str
    agent: AgentCard
    depends_on: tuple[str, ...]
    assigned_by: Literal["model", "capabilities"]
    note: str | None


@dataclass(frozen=True, slots=True)
class Plan:
    """Steps in the draft's order; `waves` are topological layers, so every step's
    dependencies are in earlier waves and a wave's steps can run at once."""

    steps: tuple[PlanStep, ...]
    waves: tuple[tuple[str, ...], ...]

    def step(self, step_id: str) -> PlanStep:
        """The step with this id; KeyError when the plan has none."""
        for step in self.steps:
            if step.id == step_id:
                return step
        raise KeyError(step_id)

    def dependents(self, step_id: str) -> set[str]:
        """Every step that needs this one's result, directly or through other steps: what to
        skip when it fails. KeyError for an unknown id."""
        self.step(step_id)
        found: set[str] = set()
        frontier = [step_id]
        while frontier:
            needed = frontier.pop()
            for step in self.steps:
                if needed in step.depends_on and step.id not in found:
                    found.add(step.id)
                    frontier.append(step.id)
        return found


class PlanInvalid(Exception):
    """A draft that cannot run. `cycle` holds the ids of a dependency cycle, each task
    depending on the next, the first repeated at the end."""

    def __init__(
        self, code: PlanProblem, detail: str, *, cycle: tuple[str, ...] | None = None
    ) -> None:
        super().__init__(detail)
        self.code: PlanProblem = code
        self.detail = detail
        self.cycle = cycle


def validate(draft: PlanDraft, agents: Sequence[AgentCard]) -> Plan:
    """The draft as a plan, or PlanInvalid for the first problem in this order: size,
    duplicate ids, self dependency, missing dependency, cycle, agents.

    A task keeps the agent the model named unless that agent declares capabilities and
    another agent's capabilities match the task strictly better. A task naming no agent or
    an unknown one gets the best match by `choose_agent`, or, when nothing matches, the
    agent closest to the name the model gave. Only a user without agents is refused.
    """
    tasks = draft.tasks
    _check_structure(tasks)
    layers, stuck = _layers(tasks)
    if stuck:
        cycle = _find_cycle(tasks, stuck)
        raise PlanInvalid(
            "agents.plan_cycle",
            f"tasks depend on each other in a cycle: {' -> '.join(cycle)} (each needs the next)",
            cycle=cycle,
        )
    if not agents:
        first = tasks[0]
        named = f"names agent {first.agent[:64]!r}" if first.agent else "names no agent"
        raise PlanInvalid(
            "agents.plan_unknown_agent",
            f"task {first.id!r} {named}, and there are no agents to run it",
        )
    by_name = {agent.name: agent for agent in agents}
    steps = tuple(_assign(task, agents, by_name) for task in tasks)
    return Plan(steps=steps, waves=layers)


def _check_structure(tasks: Sequence[PlannedTask]) -> None:
    # Pydantic refuses these sizes when the draft is parsed; a draft built without
    # validation (`model_construct`) must not get past them either.
    if not tasks:
        raise PlanInvalid("agents.plan_empty", "the plan has no tasks")
    if len(tasks) > MAX_PLAN_TASKS:
        raise PlanInvalid(
            "agents.plan_too_large",
            f"the plan has {len(tasks)} tasks; at most {MAX_PLAN_TASKS} are allowed",
        )
    ids: set[str] = set()
    for task in tasks:
        if task.id in ids:
            raise PlanInvalid("agents.plan_duplicate_task", f"two tasks have the id {task.id!r}")
        ids.add(task.id)
    for task in tasks:
        if task.id in task.depends_on:
            raise PlanInvalid("agents.plan_self_dependency", f"task {task.id!r} depends on itself")
    for task in tasks:
        for needed in task.depends_on:
            if needed not in ids:
                raise PlanInvalid(
                    "agents.plan_missing_dependency",
                    f"task {task.id!r} depends on {needed!r}, which is not in the plan",
                )


class _Dependent(Protocol):
    @property
    def id(self) -> str: ...

    @property
    def depends_on(self) -> Sequence[str]: ...


def waves(steps: Sequence[PlanStep] | Sequence[PlannedTask]) -> tuple[tuple[str, ...], ...]:
    """Kahn layering: the first wave holds the steps that need nothing, each next one the
    steps whose dependencies are all in earlier waves; ids in draft order. ValueError when
    some step waits on an id that is missing or on a cycle."""
    layers, stuck = _layers(steps)
    if stuck:
        raise ValueError(f"steps {', '.join(stuck)} wait on missing or cyclic dependencies")
    return layers


def _layers(
    tasks: Sequence[_Dependent],
) -> tuple[tuple[tuple[str, ...], ...], list[str]]:
    """The waves that can be built, and the ids (in draft order) that never become ready."""
    layers: list[tuple[str, ...]] = []
    placed: set[str] = set()
    remaining = list(tasks)
    while remaining:
        ready = tuple(
            task.id for task in remaining if all(needed in placed for needed in task.depends_on)
        )
        if not ready:
            break
        layers.append(ready)
        placed.update(ready)
        remaining = [task for task in remaining if task.id not in placed]
    return tuple(layers), [task.id for task in remaining]


def _find_cycle(tasks: Sequence[PlannedTask], stuck: Sequence[str]) -> tuple[str, ...]:
    """One cycle among the tasks layering could not place, starting at its task that comes
    first in the draft and repeating it at the end.

    Every stuck task depends on at least one stuck task, so following each one's first
    stuck dependency must come back to a task already seen: that loop is a real cycle, and
    the walk is the same for the same draft.
    """
    stuck_ids = set(stuck)
    position = {task.id: index for index, task in enumerate(tasks)}
    next_stuck = {
        task.id: next(needed for needed in task.depends_on if needed in stuck_ids)
        for task in tasks
        if task.id in stuck_ids
    }
    walk = [stuck[0]]
    seen = {stuck[0]: 0}
    while (following := next_stuck[walk[-1]]) not in seen:
        seen[following] = len(walk)
        walk.append(following)
    loop = walk[seen[following] :]
    start = min(range(len(loop)), key=lambda index: position[loop[index]])
    ordered = loop[start:] + loop[:start]
    return (*ordered, ordered[0])


def _assign(
    task: PlannedTask, agents: Sequence[AgentCard], by_name: Mapping[str, AgentCard]
) -> PlanStep:
    wanted = (task.agent or "").strip()
    named = by_name.get(wanted.casefold())
    if named is not None:
        better = _better_by_capabilities(task.description, named, agents)
        if better is None:
            return _step(task, named, "model", None)
        agent, score, own = better
        note = (
            f"the model chose {named.name!r}, but {agent.name!r} has capabilities closer to "
            f"the task (score {score:.1f} vs {own:.1f})"
        )
        return _step(task, agent, "capabilities", note)
    chose = (
        f"the model chose {wanted[:64]!r}, which is not one of the agents"
        if wanted
        else "the model chose no agent"
    )
    match, score = choose_agent(task.description, agents)
    if match is not None:
        note = f"{chose}; {match.name!r} matches the task best (score {score:.1f})"
        return _step(task, match, "capabilities", note)
    closest = _closest_by_name(wanted, agents)
    note = f"{chose}, and no agent matches the task; {closest.name!r} is the closest"
    return _step(task, closest, "capabilities", note)


def _step(
    task: PlannedTask,
    agent: AgentCard,
    assigned_by: Literal["model", "capabilities"],
    note: str | None,
) -> PlanStep:
    return PlanStep(
        id=task.id,
        description=task.description,
        agent=agent,
        depends_on=tuple(dict.fromkeys(task.depends_on)),
        assigned_by=assigned_by,
        note=note,
    )


def _better_by_capabilities(
    description: str, chosen: AgentCard, agents: Sequence[AgentCard]
) -> tuple[AgentCard, float, float] | None:
    """Another agent whose capabilities match strictly better than those of the agent the
    model chose, with both scores; None when the choice stands. An agent that declares no
    capabilities is a generalist, so nothing proves it wrong."""
    if not chosen.capabilities:
        return None
    words = words_of(description)
    own = capability_score(words, chosen)
    ranked = sorted(
        ((capability_score(words, agent), agent) for agent in agents if agent.id != chosen.id),
        key=lambda pair: (-pair[0], pair[1].name),
    )
    if not ranked or ranked[0][0] <= own:
        return None
    return ranked[0][1], ranked[0][0], own


def _closest_by_name(wanted: str, agents: Sequence[AgentCard]) -> AgentCard:
    """The agent whose name looks most like the one the model gave; among equals (and when
    it gave none) a generalist without capabilities comes first, then the name."""
    return min(
        agents,
        key=lambda agent: (
            -SequenceMatcher(None, wanted.casefold(), agent.name).ratio(),
            bool(agent.capabilities),
            agent.name,
        ),
    )
