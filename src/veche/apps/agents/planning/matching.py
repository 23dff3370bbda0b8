"""Which of a user's agents suits a text: words and stems of a description matched
against each agent's capabilities, name and description, and the choice between running a
message on one agent and orchestrating it."""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal
from uuid import UUID


@dataclass(frozen=True, slots=True)
class AgentCard:
    """What planning knows of one of the user's agents; the means come from its history."""

    id: UUID
    name: str
    capabilities: tuple[str, ...]
    description: str
    model: str
    mean_duration_ms: float | None = None
    mean_prompt_tokens: float | None = None
    mean_completion_tokens: float | None = None


# -- relevance ----------------------------------------------------------------------------

_CAPABILITY_WEIGHT = 2.0
_NAME_WEIGHT = 1.0
_DESCRIPTION_WEIGHT = 0.5

_WORD_BREAK = re.compile(r"[\W_]+")
# Words that carry no subject; system prompts open with several of them ("You are a
# helpful assistant that ..."), which would otherwise match nearly every request.
# fmt: off
_STOPWORDS: frozenset[str] = frozenset(
    {
        "a", "about", "after", "all", "also", "an", "and", "any", "are", "as", "assistant", "at",
        "be", "been", "but", "by", "can", "could", "do", "does", "for", "from", "have", "help",
        "helpful", "how", "i", "if", "in", "into", "is", "it", "its", "me", "my", "no", "not", "of",
        "on", "or", "our", "please", "should", "so", "some", "than", "that", "the", "their", "them",
        "then", "there", "these", "this", "those", "to", "up", "us", "using", "via", "was", "we",
        "what", "when", "which", "who", "will", "with", "would", "you", "your",
    }
)
# fmt: on
# Longest first, so "-ers" goes before "-s"; "-ss" words ("class") keep their ending.
_SUFFIXES = ("ings", "ions", "ing", "ion", "ers", "er", "ed", "es", "s")
_MIN_STEM = 3


def _stem(word: str) -> str:
    for suffix in _SUFFIXES:
        if (
            word.endswith(suffix)
            and len(word) - len(suffix) >= _MIN_STEM
            and not (suffix == "s" and word.endswith("ss"))
        ):
            word = word[: -len(suffix)]
            break
    # "write", "writer", "writing" and "writes" should all meet at "writ".
    if word.endswith("e") and len(word) > _MIN_STEM:
        word = word[:-1]
    return word


def words_of(text: str) -> frozenset[str]:
    """The stemmed content words of a text; names and tags split on "-" and "_"."""
    folded = unicodedata.normalize("NFKC", text).casefold()
    return frozenset(
        _stem(word)
        for word in _WORD_BREAK.split(folded)
        if len(word) > 1 and word not in _STOPWORDS
    )


def capability_score(words: frozenset[str], agent: AgentCard) -> float:
    return _CAPABILITY_WEIGHT * len(words & words_of(" ".join(agent.capabilities)))


def _relevance(words: frozenset[str], agent: AgentCard) -> float:
    return (
        capability_score(words, agent)
        + _NAME_WEIGHT * len(words & words_of(agent.name))
        + _DESCRIPTION_WEIGHT * len(words & words_of(agent.description))
    )


def _ranked(text: str, agents: Sequence[AgentCard]) -> list[tuple[float, AgentCard]]:
    """Every agent with its relevance to the text, best first, ties by name."""
    words = words_of(text)
    return sorted(
        ((_relevance(words, agent), agent) for agent in agents),
        key=lambda pair: (-pair[0], pair[1].name),
    )


def choose_agent(description: str, agents: Sequence[AgentCard]) -> tuple[AgentCard | None, float]:
    """The agent most relevant to a task and its score, or (None, 0.0) when none shares a
    word with it. Each shared stemmed word counts 2 in the agent's capabilities, 1 in its
    name and 0.5 in its description; ties go to the first name in order."""
    ranked = _ranked(description, agents)
    if not ranked or ranked[0][0] <= 0:
        return None, 0.0
    score, agent = ranked[0]
    return agent, score


# -- direct or orchestrated ---------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Route:
    """How to run a message: on one agent (`direct`, `agent` set) or by a plan. `direct`
    with no agent means the user has no agents; `reason` is short, for the stream."""

    mode: Literal["direct", "orchestrated"]
    agent: AgentCard | None
    reason: str


# Where a message asking for several things changes subject: line breaks, sentence ends,
# "then" / "after that", and list numbers such as "1." or "2)".
_PART_BREAK = re.compile(
    r"\n+|(?<=[.!?;])\s+|\bthen\b|\bafter that\b|(?:^|\s)\d{1,2}[.)](?=\s)", re.IGNORECASE
)


def route(message: str, agents: Sequence[AgentCard]) -> Route:
    """Direct when the user has one agent, or when one agent matches the message and the
    runner-up scores at most half as much; orchestrated when parts of the message match
    different agents or no agent stands out."""
    if not agents:
        return Route(mode="direct", agent=None, reason="no agents")
    if len(agents) == 1:
        return Route(mode="direct", agent=agents[0], reason="only agent")
    matched = _agents_of_parts(message, agents)
    if len(matched) > 1:
        return Route(
            mode="orchestrated",
            agent=None,
            reason=f"parts match different agents: {', '.join(matched)}",
        )
    (best_score, best), (runner_score, runner) = _ranked(message, agents)[:2]
    if best_score > 0 and runner_score <= best_score / 2:
        return Route(
            mode="direct",
            agent=best,
            reason=f"best match {best.name} (score {best_score:.1f} vs {runner_score:.1f})",
        )
    if best_score == 0:
        return Route(mode="orchestrated", agent=None, reason="no agent matches")
    return Route(
        mode="orchestrated",
        agent=None,
        reason=(
            f"no clear match ({best.name} {best_score:.1f} vs {runner.name} {runner_score:.1f})"
        ),
    )


def _agents_of_parts(message: str, agents: Sequence[AgentCard]) -> list[str]:
    """The names of the agents that best match each part of the message, in order."""
    names: list[str] = []
    for part in _PART_BREAK.split(message):
        agent, _ = choose_agent(part, agents)
        if agent is not None and agent.name not in names:
            names.append(agent.name)
    return names
