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


class WebAssetNotFound(NotFound):
    code = "blog.web_asset_not_found"
    title = "No such file of the web client"


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


# -- Messenger: a conversation you are not in answers exactly like one that does not exist --


class ConversationNotFound(NotFound):
    code = "blog.conversation_not_found"
    title = "Conversation not found"


class MessageNotFound(NotFound):
    code = "blog.message_not_found"
    title = "Message not found"


class NotMessageSender(Forbidden):
    code = "blog.not_message_sender"
    title = "Only the message's sender may do this"


class MessageDeleted(Conflict):
    code = "blog.message_deleted"
    title = "The message was deleted"


class MessageTooLong(BadRequest):
    status = 422
    code = "blog.message_too_long"
    title = "The message is too long"


class InvalidFrameData(BadRequest):
    status = 422
    code = "blog.invalid_frame_data"
    title = "The frame's data is not valid"


class UnknownFrameEvent(BadRequest):
    status = 422
    code = "blog.unknown_frame_event"
    title = "Conversations take 'message.send', 'typing' and 'read' frames"


class InvalidSeq(BadRequest):
    status = 422
    code = "blog.invalid_seq"
    title = "No message has this seq yet"


class ClientIdReused(Conflict):
    code = "blog.client_id_reused"
    title = "This client_id was already used for another message"


class NotConversationOwner(Forbidden):
    code = "blog.not_conversation_owner"
    title = "Only the group's owner may do this"


class DirectConversation(Conflict):
    code = "blog.direct_conversation"
    title = "A direct conversation always has its two members"


class TooManyMembers(BadRequest):
    status = 422
    code = "blog.too_many_members"
    title = "Too many members for a group"


class ConversationFull(Conflict):
    code = "blog.conversation_full"
    title = "The group has as many members as it may"


class UserBlocked(Forbidden):
    code = "blog.user_blocked"
    title = "A block between you and this user stops this"


class CannotBlockSelf(BadRequest):
    status = 422
    code = "blog.cannot_block_self"
    title = "You cannot block yourself"


class ConversationWithSelf(BadRequest):
    status = 422
    code = "blog.conversation_with_self"
    title = "A direct conversation needs another user"


class ConversationMemberNotFound(NotFound):
    code = "blog.conversation_member_not_found"
    title = "No such member in this conversation"


# -- likes, user follows, notifications and suggestions: another user's is a 404 ---------


class CannotFollowSelf(BadRequest):
    status = 422
    code = "blog.cannot_follow_self"
    title = "You cannot follow yourself"


class NotificationNotFound(NotFound):
    code = "blog.notification_not_found"
    title = "Notification not found"


class SuggestionNotFound(NotFound):
    code = "blog.suggestion_not_found"
    title = "Suggestion not found"
