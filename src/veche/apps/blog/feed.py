"""The feed: published posts of the blogs and authors a user follows, newest first, in
keyset pages, each with its media, counts and the reader's own state (liked, commented),
and on the first page up to `VECHE_BLOG__FEED_SUGGESTIONS` AI suggestions mixed in.

A page costs a fixed number of statements whatever its length (the page, then one each
for suggestions, their posts, media, the reader's likes, comments and the blog slugs),
and the first page is cached per reader (`caching.py`) until an event changes it.
"""

from __future__ import annotations

from uuid import UUID

from sqlalchemy.ext.asyncio import AsyncSession

from veche.apps.blog.models import Post, Suggestion
from veche.apps.blog.runtime import BlogRuntime
from veche.apps.blog.schemas import FeedItem, SuggestionInfo
from veche.apps.blog.social_repository import Social
from veche.apps.blog.views import media_read, post_summary
from veche.kernel import CursorCodec, Page, PageParams, SortKey, paginate

FEED_SORT = SortKey.parse("-published_at")
# A suggestion goes after every this many posts from follows (the rest at the end).
SUGGESTION_EVERY = 3


async def feed_page(
    session: AsyncSession,
    user_id: UUID,
    params: PageParams,
    *,
    codec: CursorCodec,
    runtime: BlogRuntime,
    suggestions: int,
) -> Page[FeedItem]:
    social = Social(session, user_id)
    posts, next_cursor = await paginate(
        session,
        social.feed_posts(),
        Post,
        sort=FEED_SORT,
        params=params,
        codec=codec,
        scope=f"blog.feed|{user_id}",
    )
    suggested: list[Suggestion] = []
    if params.cursor is None and suggestions > 0 and await social.suggestions_enabled():
        suggested = await social.latest_suggestions(
            suggestions, excluding=[post.id for post in posts]
        )
    suggested_posts = await social.posts_by_id([row.post_id for row in suggested])
    everything = [*posts, *suggested_posts.values()]
    ids = [post.id for post in everything]
    media = await social.media_of(ids)
    liked = await social.liked_among(ids)
    commented = await social.commented_among(ids)
    slugs = await social.blog_slugs(post.blog_id for post in everything)

    def item(post: Post, suggestion: Suggestion | None = None) -> FeedItem:
        return FeedItem(
            **post_summary(post).model_dump(),
            blog_slug=slugs.get(post.blog_id, ""),
            media=[media_read(row, runtime) for row in media.get(post.id, [])],
            liked=post.id in liked,
            commented=post.id in commented,
            suggested=suggestion is not None,
            suggestion=(
                SuggestionInfo(
                    id=suggestion.id, reason=suggestion.reason, created_at=suggestion.created_at
                )
                if suggestion is not None
                else None
            ),
        )

    followed = [item(post) for post in posts]
    extra = [
        item(suggested_posts[row.post_id], row)
        for row in suggested
        if row.post_id in suggested_posts
    ]
    return Page(items=mix(followed, extra), next_cursor=next_cursor)


def mix(followed: list[FeedItem], suggested: list[FeedItem]) -> list[FeedItem]:
    """One suggestion after every `SUGGESTION_EVERY` followed posts; leftovers at the end."""
    mixed: list[FeedItem] = []
    waiting = list(suggested)
    for index, entry in enumerate(followed, start=1):
        mixed.append(entry)
        if waiting and index % SUGGESTION_EVERY == 0:
            mixed.append(waiting.pop(0))
    return mixed + waiting
