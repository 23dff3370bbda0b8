"""`/api/v1/blog/conversations/*`, `/api/v1/blog/messages/*` and the blocks under
`/api/v1/blog/users/*`: the messenger over HTTP. Everything needs a token; a
conversation or message outside the caller's conversations is a 404, never a 403.
Sending over the WebSocket is in `messaging_channel`."""

from __future__ import annotations

from typing import Annotated
from uuid import UUID

from fastapi import Depends, Query, Response, status

from veche.apps.blog.conversation_views import message_read
from veche.apps.blog.conversations import ConversationService, describe, unread_total
from veche.apps.blog.messaging import MessageService
from veche.apps.blog.messaging_runtime import messenger_of
from veche.apps.blog.messaging_schemas import (
    BlockRead,
    ConversationCreate,
    ConversationRead,
    MembersAdd,
    MessageCreate,
    MessageEditRead,
    MessageHistory,
    MessageRead,
    MessageUpdate,
    ReadCreate,
    ReadState,
    UnreadRead,
)
from veche.apps.blog.models import Block, Conversation
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
)
from veche.kernel.identity import CurrentUser

router = api_router(tags=["blog messenger"], dependencies=[Depends(rate_limit("default"))])
writes = [Depends(rate_limit("blog_write"))]
sends = [Depends(rate_limit("blog_messages"))]

Paging = Annotated[PageParams, Depends(page_params)]
Seq = Annotated[int | None, Query(ge=0, le=2**62)]
NEWEST_ACTIVITY_FIRST = SortKey.parse("-last_activity_at")
NEWEST_FIRST = SortKey.parse("-created_at")


async def conversation_service(
    session: DbSession, user: CurrentUser, kernel: KernelDep
) -> ConversationService:
    return ConversationService(session, user.id, kernel.settings.blog, messenger_of(kernel))


async def message_service(
    session: DbSession, user: CurrentUser, kernel: KernelDep
) -> MessageService:
    return MessageService(session, user.id, kernel.settings.blog, messenger_of(kernel))


Conversations = Annotated[ConversationService, Depends(conversation_service)]
Messages = Annotated[MessageService, Depends(message_service)]


# -- conversations ----------------------------------------------------------------------


@router.post(
    "/conversations",
    status_code=status.HTTP_201_CREATED,
    response_model=ConversationRead,
    responses={
        200: {"description": "The pair's existing direct conversation"},
        **problem_openapi(401, 403, 404, 413, 415),
    },
    dependencies=writes,
    summary="Start a direct conversation (again returns the existing one) or a group",
)
async def create_conversation(
    body: ConversationCreate, conversations: Conversations, response: Response
) -> ConversationRead:
    conversation, created = await conversations.create(body)
    if not created:
        response.status_code = status.HTTP_200_OK
    return await conversations.read(conversation.id)


@router.get(
    "/conversations",
    response_model=Page[ConversationRead],
    responses=problem_openapi(400, 401),
    summary="Your conversations, newest activity first, with unread counts and previews",
)
async def list_conversations(
    session: DbSession,
    kernel: KernelDep,
    user: CurrentUser,
    conversations: Conversations,
    page: Paging,
) -> Page[ConversationRead]:
    rows, next_cursor = await paginate(
        session,
        conversations.membership.conversations(),
        Conversation,
        sort=NEWEST_ACTIVITY_FIRST,
        params=page,
        codec=CursorCodec(kernel.cursor_key),
        scope=f"blog.conversations|{user.id}",
    )
    return Page(items=await describe(conversations.membership, rows), next_cursor=next_cursor)


@router.get(
    "/conversations/unread",
    response_model=UnreadRead,
    responses=problem_openapi(401),
    summary="Unread messages in all your conversations",
)
async def unread(session: DbSession, user: CurrentUser) -> UnreadRead:
    return UnreadRead(total=await unread_total(session, user.id))


@router.get(
    "/conversations/{conversation_id}",
    response_model=ConversationRead,
    responses=problem_openapi(401, 404),
    summary="One of your conversations with its members and their read positions",
)
async def get_conversation(conversation_id: UUID, conversations: Conversations) -> ConversationRead:
    return await conversations.read(conversation_id)


@router.post(
    "/conversations/{conversation_id}/members",
    response_model=ConversationRead,
    responses=problem_openapi(401, 403, 404, 409, 413, 415),
    dependencies=writes,
    summary="Add users to your group (its owner only)",
)
async def add_members(
    conversation_id: UUID, body: MembersAdd, conversations: Conversations
) -> ConversationRead:
    await conversations.add_members(conversation_id, body.user_ids)
    return await conversations.read(conversation_id)


@router.delete(
    "/conversations/{conversation_id}/members/{user_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    response_class=Response,
    responses=problem_openapi(401, 403, 404, 409),
    dependencies=writes,
    summary="Remove a member from your group, or leave it (your own id)",
)
async def remove_member(
    conversation_id: UUID, user_id: UUID, conversations: Conversations
) -> Response:
    await conversations.remove_member(conversation_id, user_id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


# -- messages ---------------------------------------------------------------------------


@router.post(
    "/conversations/{conversation_id}/messages",
    status_code=status.HTTP_201_CREATED,
    response_model=MessageRead,
    responses={
        200: {"description": "A retry: the message this client_id already sent"},
        **problem_openapi(401, 403, 404, 409, 413, 415, 429),
    },
    dependencies=sends,
    summary="Send a message (a retry with the same client_id returns the first one)",
)
async def send_message(
    conversation_id: UUID, body: MessageCreate, messages: Messages, response: Response
) -> MessageRead:
    message, created = await messages.send(conversation_id, body.body, body.client_id)
    if not created:
        response.status_code = status.HTTP_200_OK
    return message_read(message)


@router.get(
    "/conversations/{conversation_id}/messages",
    response_model=MessageHistory,
    responses=problem_openapi(401, 404),
    summary="History by seq: after `after_seq` (catching up), else the newest before "
    "`before_seq` (scrolling back)",
)
async def message_history(
    conversation_id: UUID,
    messages: Messages,
    after_seq: Seq = None,
    before_seq: Seq = None,
    limit: Annotated[int, Query(ge=1, le=100)] = 50,
) -> MessageHistory:
    return await messages.history(
        conversation_id, after_seq=after_seq, before_seq=before_seq, limit=limit
    )


@router.post(
    "/conversations/{conversation_id}/read",
    response_model=ReadState,
    responses=problem_openapi(401, 404, 413, 415),
    summary="Mark the conversation read up to a seq (the newest without one)",
)
async def mark_read(conversation_id: UUID, body: ReadCreate, messages: Messages) -> ReadState:
    return await messages.mark_read(conversation_id, body.seq)


@router.get(
    "/messages/{message_id}",
    response_model=MessageRead,
    responses=problem_openapi(401, 404),
    summary="One message of your conversations",
)
async def get_message(message_id: UUID, messages: Messages) -> MessageRead:
    return message_read(await messages.message(message_id))


@router.patch(
    "/messages/{message_id}",
    response_model=MessageRead,
    responses=problem_openapi(401, 403, 404, 409, 413, 415),
    dependencies=writes,
    summary="Edit your message (its earlier body is kept in its edit history)",
)
async def edit_message(message_id: UUID, body: MessageUpdate, messages: Messages) -> MessageRead:
    return message_read(await messages.edit(message_id, body.body))


@router.delete(
    "/messages/{message_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    response_class=Response,
    responses=problem_openapi(401, 403, 404),
    dependencies=writes,
    summary="Delete your message: its body and edits go, a tombstone keeps its seq",
)
async def delete_message(message_id: UUID, messages: Messages) -> Response:
    await messages.delete(message_id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.get(
    "/messages/{message_id}/edits",
    response_model=list[MessageEditRead],
    responses=problem_openapi(401, 404),
    summary="The bodies a message had before each edit, oldest first",
)
async def message_edits(message_id: UUID, messages: Messages) -> list[MessageEditRead]:
    return [MessageEditRead.model_validate(row) for row in await messages.edits(message_id)]


# -- blocks -----------------------------------------------------------------------------


@router.get(
    "/users/me/blocks",
    response_model=Page[BlockRead],
    responses=problem_openapi(400, 401),
    summary="The users you blocked, newest first",
)
async def list_blocks(
    session: DbSession,
    kernel: KernelDep,
    user: CurrentUser,
    conversations: Conversations,
    page: Paging,
) -> Page[BlockRead]:
    rows, next_cursor = await paginate(
        session,
        conversations.membership.blocks(),
        Block,
        sort=NEWEST_FIRST,
        params=page,
        codec=CursorCodec(kernel.cursor_key),
        scope=f"blog.blocks|{user.id}",
    )
    return Page(items=[BlockRead.model_validate(row) for row in rows], next_cursor=next_cursor)


@router.put(
    "/users/{user_id}/block",
    response_model=BlockRead,
    responses=problem_openapi(401, 404),
    dependencies=writes,
    summary="Block a user (again is fine)",
)
async def block_user(user_id: UUID, conversations: Conversations) -> BlockRead:
    return BlockRead.model_validate(await conversations.block(user_id))


@router.delete(
    "/users/{user_id}/block",
    status_code=status.HTTP_204_NO_CONTENT,
    response_class=Response,
    responses=problem_openapi(401),
    dependencies=writes,
    summary="Unblock a user (again is fine)",
)
async def unblock_user(user_id: UUID, conversations: Conversations) -> Response:
    await conversations.unblock(user_id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)
