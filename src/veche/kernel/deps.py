"""Dependency vocabulary shared by every route: `KernelDep`, `SettingsDep`, `DbSession`."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import Depends, Request
from sqlalchemy.ext.asyncio import AsyncSession

from veche.kernel.runtime import Kernel
from veche.settings import Settings


# Async, though it awaits nothing: FastAPI runs plain `def` dependencies in a thread pool.
async def get_kernel(request: Request) -> Kernel:
    kernel: Kernel = request.app.state.kernel
    return kernel


async def get_settings(request: Request) -> Settings:
    kernel: Kernel = request.app.state.kernel
    return kernel.settings


async def get_session(request: Request) -> AsyncIterator[AsyncSession]:
    """One unit of work per request: committed before the response is sent."""
    kernel: Kernel = request.app.state.kernel
    async with kernel.db.unit_of_work() as session:
        yield session


KernelDep = Annotated[Kernel, Depends(get_kernel)]
SettingsDep = Annotated[Settings, Depends(get_settings)]
# `function` scope: the commit happens before the response goes out, so a failed commit
# is an error response rather than a success the database never kept.
DbSession = Annotated[AsyncSession, Depends(get_session, scope="function")]
