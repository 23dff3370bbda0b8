"""Realtime: named channels with policies, per-channel history with offsets and epochs so a
client resumes exactly where it stopped, presence, and three transports (WebSocket, SSE,
NDJSON) over one hub per process, fanned out across replicas through Redis when
`VECHE_REALTIME_URL` is set. Apps publish with `await kernel.realtime.publish(...)` and
register a `ChannelPolicy` per channel prefix in `AppModule.channel_policies`."""

from veche.kernel.realtime.errors import (
    ChannelForbidden,
    InvalidChannel,
    InvalidResumeToken,
    PresenceDisabled,
    PublishForbidden,
    TooManyChannels,
    UnknownChannel,
)
from veche.kernel.realtime.hub import Hub
from veche.kernel.realtime.message import Member, Message, Position
from veche.kernel.realtime.policy import (
    AudienceCheck,
    ChannelCheck,
    ChannelPolicy,
    ReceiveHandler,
    Revocation,
)
from veche.kernel.realtime.transports.stream import FrameRenderer, ndjson_stream

__all__ = [
    "AudienceCheck",
    "ChannelCheck",
    "ChannelForbidden",
    "ChannelPolicy",
    "FrameRenderer",
    "Hub",
    "InvalidChannel",
    "InvalidResumeToken",
    "Member",
    "Message",
    "Position",
    "PresenceDisabled",
    "PublishForbidden",
    "ReceiveHandler",
    "Revocation",
    "TooManyChannels",
    "UnknownChannel",
    "ndjson_stream",
]
