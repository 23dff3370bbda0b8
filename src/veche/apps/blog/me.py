"""`/me`: a signed-in user's home screen in one call: their profile (with follow counts and
the suggestions switch), the blogs they own, their unread message count (the messenger's
`unread_total`), unread notifications and the latest ones. Cached per user
(`caching.py`) and renewed by events: a notification, a follower, a profile change, a
message; the time to live bounds anything no event announces."""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncSession

from veche.apps.blog.conversations import unread_total
from veche.apps.blog.errors import ProfileNotFound
from veche.apps.blog.notifications import notification_read
from veche.apps.blog.profiles import ProfileQueries
from veche.apps.blog.runtime import BlogRuntime
from veche.apps.blog.schemas import BlogRead, MeRead
from veche.apps.blog.social_repository import Social
from veche.apps.blog.views import profile_read
from veche.kernel.identity import User

OWN_BLOGS = 50
LATEST_NOTIFICATIONS = 10


async def me_read(session: AsyncSession, user: User, runtime: BlogRuntime) -> MeRead:
    social = Social(session, user.id)
    active = await social.user(user.id)
    if active is None:  # disabled between the token check and now
        raise ProfileNotFound("Your account is not active")
    view = await ProfileQueries(session).view(active)
    return MeRead(
        profile=profile_read(view, runtime, own=True),
        blogs=[BlogRead.model_validate(blog) for blog in await social.owned_blogs(OWN_BLOGS)],
        unread_messages=await unread_total(session, user.id),
        unread_notifications=await social.unread_notifications(),
        notifications=[
            notification_read(row)
            for row in await social.latest_notifications(LATEST_NOTIFICATIONS)
        ],
    )
