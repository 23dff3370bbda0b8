"""Channel policies: who may subscribe to a channel and who may publish on it from a client.

Apps register one `ChannelPolicy` per channel prefix through `AppModule.channel_policies`;
the kernel registers `user:`. A channel no policy covers is refused, never silently empty.
"""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass

from veche.kernel.identity.models import User
from veche.kernel.realtime.errors import (
    ChannelForbidden,
    PublishForbidden,
    UnknownChannel,
)
from veche.kernel.realtime.message import PREFIX_PATTERN, channel_prefix

ChannelCheck = Callable[[User, str], bool | Awaitable[bool]]


@dataclass(frozen=True, slots=True)
class ChannelPolicy:
    """Decides, for an authenticated user and a full channel name, whether the user may
    subscribe and whether a client of theirs may publish. Checks may be async; without a
    `publish` check only the server (`hub.publish`) publishes on the channel.

    `presence=False` suits channels with many readers that do not need to see each other
    (a broadcast feed): no presence entries, no join/leave frames, and `hub.presence`
    refuses the channel with `presence_disabled`."""

    subscribe: ChannelCheck
    publish: ChannelCheck | None = None
    presence: bool = True


async def _allowed(check: ChannelCheck, user: User, channel: str) -> bool:
    result = check(user, channel)
    if inspect.isawaitable(result):
        result = await result
    return bool(result)


def _own_user_channel(user: User, channel: str) -> bool:
    return channel == f"user:{user.id}"


USER_POLICY = ChannelPolicy(subscribe=_own_user_channel)


class PolicyRegistry:
    """Policies by prefix; a prefix belongs to exactly one owner (the kernel or an app)."""

    def __init__(self) -> None:
        self._policies: dict[str, tuple[str, ChannelPolicy]] = {}

    def register(self, prefix: str, policy: ChannelPolicy, *, owner: str) -> None:
        from veche.kernel.modules import ManifestError  # the error apps already get

        if not PREFIX_PATTERN.match(prefix):
            raise ManifestError(f"{owner}: channel prefix {prefix!r} is not like 'name:'")
        if not isinstance(policy, ChannelPolicy):
            raise ManifestError(f"{owner}: the policy for {prefix!r} is not a ChannelPolicy")
        if prefix in self._policies:
            holder = self._policies[prefix][0]
            raise ManifestError(
                f"{owner}: channel prefix {prefix!r} is already claimed by {holder}"
            )
        self._policies[prefix] = (owner, policy)

    def register_all(self, policies: Mapping[str, ChannelPolicy], *, owner: str) -> None:
        for prefix, policy in policies.items():
            self.register(prefix, policy, owner=owner)

    def prefixes(self) -> dict[str, str]:
        return {prefix: owner for prefix, (owner, _policy) in self._policies.items()}

    def _policy(self, channel: str) -> ChannelPolicy:
        prefix = channel_prefix(channel)
        entry = self._policies.get(prefix)
        if entry is None:
            raise UnknownChannel(f"No policy covers channels starting with {prefix!r}")
        return entry[1]

    def presence_enabled(self, channel: str) -> bool:
        return self._policy(channel).presence

    async def authorize_subscribe(self, user: User, channel: str) -> None:
        if not await _allowed(self._policy(channel).subscribe, user, channel):
            raise ChannelForbidden(f"You may not subscribe to {channel!r}")

    async def authorize_publish(self, user: User, channel: str) -> None:
        check = self._policy(channel).publish
        if check is None:
            raise PublishForbidden(f"Clients may not publish on {channel!r}")
        if not await _allowed(check, user, channel):
            raise PublishForbidden(f"You may not publish on {channel!r}")
