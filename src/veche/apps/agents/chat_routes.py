"""`/api/v1/agents/projects/{project_id}/sessions/*`: chat sessions in direct mode, their
messages and tasks, the session event stream (NDJSON), cancelling, and the results of
client-side tool calls. Another user's session is a 404, never a 403."""

from __future__ import annotations

from typing import Annotated, Any
from uuid import UUID

import orjson
from fastapi import Depends, Query, Request, Response, status
from fastapi.responses import StreamingResponse

from veche.apps.agents.chat import ChatService
from veche.apps.agents.chat_schemas import (
    CancelResult,
    MessageAccepted,
    MessageCreate,
    MessageRead,
    SessionCreate,
    SessionRead,
    SessionUpdate,
    TaskRead,
    ToolCallRead,
    ToolCallResult,
    ToolCallStatus,
)
from veche.apps.agents.errors import SessionNotFound
from veche.apps.agents.models import ChatMessage, ChatSession, ClientToolCall, Task
from veche.apps.agents.runtime import AgentsRuntime, runtime_of
from veche.apps.agents.stream import session_channel
from veche.kernel import (
    CursorCodec,
    DbSession,
    KernelDep,
    Page,
    PageParams,
    SortKey,
    api_router,
    page_params,
    paginate,
    problem_openapi,
    rate_limit,
    record,
)
from veche.kernel.identity import CurrentUser
from veche.kernel.identity.deps import bearer_scheme
from veche.kernel.realtime import ndjson_stream

router = api_router(tags=["agents"], dependencies=[Depends(rate_limit("default"))])

Paging = Annotated[PageParams, Depends(page_params)]
NEWEST_FIRST = SortKey.parse("-created_at")
SESSION = "/projects/{project_id}/sessions/{session_id}"


async def chat_service(session: DbSession, kernel: KernelDep, user: CurrentUser) -> ChatService:
    return ChatService(session, user.id, runtime_of(kernel))


Chats = Annotated[ChatService, Depends(chat_service)]


# -- sessions ---------------------------------------------------------------------------


@router.post(
    "/projects/{project_id}/sessions",
    status_code=status.HTTP_201_CREATED,
    response_model=SessionRead,
    responses=problem_openapi(401, 404, 413, 415),
    summary="Start a chat session in a project",
)
async def create_session(project_id: UUID, body: SessionCreate, chats: Chats) -> SessionRead:
    return SessionRead.model_validate(await chats.create(project_id, body))


@router.get(
    "/projects/{project_id}/sessions",
    response_model=Page[SessionRead],
    responses=problem_openapi(400, 401, 404),
    summary="A project's chat sessions, newest first",
)
async def list_sessions(
    project_id: UUID, session: DbSession, kernel: KernelDep, chats: Chats, page: Paging
) -> Page[SessionRead]:
    await chats.project(project_id)
    rows, next_cursor = await paginate(
        session,
        chats.queries.sessions(project_id),
        ChatSession,
        sort=NEWEST_FIRST,
        params=page,
        codec=CursorCodec(kernel.cursor_key),
        scope=f"agents.sessions|project={project_id}",
    )
    return Page(items=[SessionRead.model_validate(row) for row in rows], next_cursor=next_cursor)


@router.get(
    SESSION,
    response_model=SessionRead,
    responses=problem_openapi(401, 404),
    summary="One chat session",
)
async def get_session(project_id: UUID, session_id: UUID, chats: Chats) -> SessionRead:
    return SessionRead.model_validate(await chats.get(project_id, session_id))


@router.patch(
    SESSION,
    response_model=SessionRead,
    responses=problem_openapi(401, 404, 413, 415),
    summary="Rename a session or change its queue policy",
)
async def update_session(
    project_id: UUID, session_id: UUID, body: SessionUpdate, chats: Chats
) -> SessionRead:
    return SessionRead.model_validate(await chats.update(project_id, session_id, body))


@router.delete(
    SESSION,
    status_code=status.HTTP_204_NO_CONTENT,
    response_class=Response,
    responses=problem_openapi(401, 404),
    summary="Delete a session with its messages, tasks and approvals; stops its run",
)
async def delete_session(project_id: UUID, session_id: UUID, chats: Chats) -> Response:
    await chats.delete(project_id, session_id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


# -- messages and tasks -------------------------------------------------------------------


@router.post(
    f"{SESSION}/messages",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=MessageAccepted,
    responses=problem_openapi(401, 404, 409, 413, 415, 429, 503),
    dependencies=[Depends(rate_limit("agents_messages"))],
    summary="Send a message; with `target_agent` that agent answers (on the event stream)",
)
async def post_message(
    project_id: UUID, session_id: UUID, body: MessageCreate, chats: Chats
) -> MessageAccepted:
    message, task = await chats.post(project_id, session_id, body)
    return MessageAccepted(
        message=MessageRead.model_validate(message),
        task=None if task is None else TaskRead.model_validate(task),
    )


@router.get(
    f"{SESSION}/messages",
    response_model=Page[MessageRead],
    responses=problem_openapi(400, 401, 404),
    summary="A session's history, newest first",
)
async def list_messages(
    project_id: UUID,
    session_id: UUID,
    session: DbSession,
    kernel: KernelDep,
    chats: Chats,
    page: Paging,
) -> Page[MessageRead]:
    chat = await chats.get(project_id, session_id)
    rows, next_cursor = await paginate(
        session,
        chats.queries.messages(chat.id),
        ChatMessage,
        sort=NEWEST_FIRST,
        params=page,
        codec=CursorCodec(kernel.cursor_key),
        scope=f"agents.messages|session={chat.id}",
    )
    return Page(items=[MessageRead.model_validate(row) for row in rows], next_cursor=next_cursor)


@router.get(
    f"{SESSION}/tasks",
    response_model=Page[TaskRead],
    responses=problem_openapi(400, 401, 404),
    summary="The runs of a session's messages, newest first",
)
async def list_tasks(
    project_id: UUID,
    session_id: UUID,
    session: DbSession,
    kernel: KernelDep,
    chats: Chats,
    page: Paging,
) -> Page[TaskRead]:
    chat = await chats.get(project_id, session_id)
    rows, next_cursor = await paginate(
        session,
        chats.queries.tasks(chat.id),
        Task,
        sort=NEWEST_FIRST,
        params=page,
        codec=CursorCodec(kernel.cursor_key),
        scope=f"agents.tasks|session={chat.id}",
    )
    return Page(items=[TaskRead.model_validate(row) for row in rows], next_cursor=next_cursor)


@router.post(
    f"{SESSION}/cancel",
    response_model=CancelResult,
    responses=problem_openapi(401, 404),
    summary="Stop the session's running and queued messages",
)
async def cancel_session(project_id: UUID, session_id: UUID, chats: Chats) -> CancelResult:
    return CancelResult(cancelled=await chats.cancel(project_id, session_id))


# -- client-side tools --------------------------------------------------------------------


@router.get(
    f"{SESSION}/tool-calls",
    response_model=Page[ToolCallRead],
    responses=problem_openapi(400, 401, 404),
    summary="The tool calls agents asked your machine to run in this session, newest first",
)
async def list_tool_calls(
    project_id: UUID,
    session_id: UUID,
    session: DbSession,
    kernel: KernelDep,
    chats: Chats,
    page: Paging,
    call_status: Annotated[
        ToolCallStatus | None, Query(alias="status", description="Only calls in this state")
    ] = None,
) -> Page[ToolCallRead]:
    chat = await chats.get(project_id, session_id)
    rows, next_cursor = await paginate(
        session,
        chats.queries.session_tool_calls(chat.id, call_status),
        ClientToolCall,
        sort=NEWEST_FIRST,
        params=page,
        codec=CursorCodec(kernel.cursor_key),
        scope=f"agents.tool_calls|session={chat.id}|status={call_status}",
    )
    return Page(items=[ToolCallRead.model_validate(row) for row in rows], next_cursor=next_cursor)


@router.get(
    f"{SESSION}/tool-calls/{{call_id}}",
    response_model=ToolCallRead,
    responses=problem_openapi(401, 404),
    summary="A tool call the agent asked your machine to run",
)
async def get_tool_call(
    project_id: UUID, session_id: UUID, call_id: UUID, chats: Chats
) -> ToolCallRead:
    chat = await chats.get(project_id, session_id)
    call = await chats.tool_call(call_id)
    if call.session_id != chat.id:
        raise SessionNotFound(f"Session {session_id} has no tool call {call_id}")
    return ToolCallRead.model_validate(call)


@router.post(
    f"{SESSION}/tool-calls/{{call_id}}/result",
    response_model=ToolCallRead,
    responses=problem_openapi(401, 404, 409, 413, 415, 429),
    dependencies=[Depends(rate_limit("agents_tools"))],
    summary="Report the result of a client-side tool call; the agent goes on",
)
async def post_tool_result(
    project_id: UUID, session_id: UUID, call_id: UUID, body: ToolCallResult, chats: Chats
) -> ToolCallRead:
    chat = await chats.get(project_id, session_id)
    call = await chats.tool_call(call_id)
    if call.session_id != chat.id:
        raise SessionNotFound(f"Session {session_id} has no tool call {call_id}")
    result: dict[str, Any] = (
        {"error": body.error} if body.error is not None else {"output": body.output}
    )
    return ToolCallRead.model_validate(await chats.tool_result(call.id, result))


# -- the event stream ---------------------------------------------------------------------


def _render(session_id: UUID) -> Any:
    sid = str(session_id)

    def render(frame: dict[str, Any] | None, token: str | None) -> bytes:
        if frame is None:
            return orjson.dumps({"event_type": "HEARTBEAT", "session_id": sid}) + b"\n"
        kind = frame.get("type")
        if kind == "message":
            body = {**frame["data"], "event_id": token}
        elif kind == "subscribed":
            body = {
                "event_type": "STREAM_OPENED",
                "payload": {"recovered": frame.get("recovered") is True},
                "session_id": sid,
            }
        else:  # the closing advice: reconnect (or reauth) with `last_event_id`
            body = {
                "event_type": str(kind).upper(),
                "payload": {k: v for k, v in frame.items() if k != "type"},
                "session_id": sid,
                "event_id": token,
            }
        return orjson.dumps(body) + b"\n"

    return render


@router.get(
    f"{SESSION}/events",
    response_class=StreamingResponse,
    responses={
        **problem_openapi(400, 401, 404, 429, 503),
        200: {"content": {"application/x-ndjson": {}}},
    },
    summary="The session's events as NDJSON; resume with `?last_event_id=`",
)
async def session_events(
    request: Request,
    project_id: UUID,
    session_id: UUID,
    user: CurrentUser,
    kernel: KernelDep,
    bearer: Annotated[Any, Depends(bearer_scheme)],
    last_event_id: Annotated[
        str | None,
        Query(max_length=4096, description="The `event_id` of the last event you received"),
    ] = None,
) -> Response:
    """One JSON object per line: `event_type`, `payload`, `timestamp`, `session_id` and
    `event_id`; `HEARTBEAT` lines keep the connection alive. The stream ends with
    `RECONNECT` (or `REAUTH` when the access token expires): reconnect with its `event_id`
    as `last_event_id` and nothing is lost while the hub still holds it."""
    runtime: AgentsRuntime = runtime_of(kernel)
    # Its own short transaction: a streaming response must not hold one open.
    async with kernel.db.unit_of_work() as db:
        chats = ChatService(db, user.id, runtime)
        chat = await chats.get(project_id, session_id)
        record(
            db,
            "agents.session.stream_opened",
            actor_id=user.id,
            target_type="agents.session",
            target_id=chat.id,
            data={"resumed": bool(last_event_id)},
        )
    return await ndjson_stream(
        request, user, bearer, [session_channel(user.id, chat.id)], last_event_id, _render(chat.id)
    )
