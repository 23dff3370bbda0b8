"""Notifications: what happened to a user's things (a comment or like on their post, a
new follower of them or of their blog, a new AI suggestion). The `blog-notifier`
consumer writes them from events, so the request that caused one never waits for it;
their recipient lists them, newest first, and marks them read one by one or all at once.
Someone else's notification answers exactly like a missing one (404)."""

from __future__ import annotations

from typing import Any
from uuid import UUID

from sqlalchemy.ext.asyncio import AsyncSession

from veche.apps.blog.errors import NotificationNotFound
from veche.apps.blog.models import Notification
from veche.apps.blog.schemas import NotificationRead
from veche.apps.blog.social_repository import Social
from veche.kernel import CursorCodec, Page, PageParams, SortKey, paginate, utcnow

NEWEST_FIRST = SortKey.parse("-created_at")
COMMENT, LIKE, FOLLOWER, BLOG_FOLLOWER, SUGGESTION = (
    "comment",
    "like",
    "follower",
    "blog_follower",
    "suggestion",
)


def notification_read(row: Notification) -> NotificationRead:
    return NotificationRead(
        id=row.id,
        kind=row.kind,  # only the kinds above are written
        actor_id=row.actor_id,
        post_id=row.post_id,
        data=dict(row.data),
        read=row.read_at is not None,
        read_at=row.read_at,
        created_at=row.created_at,
    )


def add_notification(
    session: AsyncSession,
    user_id: UUID,
    kind: str,
    *,
    actor_id: UUID | None = None,
    post_id: UUID | None = None,
    data: dict[str, Any] | None = None,
) -> Notification:
    row = Notification(
        user_id=user_id, kind=kind, actor_id=actor_id, post_id=post_id, data=data or {}
    )
    session.add(row)
    return row


class NotificationService:
    def __init__(self, session: AsyncSession, user_id: UUID) -> None:
        self.session = session
        self.user_id = user_id
        self.social = Social(session, user_id)

    async def page(
        self, params: PageParams, codec: CursorCodec, unread: bool | None
    ) -> Page[NotificationRead]:
        rows, next_cursor = await paginate(
            self.session,
            self.social.notifications(unread),
            Notification,
            sort=NEWEST_FIRST,
            params=params,
            codec=codec,
            scope=f"blog.notifications|{self.user_id}|{unread}",
        )
        return Page(items=[notification_read(row) for row in rows], next_cursor=next_cursor)

    async def mark_read(self, notification_id: UUID) -> Notification:
        row = await self.social.notification(notification_id)
        if row is None:
            raise NotificationNotFound(f"There is no notification {notification_id}")
        if row.read_at is None:
            row.read_at = utcnow()
            await self.session.flush()
        return row

    async def mark_all_read(self) -> int:
        return await self.social.mark_all_read()
