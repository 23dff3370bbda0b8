"""The kernel: what every app stands on. Database and units of work, identity, errors,
pagination, rate limits, audit, scheduled jobs, observability and the app module contract.
The kernel never imports an app; apps reach it only through the names listed here and in
each kernel package's `__init__`."""

from veche.kernel.application import build_app
from veche.kernel.audit import AuditEvent, record
from veche.kernel.db import Base, Database, IdMixin, TimestampMixin, new_id, utcnow
from veche.kernel.deps import DbSession, KernelDep, SettingsDep
from veche.kernel.errors import (
    BadRequest,
    Conflict,
    Forbidden,
    NotFound,
    ProblemError,
    TooManyRequests,
    Unauthorized,
    problem_openapi,
)
from veche.kernel.http import api_router
from veche.kernel.jobs import ScheduledJob
from veche.kernel.modules import AppModule, Manifest
from veche.kernel.pagination import CursorCodec, Page, PageParams, SortKey, page_params, paginate
from veche.kernel.ratelimit import rate_limit
from veche.kernel.runtime import Kernel

__all__ = [
    "AppModule",
    "AuditEvent",
    "BadRequest",
    "Base",
    "Conflict",
    "CursorCodec",
    "Database",
    "DbSession",
    "Forbidden",
    "IdMixin",
    "Kernel",
    "KernelDep",
    "Manifest",
    "NotFound",
    "Page",
    "PageParams",
    "ProblemError",
    "ScheduledJob",
    "SettingsDep",
    "SortKey",
    "TimestampMixin",
    "TooManyRequests",
    "Unauthorized",
    "api_router",
    "build_app",
    "new_id",
    "page_params",
    "paginate",
    "problem_openapi",
    "rate_limit",
    "record",
    "utcnow",
]
