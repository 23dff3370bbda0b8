"""The scoping helper every user-facing query of the agents app starts from."""

from __future__ import annotations

from typing import Any, TypeVar
from uuid import UUID

from sqlalchemy import Select, delete, func, select
from sqlalchemy.ext.asyncio import AsyncSession

from veche.apps.agents.models import (
    Agent,
    AgentVersion,
    Approval,
    ApprovalRule,
    ChatMessage,
    ChatSession,
    ClientToolCall,
    MemoryEntry,
    Project,
    Task,
)

Owned = TypeVar(
    "Owned",
    Project,
    Agent,
    AgentVersion,
    ChatSession,
    ChatMessage,
    Task,
    Approval,
    ApprovalRule,
    ClientToolCall,
    MemoryEntry,
)


class Scoped:
    """Queries over one user's projects, agents and agent versions."""

    def __init__(self, session: AsyncSession, user_id: UUID) -> None:
        self.session = session
        self.user_id = user_id

    def select(self, model: type[Owned]) -> Select[Owned]:
        return select(model).where(model.user_id == self.user_id)

    async def get(self, model: type[Owned], row_id: UUID) -> Owned | None:
        statement = self.select(model).where(model.id == row_id)
        row: Owned | None = await self.session.scalar(statement)
        return row

    async def exist(self, *rows: tuple[type[Project] | type[Agent], UUID]) -> tuple[bool, ...]:
        """Whether each `(model, id)` is one of this user's rows, in one statement."""
        checks = [
            select(model.id).where(model.user_id == self.user_id, model.id == row_id).exists()
            for model, row_id in rows
        ]
        found = (await self.session.execute(select(*checks))).one()
        return tuple(bool(value) for value in found)

    async def name_taken(
        self, model: type[Project] | type[Agent], name: str, *, excluding: UUID | None = None
    ) -> bool:
        statement = (
            select(func.count()).select_from(model).where(model.user_id == self.user_id)
        ).where(model.name == name)
        if excluding is not None:
            statement = statement.where(model.id != excluding)
        return bool(await self.session.scalar(statement))

    def versions(self, agent_id: UUID) -> Select[AgentVersion]:
        return self.select(AgentVersion).where(AgentVersion.agent_id == agent_id)

    async def version(self, agent_id: UUID, number: int) -> AgentVersion | None:
        statement = self.versions(agent_id).where(AgentVersion.number == number)
        row: AgentVersion | None = await self.session.scalar(statement)
        return row

    async def delete_versions(self, agent_id: UUID) -> None:
        # Issued explicitly rather than left to ON DELETE CASCADE: SQLite only cascades
        # with its foreign-key pragma on, and the scope holds here too.
        await self.session.execute(
            delete(AgentVersion).where(
                AgentVersion.user_id == self.user_id, AgentVersion.agent_id == agent_id
            )
        )


def rowcount(result: Any) -> int:
    return int(getattr(result, "rowcount", 0) or 0)
