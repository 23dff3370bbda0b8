"""The blog app's expected failures. Drafts and scheduled posts of others answer exactly
like posts that do not exist; public objects (blogs, published posts, comments, media)
answer 403 when the caller may read but not change them."""

from __future__ import annotations

from veche.kernel import BadRequest, Conflict, Forbidden, NotFound


class ProfileNotFound(NotFound):
    code = "blog.profile_not_found"
    title = "User not found"


class UsernameTaken(Conflict):
    code = "blog.username_taken"
    title = "Username taken"


class UsernameReserved(Conflict):
    code = "blog.username_reserved"
    title = "Username reserved"


class BlogNotFound(NotFound):
    code = "blog.blog_not_found"
    title = "Blog not found"


class BlogSlugTaken(Conflict):
    code = "blog.blog_slug_taken"
    title = "Blog address taken"


class NotBlogOwner(Forbidden):
    code = "blog.not_blog_owner"
    title = "Only the blog's owner may do this"


class NotBlogAuthor(Forbidden):
    code = "blog.not_blog_author"
    title = "Only the blog's owner and authors may write in it"


class MemberNotFound(NotFound):
    code = "blog.member_not_found"
    title = "No such author in this blog"


class OwnerIsMember(Conflict):
    code = "blog.owner_is_member"
    title = "The blog's owner is always a member"


class PostNotFound(NotFound):
    code = "blog.post_not_found"
    title = "Post not found"


class PostSlugTaken(Conflict):
    code = "blog.post_slug_taken"
    title = "Post address taken in this blog"


class NotPostEditor(Forbidden):
    code = "blog.not_post_editor"
    title = "Only the post's author or the blog's owner may do this"


class PostNotPublished(Conflict):
    code = "blog.post_not_published"
    title = "The post is not published"


class InvalidSchedule(BadRequest):
    status = 422
    code = "blog.invalid_schedule"
    title = "The publication time is not valid"


class InvalidPostFilter(BadRequest):
    code = "blog.invalid_filter"
    title = "The filter or sort is not valid"


class CommentNotFound(NotFound):
    code = "blog.comment_not_found"
    title = "Comment not found"


class NotCommentAuthor(Forbidden):
    code = "blog.not_comment_author"
    title = "Only the comment's author may do this"


class MediaNotFound(NotFound):
    code = "blog.media_not_found"
    title = "Media not found"


class NotMediaOwner(Forbidden):
    code = "blog.not_media_owner"
    title = "Only the media's owner may do this"


class MediaNotUsable(BadRequest):
    status = 422
    code = "blog.media_not_usable"
    title = "Attach only your own uploaded images"


class EmptyContent(BadRequest):
    status = 422
    code = "blog.empty_content"
    title = "Nothing is left after sanitizing"
