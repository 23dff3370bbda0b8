"""The realtime hub's expected failures, each with its status and stable code.

SSE and NDJSON answer them as problem+json before the stream starts; WebSocket sends them
as `error` frames with the same code.
"""

from __future__ import annotations

from veche.kernel.errors import (
    BadRequest,
    Conflict,
    Forbidden,
    ProblemError,
    ServiceUnavailable,
)


class InvalidChannel(BadRequest):
    code = "invalid_channel"
    title = "Not a channel name"


class UnknownChannel(Forbidden):
    code = "unknown_channel"
    title = "No policy covers this channel"


class ChannelForbidden(Forbidden):
    code = "channel_forbidden"
    title = "Not allowed on this channel"


class PublishForbidden(Forbidden):
    code = "publish_forbidden"
    title = "Clients may not publish on this channel"


class TooManyChannels(ProblemError):
    status = 422
    code = "too_many_channels"
    title = "Too many channels"


class InvalidResumeToken(BadRequest):
    code = "invalid_resume_token"
    title = "The resume token is not valid"


class PresenceDisabled(Conflict):
    code = "presence_disabled"
    title = "This channel keeps no presence"


class UserMismatch(Forbidden):
    code = "user_mismatch"
    title = "The token belongs to another user"


class RealtimeStopping(ServiceUnavailable):
    code = "realtime_stopping"
    title = "The server is restarting"
