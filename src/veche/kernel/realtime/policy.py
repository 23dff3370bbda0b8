"""Channel policies: who may subscribe to a channel and who may publish on it from a client.

Apps register one `ChannelPolicy` per channel prefix through `AppModule.channel_policies`;
the kernel registers `user:`. A channel no policy covers is refused, never silently empty.
"""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable, Collection, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from veche.kernel.identity.models import User
from veche.kernel.realtime.errors import (
    ChannelForbidden,
    PublishForbidden,
    UnknownChannel,
)
from veche.kernel.realtime.message import PREFIX_PATTERN, Message, channel_prefix

if TYPE_CHECKING:
    from veche.kernel.runtime import Kernel

ChannelCheck = Callable[[User, str], bool | Awaitable[bool]]
# A check that needs the process's services (a membership query in the database).
AudienceCheck = Callable[["Kernel", User, str], Awaitable[bool]]
# Takes a client's `publish` frame instead of the hub: (kernel, user, channel, event, data)
# -> the data of the `reply` frame sent back with the frame's `ref`.
ReceiveHandler = Callable[["Kernel", User, str, str, Any], Awaitable[dict[str, Any]]]
# The ids (text) of users whose subscriptions to a message's channel end once it is delivered.
Revocation = Callable[[Message], Collection[str]]


@dataclass(frozen=True, slots=True)
class ChannelPolicy:
    """Decides, for an authenticated user and a full channel name, whether the user may
    subscribe and whether a client of theirs may publish. Checks may be async; without a
    `publish` check only the server (`hub.publish`) publishes on the channel.

    `presence=False` suits channels with many readers that do not need to see each other
    (a broadcast feed): no presence entries, no join/leave frames, and `hub.presence`
    refuses the channel with `presence_disabled`.

    Channels whose rules live in an app's database (the members of a conversation) add:

    - `audience(kernel, user, channel)`: an async check given the kernel (for `kernel.db`),
      run after `subscribe` for every subscription and after `publish` for every client
      frame; both must allow. Without a kernel at hand it refuses.
    - `receive(kernel, user, channel, event, data)`: client `publish` frames go to it
      instead of straight to the hub, so the app can validate, store and then publish
      what it stored. It returns the data of the `reply` frame; a `ProblemError` it raises
      becomes an `error` frame with the problem's code. With `receive` set, `publish` is an
      optional extra gate (it need not be given).
    - `revokes(message)`: the users (ids as text) whose subscriptions to the channel end
      once that message is delivered (a member removed from a conversation); every replica
      sees the message, so it works across replicas without a lookup."""

    subscribe: ChannelCheck
    publish: ChannelCheck | None = None
    presence: bool = True
    audience: AudienceCheck | None = None
    receive: ReceiveHandler | None = None
    revokes: Revocation | None = None


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

    def revocation(self, channel: str) -> Revocation | None:
        """The policy's `revokes`, or None; cheap, as it runs for every delivered message."""
        prefix, _, _ = channel.partition(":")
        entry = self._policies.get(f"{prefix}:")
        return None if entry is None else entry[1].revokes

    async def authorize_subscribe(
        self, user: User, channel: str, kernel: Kernel | None = None
    ) -> None:
        policy = self._policy(channel)
        if not await _allowed(policy.subscribe, user, channel) or not await _in_audience(
            policy, kernel, user, channel
        ):
            raise ChannelForbidden(f"You may not subscribe to {channel!r}")

    async def authorize_publish(
        self, user: User, channel: str, kernel: Kernel | None = None
    ) -> ChannelPolicy:
        """Check a client's `publish` frame; returns the policy, whose `receive` (if any)
        takes the frame instead of the hub."""
        policy = self._policy(channel)
        check = policy.publish
        if check is None and policy.receive is None:
            raise PublishForbidden(f"Clients may not publish on {channel!r}")
        if check is not None and not await _allowed(check, user, channel):
            raise PublishForbidden(f"You may not publish on {channel!r}")
        if not await _in_audience(policy, kernel, user, channel):
            raise PublishForbidden(f"You may not publish on {channel!r}")
        return policy


async def _in_audience(
    policy: ChannelPolicy, kernel: Kernel | None, user: User, channel: str
) -> bool:
    if policy.audience is None:
        return True
    if kernel is None:  # a connection opened without the kernel cannot be checked
        return False
    return bool(await policy.audience(kernel, user, channel))
