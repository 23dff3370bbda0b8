"""Projects and agents: the rules of creating, changing and deleting them. Plain async over
one session; every query goes through `Scoped`, every change writes its audit row in the
same transaction."""

from __future__ import annotations

from typing import Any
from uuid import UUID

from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from veche.apps.agents.errors import (
    AgentNameTaken,
    AgentNotFound,
    AgentVersionNotFound,
    ProjectNameTaken,
    ProjectNotFound,
)
from veche.apps.agents.memory import AgentMemory
from veche.apps.agents.models import Agent, AgentVersion, Project
from veche.apps.agents.repository import Scoped
from veche.apps.agents.schemas import AgentConfig, AgentPatch, ProjectCreate, ProjectUpdate
from veche.apps.agents.spaces import WorkerSpaceManager
from veche.apps.agents.workspace import WorkspaceRoot
from veche.kernel import new_id, record, utcnow
from veche.kernel.db import on_outcome


def version_key(user_id: UUID, name: str, number: int) -> str:
    return f"user{user_id.hex[:8]}_{name}_v{number}"


class ProjectService:
    def __init__(
        self,
        session: AsyncSession,
        user_id: UUID,
        workspaces: WorkspaceRoot,
        memory: AgentMemory | None = None,
        *,
        spaces: WorkerSpaceManager | None = None,
    ) -> None:
        self.session = session
        self.user_id = user_id
        self.scoped = Scoped(session, user_id)
        self.workspaces = workspaces
        self.spaces = spaces
        # Without it, the rows still go by foreign-key cascade but the vectors stay.
        self.memory = memory

    async def get(self, project_id: UUID) -> Project:
        project = await self.scoped.get(Project, project_id)
        if project is None:
            raise ProjectNotFound(f"You have no project {project_id}")
        return project

    async def create(self, data: ProjectCreate) -> Project:
        await self._check_name(data.name)
        project_id = new_id()
        project = Project(
            id=project_id,
            user_id=self.user_id,
            name=data.name,
            description=data.description,
            workspace=WorkspaceRoot.relation(self.user_id, project_id),
        )
        self.session.add(project)
        record(
            self.session,
            "agents.project.created",
            actor_id=self.user_id,
            target_type="agents.project",
            target_id=project_id,
            data={"name": data.name},
        )
        await self._flush(ProjectNameTaken(f"You already have a project named {data.name!r}"))
        await self.workspaces.ensure(project.workspace)
        return project

    async def update(self, project_id: UUID, data: ProjectUpdate) -> Project:
        project = await self.get(project_id)
        changes = data.model_dump(exclude_unset=True)
        if "name" in changes and changes["name"] != project.name:
            await self._check_name(changes["name"], excluding=project.id)
        for field, value in changes.items():
            setattr(project, field, value)
        project.updated_at = utcnow()
        record(
            self.session,
            "agents.project.updated",
            actor_id=self.user_id,
            target_type="agents.project",
            target_id=project.id,
            data={"fields": sorted(changes)},
        )
        await self._flush(ProjectNameTaken(f"You already have a project named {project.name!r}"))
        return project

    async def delete(self, project_id: UUID) -> None:
        project = await self.get(project_id)
        if self.memory is not None:
            await self.memory.forget_project(
                self.session, user_id=self.user_id, project_id=project.id
            )
        await self.session.delete(project)
        record(
            self.session,
            "agents.project.deleted",
            actor_id=self.user_id,
            target_type="agents.project",
            target_id=project.id,
            data={"name": project.name},
        )
        await self.session.flush()
        # The files go when the row does: deleted after the commit, restored on rollback.
        await self.workspaces.discard(self.session, project.workspace)
        if self.spaces is not None:
            # A rollback costs only the space's counters: spaces are made again on use.
            await self.spaces.release(self.user_id, project.id)

    async def _check_name(self, name: str, *, excluding: UUID | None = None) -> None:
        if await self.scoped.name_taken(Project, name, excluding=excluding):
            raise ProjectNameTaken(f"You already have a project named {name!r}")

    async def _flush(self, conflict: ProjectNameTaken) -> None:
        try:
            await self.session.flush()
        except IntegrityError as exc:  # a concurrent request took the name first
            raise conflict from exc


class AgentService:
    def __init__(
        self,
        session: AsyncSession,
        user_id: UUID,
        memory: AgentMemory | None = None,
        *,
        spaces: WorkerSpaceManager | None = None,
    ) -> None:
        self.session = session
        self.user_id = user_id
        self.scoped = Scoped(session, user_id)
        self.memory = memory
        self.spaces = spaces

    async def get(self, agent_id: UUID) -> Agent:
        agent = await self.scoped.get(Agent, agent_id)
        if agent is None:
            raise AgentNotFound(f"You have no agent {agent_id}")
        return agent

    async def version(self, agent_id: UUID, number: int) -> AgentVersion:
        agent = await self.get(agent_id)
        version = await self.scoped.version(agent.id, number)
        if version is None:
            raise AgentVersionNotFound(f"Agent {agent_id} has no version {number}")
        return version

    async def create(self, config: AgentConfig) -> Agent:
        await self._check_name(config.name)
        agent = Agent(
            id=new_id(), user_id=self.user_id, name=config.name, status="ready", version=1
        )
        agent.config = config.stored()
        self.session.add(agent)
        self._add_version(agent, "agents.agent.created")
        await self._flush(config.name)
        return agent

    async def replace(self, agent_id: UUID, config: AgentConfig) -> Agent:
        """A full update: the new version is `config`, unset fields at their defaults."""
        agent = await self.get(agent_id)
        return await self._new_version(agent, config)

    async def patch(self, agent_id: UUID, patch: AgentPatch) -> Agent:
        """A partial update: the new version is the current one with `patch` applied."""
        agent = await self.get(agent_id)
        merged: dict[str, Any] = {"name": agent.name, **agent.config}
        merged.update(patch.model_dump(exclude_unset=True))
        return await self._new_version(agent, AgentConfig.model_validate(merged))

    async def delete(self, agent_id: UUID) -> None:
        agent = await self.get(agent_id)
        await self.scoped.delete_versions(agent.id)
        if self.memory is not None:
            await self.memory.forget_agent(self.session, user_id=self.user_id, agent_id=agent.id)
        await self.session.delete(agent)
        record(
            self.session,
            "agents.agent.deleted",
            actor_id=self.user_id,
            target_type="agents.agent",
            target_id=agent.id,
            data={"name": agent.name, "version": agent.version},
        )
        await self.session.flush()
        self._uncache_on_commit(agent.id)

    async def _new_version(self, agent: Agent, config: AgentConfig) -> Agent:
        if config.name != agent.name:
            await self._check_name(config.name, excluding=agent.id)
        agent.name = config.name
        agent.config = config.stored()
        agent.version += 1
        agent.updated_at = utcnow()
        self._add_version(agent, "agents.agent.updated")
        await self._flush(config.name)
        self._uncache_on_commit(agent.id)
        return agent

    def _uncache_on_commit(self, agent_id: UUID) -> None:
        # After the commit, not now: a run reading the agent before then would cache the
        # old configuration again.
        if self.spaces is not None:
            spaces, user_id = self.spaces, self.user_id
            on_outcome(self.session, committed=lambda: spaces.invalidate_agent(user_id, agent_id))

    def _add_version(self, agent: Agent, action: str) -> None:
        self.session.add(
            AgentVersion(
                id=new_id(),
                user_id=self.user_id,
                agent_id=agent.id,
                number=agent.version,
                name=agent.name,
                config=dict(agent.config),
                created_at=utcnow(),
            )
        )
        record(
            self.session,
            action,
            actor_id=self.user_id,
            target_type="agents.agent",
            target_id=agent.id,
            data={"name": agent.name, "version": agent.version},
        )

    async def _check_name(self, name: str, *, excluding: UUID | None = None) -> None:
        if await self.scoped.name_taken(Agent, name, excluding=excluding):
            raise AgentNameTaken(f"You already have an agent named {name!r}")

    async def _flush(self, name: str) -> None:
        try:
            await self.session.flush()
        except IntegrityError as exc:  # a concurrent request took the name first
            raise AgentNameTaken(f"You already have an agent named {name!r}") from exc
