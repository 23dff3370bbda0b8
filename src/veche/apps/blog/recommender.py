"""AI suggestions: for a newly published post, the readers likely to enjoy it and one
line from the model on why.

1. The post (title, tags, excerpt) is embedded with the kernel embedder and stored in
   the kernel vector store (`app="blog"`, `scope="posts"`), so later posts find it.
2. The most similar published posts (cosine at least `VECHE_BLOG__SUGGESTION_MIN_SCORE`)
   are looked up; the readers who liked or read them, or follow their blogs or authors,
   are the candidates, each scored by the similarity of the post they engaged with
   times how strong that engagement is (a like counts more than a follow).
3. Never: the post's author, a reader who already read, liked or was suggested it, who
   follows its blog or author (it is in their feed already), who blocked its author,
   whose suggestions are off or whose account is disabled. At most
   `VECHE_BLOG__SUGGESTION_MAX_READERS` readers, best first.
4. One LLM call (purpose `recommender`) per distinct (similar post, engagement) pair
   writes the reason line, so the calls are bounded by the readers and usually fewer.

It runs inside the `blog-recommender` consumer, after the publishing transaction
committed: an LLM or embeddings failure raises, the consumer retries it with backoff and
dead-letters the event after its last attempt, and publishing itself never waits for it.
Every read happens in short transactions of its own before the model is called, so the
consumer's own transaction (on SQLite, the database's write lock) is held only for the
final inserts, never across a model call.
"""

from __future__ import annotations

from dataclasses import dataclass
from uuid import UUID

import numpy as np
import numpy.typing as npt
from sqlalchemy.ext.asyncio import AsyncSession

from veche.apps.blog.models import Post, Suggestion
from veche.apps.blog.social_repository import Audience
from veche.contracts.blog import SUGGESTION_GENERATED, SuggestionGenerated
from veche.kernel import Kernel
from veche.kernel.ai.services import AIServices
from veche.kernel.ai.types import Message
from veche.kernel.ai.vectors import VectorFilter, VectorRecord
from veche.kernel.events import emit

VECTOR_APP = "blog"
VECTOR_SCOPE = "posts"
PURPOSE = "recommender"
# How much each kind of engagement with a similar post says about the reader.
WEIGHTS = {"liked": 1.0, "read": 0.8, "follows_author": 0.7, "follows_blog": 0.6}
ENGAGEMENT_WORDS = {
    "liked": "liked",
    "read": "read",
    "follows_author": "follows the author of",
    "follows_blog": "follows the blog of",
}
# Engagement rows looked at per kind, per reader we may choose.
ENGAGEMENT_PER_READER = 20
MAX_REASON = 280
EMBEDDED_CHARACTERS = 2000
REASON_INSTRUCTIONS = (
    "You write reading suggestions for a blogging site. Reply with one sentence of at most "
    '25 words that starts with "You\'ll like this post because" and names what connects '
    "the two posts. Plain text only: no quotes, no lists, no markdown."
)


@dataclass(frozen=True, slots=True)
class Candidate:
    user_id: UUID
    score: float
    anchor_id: UUID  # the similar post the reader engaged with
    how: str


def vector_id(post_id: UUID) -> str:
    return f"post:{post_id}"


def post_text(post: Post) -> str:
    tags = " ".join(f"#{tag}" for tag in post.tags)
    return f"{post.title}\n{tags}\n{post.excerpt}"[:EMBEDDED_CHARACTERS]


async def index_post(ai: AIServices, post: Post) -> npt.NDArray[np.float32]:
    """Embed the post and keep its vector (again is fine: an upsert by post id)."""
    vector: npt.NDArray[np.float32] = np.asarray(
        (await ai.embedder.embed_passages([post_text(post)]))[0], dtype=np.float32
    )
    store = await ai.vectors()
    await store.upsert(
        [
            VectorRecord(
                id=vector_id(post.id),
                vector=vector,
                app=VECTOR_APP,
                scope=VECTOR_SCOPE,
                payload={
                    "post_id": str(post.id),
                    "author_id": str(post.author_id),
                    "blog_id": str(post.blog_id),
                },
            )
        ]
    )
    return vector


async def forget_post(ai: AIServices, post_id: UUID) -> None:
    """A post that is no longer published is no longer anyone's similar post."""
    store = await ai.vectors()
    await store.delete(VectorFilter(app=VECTOR_APP, scope=VECTOR_SCOPE, ids=[vector_id(post_id)]))


async def similar_posts(
    ai: AIServices, post: Post, vector: npt.NDArray[np.float32], *, limit: int, min_score: float
) -> dict[UUID, float]:
    store = await ai.vectors()
    hits = await store.search(
        vector,
        filter=VectorFilter(app=VECTOR_APP, scope=VECTOR_SCOPE),
        limit=limit + 1,
        min_score=min_score,
    )
    return {
        UUID(str(hit.payload["post_id"])): hit.score for hit in hits if hit.id != vector_id(post.id)
    }


def choose(
    post: Post,
    similar: dict[UUID, float],
    engaged: list[tuple[UUID, UUID, str]],
    unwilling: set[UUID],
    limit: int,
) -> list[Candidate]:
    """The best `limit` readers: each scored by their strongest engagement."""
    best: dict[UUID, Candidate] = {}
    for user_id, anchor_id, how in engaged:
        if user_id == post.author_id or user_id in unwilling or anchor_id not in similar:
            continue
        score = similar[anchor_id] * WEIGHTS[how]
        current = best.get(user_id)
        if current is None or score > current.score:
            best[user_id] = Candidate(user_id, score, anchor_id, how)
    return sorted(best.values(), key=lambda candidate: (-candidate.score, str(candidate.user_id)))[
        :limit
    ]


async def reason_line(ai: AIServices, post: Post, anchor_title: str, how: str) -> str:
    """The model's one line; what readers typed (titles, excerpts) goes in the user
    message as data, never into the instructions."""
    completion = await ai.llm.chat(
        [
            Message.system(REASON_INSTRUCTIONS),
            Message.user(
                f"New post: {post.title}\n"
                f"Tags: {', '.join(post.tags) or 'none'}\n"
                f"Summary: {post.excerpt[:400]}\n"
                f"The reader {ENGAGEMENT_WORDS[how]} the post: {anchor_title}"
            ),
        ],
        app=VECTOR_APP,
        purpose=PURPOSE,
        max_tokens=80,
    )
    line = " ".join((completion.content or "").split()).strip("\"'“”")[:MAX_REASON].strip()
    return line or f"You'll like this post because you {ENGAGEMENT_WORDS[how]} “{anchor_title}”."


async def recommend(kernel: Kernel, session: AsyncSession, post_id: UUID) -> list[Suggestion]:
    """Make the suggestions for a published post in `session` (the consumer's unit of
    work) and emit `blog.ai.suggestion.generated` for each; the new rows."""
    settings = kernel.settings.blog
    if not settings.suggestions_enabled:
        return []
    async with kernel.db.unit_of_work() as reading:
        post = await Audience(reading).post(post_id)
        if post is None or post.state != "published":
            return []  # unpublished or deleted since: nothing to suggest
    vector = await index_post(kernel.ai, post)
    similar = await similar_posts(
        kernel.ai,
        post,
        vector,
        limit=settings.suggestion_similar_posts,
        min_score=settings.suggestion_min_score,
    )
    if not similar:
        return []
    async with kernel.db.unit_of_work() as reading:
        audience = Audience(reading)
        live = await audience.published(list(similar))
        similar = {key: score for key, score in similar.items() if key in live}
        engaged = await audience.engaged(
            list(similar), limit=settings.suggestion_max_readers * ENGAGEMENT_PER_READER
        )
        unwilling = await audience.unwilling(post, list({user for user, _, _ in engaged}))
        chosen = choose(post, similar, engaged, unwilling, settings.suggestion_max_readers)
        titles = await audience.titles([candidate.anchor_id for candidate in chosen])
    if not chosen:
        return []
    reasons: dict[tuple[UUID, str], str] = {}
    for candidate in chosen:
        key = (candidate.anchor_id, candidate.how)
        if key not in reasons:
            reasons[key] = await reason_line(
                kernel.ai, post, titles.get(candidate.anchor_id, ""), candidate.how
            )
    rows = [
        Suggestion(
            user_id=candidate.user_id,
            post_id=post.id,
            reason=reasons[(candidate.anchor_id, candidate.how)],
            score=round(candidate.score, 4),
        )
        for candidate in chosen
    ]
    session.add_all(rows)
    await session.flush()
    for row in rows:
        await emit(
            session,
            SUGGESTION_GENERATED,
            SuggestionGenerated(
                suggestion_id=row.id,
                user_id=row.user_id,
                post_id=post.id,
                post_title=post.title,
                reason=row.reason,
                score=row.score,
            ),
            subject=str(row.id),
        )
    return rows
