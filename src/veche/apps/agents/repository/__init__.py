"""Every query of the agents app, through `Scoped`: the one place that confines reads and
writes to the caller's own rows. A row of another user is indistinguishable from a row
that does not exist, which the services turn into a 404 with the app's own code.

The queries are split by subject; `test_scoping.py` fails if any module of the app outside
this package builds or runs a query itself.
"""

from veche.apps.agents.repository.approvals import ApprovalQueries, ApprovalSweepQueries
from veche.apps.agents.repository.chat import ACTIVE_TASK_STATES, ChatQueries, RunnerQueries
from veche.apps.agents.repository.health import HealthQueries, SystemQueries
from veche.apps.agents.repository.memory import MemoryQueries, MemoryReads
from veche.apps.agents.repository.orchestration import AgentLoad, PlanQueries
from veche.apps.agents.repository.scoped import Scoped

__all__ = [
    "ACTIVE_TASK_STATES",
    "AgentLoad",
    "ApprovalQueries",
    "ApprovalSweepQueries",
    "ChatQueries",
    "HealthQueries",
    "MemoryQueries",
    "MemoryReads",
    "PlanQueries",
    "RunnerQueries",
    "Scoped",
    "SystemQueries",
]
