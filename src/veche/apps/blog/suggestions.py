"""Reading AI suggestions: a reader lists theirs (newest first; none while they have
turned suggestions off) and dismisses the ones they do not want. The recommender that
makes them is `recommender.py`. Another reader's suggestion answers like a missing one."""

from __future__ import annotations

from uuid import UUID

from sqlalchemy.ext.asyncio import AsyncSession

from veche.apps.blog.errors import SuggestionNotFound
from veche.apps.blog.models import Suggestion
from veche.apps.blog.schemas import SuggestionRead
from veche.apps.blog.social_repository import Social
from veche.apps.blog.views import post_summary
from veche.kernel import CursorCodec, Page, PageParams, SortKey, paginate

NEWEST_FIRST = SortKey.parse("-created_at")


class SuggestionService:
    def __init__(self, session: AsyncSession, user_id: UUID) -> None:
        self.session = session
        self.user_id = user_id
        self.social = Social(session, user_id)

    async def page(self, params: PageParams, codec: CursorCodec) -> Page[SuggestionRead]:
        if not await self.social.suggestions_enabled():
            return Page(items=[], next_cursor=None)
        rows, next_cursor = await paginate(
            self.session,
            self.social.suggestions(),
            Suggestion,
            sort=NEWEST_FIRST,
            params=params,
            codec=codec,
            scope=f"blog.suggestions|{self.user_id}",
        )
        posts = await self.social.posts_by_id([row.post_id for row in rows])
        slugs = await self.social.blog_slugs(post.blog_id for post in posts.values())
        items = [
            SuggestionRead(
                id=row.id,
                post=post_summary(posts[row.post_id]),
                blog_slug=slugs.get(posts[row.post_id].blog_id, ""),
                reason=row.reason,
                score=row.score,
                created_at=row.created_at,
            )
            for row in rows
            if row.post_id in posts
        ]
        return Page(items=items, next_cursor=next_cursor)

    async def dismiss(self, suggestion_id: UUID) -> None:
        """Dismiss one of your suggestions (again is fine)."""
        if not await self.social.dismiss_suggestion(suggestion_id):
            raise SuggestionNotFound(f"There is no suggestion {suggestion_id}")
