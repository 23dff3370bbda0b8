"""Profiles: the kernel user's display name plus what the blog keeps itself (username,
bio, links, avatar). Only the owner changes a profile: every change goes through the
caller's own id."""

from __future__ import annotations

from dataclasses import dataclass
from uuid import UUID

from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from veche.apps.blog.errors import ProfileNotFound, UsernameReserved, UsernameTaken
from veche.apps.blog.media import AVATAR, MediaService
from veche.apps.blog.models import Media, Profile
from veche.apps.blog.repository import PublicQueries, Scoped
from veche.apps.blog.runtime import BlogRuntime
from veche.apps.blog.schemas import ProfileUpdate
from veche.contracts.blog import PROFILE_UPDATED, ProfileUpdated
from veche.kernel import utcnow
from veche.kernel.events import emit
from veche.kernel.identity import User

# Names that would impersonate the service or collide with paths and words users trust.
RESERVED_USERNAMES = frozenset(
    {
        "about", "abuse", "account", "admin", "administrator", "api", "app", "auth", "blog",
        "blogs", "comments", "contact", "dashboard", "feed", "help", "home", "info", "login",
        "logout", "me", "media", "moderator", "news", "official", "posts", "privacy",
        "quark", "register", "root", "security", "settings", "signin", "signup", "staff",
        "support", "system", "terms", "user", "users", "veche", "webmaster", "www",
    }
)  # fmt: skip


@dataclass(frozen=True, slots=True)
class ProfileView:
    user: User
    profile: Profile | None
    avatar: Media | None


def _as_uuid(value: str) -> UUID | None:
    try:
        return UUID(value)
    except ValueError:
        return None


class ProfileQueries:
    """Public reads of profiles."""

    def __init__(self, session: AsyncSession) -> None:
        self.public = PublicQueries(session)

    async def find(self, id_or_username: str) -> ProfileView:
        user_id = _as_uuid(id_or_username)
        if user_id is None:
            profile = await self.public.profile_by_username(id_or_username)
            user_id = profile.user_id if profile is not None else None
        user = await self.public.user(user_id) if user_id is not None else None
        if user is None or user_id is None:
            raise ProfileNotFound(f"There is no user {id_or_username!r}")
        return await self.view(user)

    async def view(self, user: User) -> ProfileView:
        profile = await self.public.profile(user.id)
        avatar = None
        if profile is not None and profile.avatar_media_id is not None:
            avatar = await self.public.media(profile.avatar_media_id)
        return ProfileView(user, profile, avatar)


class ProfileService:
    def __init__(self, session: AsyncSession, user_id: UUID, runtime: BlogRuntime) -> None:
        self.session = session
        self.user_id = user_id
        self.runtime = runtime
        self.scoped = Scoped(session, user_id)

    async def _user(self) -> User:
        user = await self.scoped.user(self.user_id)
        if user is None:  # disabled between the token check and now
            raise ProfileNotFound("Your account is not active")
        return user

    async def me(self) -> ProfileView:
        return await ProfileQueries(self.session).view(await self._user())

    async def update(self, data: ProfileUpdate) -> ProfileView:
        changes = data.model_dump(exclude_unset=True)
        user = await self._user()
        profile = await self.scoped.own_profile()
        if "username" in changes:
            username = changes["username"].lower()
            if username in RESERVED_USERNAMES:
                raise UsernameReserved(f"The username {username!r} is reserved")
            if await self.scoped.username_taken(username, excluding=self.user_id):
                raise UsernameTaken(f"The username {username!r} is taken")
            profile.username = username
        if "display_name" in changes:
            user.display_name = changes["display_name"]
            user.updated_at = utcnow()
        if "bio" in changes:
            profile.bio = changes["bio"]
        if "links" in changes:
            profile.links = changes["links"]
        if "suggestions_enabled" in changes:
            profile.suggestions_enabled = changes["suggestions_enabled"]
        profile.updated_at = utcnow()
        await self._changed(profile, sorted(changes))
        try:
            await self.session.flush()
        except IntegrityError as exc:  # a concurrent request took the username first
            raise UsernameTaken("The username is taken") from exc
        return await ProfileQueries(self.session).view(user)

    async def set_avatar(self, data: bytes) -> ProfileView:
        media_service = MediaService(self.session, self.user_id, self.runtime)
        # The image first: no database work (or connection) waits on its processing.
        media = await media_service.upload(data, AVATAR)
        user = await self._user()
        profile = await self.scoped.own_profile()
        previous = profile.avatar_media_id
        profile.avatar_media_id = media.id
        profile.updated_at = utcnow()
        await self.session.flush()
        if previous is not None:
            old = await self.scoped.media(previous)
            if old is not None:
                await media_service.discard(old)
        await self._changed(profile, ["avatar"])
        return ProfileView(user, profile, media)

    async def remove_avatar(self) -> None:
        profile = await self.scoped.own_profile()
        if profile.avatar_media_id is None:
            return
        old = await self.scoped.media(profile.avatar_media_id)
        profile.avatar_media_id = None
        profile.updated_at = utcnow()
        await self.session.flush()
        if old is not None:
            await MediaService(self.session, self.user_id, self.runtime).discard(old)
        await self._changed(profile, ["avatar"])

    async def _changed(self, profile: Profile, fields: list[str]) -> None:
        await emit(
            self.session,
            PROFILE_UPDATED,
            ProfileUpdated(user_id=self.user_id, username=profile.username, fields=fields),
            subject=str(self.user_id),
            actor_id=self.user_id,
        )
