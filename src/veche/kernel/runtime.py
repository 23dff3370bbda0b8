"""The kernel's shared services for one process, built once from the settings.

The application factory keeps one `Kernel` on `app.state.kernel`; route dependencies and
CLI commands reach the database, limiter, hashers and token service through it, so no
module holds global state and a test can build as many independent kernels as it needs.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from veche.kernel.db import Database
from veche.kernel.events.bus import EventBus
from veche.kernel.ratelimit import RateLimiter
from veche.settings import Settings

if TYPE_CHECKING:
    from veche.kernel.ai.services import AIServices
    from veche.kernel.identity.passwords import PasswordHasher
    from veche.kernel.identity.tokens import AccessTokens
    from veche.kernel.realtime import Hub
    from veche.kernel.storage import BlobStore


@dataclass(slots=True)
class Kernel:
    settings: Settings
    db: Database
    limiter: RateLimiter
    passwords: PasswordHasher
    tokens: AccessTokens
    cursor_key: bytes
    realtime: Hub
    events: EventBus
    ai: AIServices
    blobs: BlobStore
    # Each app's own per-process runtime (workers, caches), by app name, put here by the
    # app's startup hook; the kernel never looks inside.
    apps: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_settings(cls, settings: Settings) -> Kernel:
        # Imported here: identity's own modules depend on the kernel container.
        from veche.kernel.ai.services import AIServices
        from veche.kernel.identity.passwords import PasswordHasher
        from veche.kernel.identity.tokens import AccessTokens, derive_key
        from veche.kernel.realtime import Hub
        from veche.kernel.storage import blob_store_from_settings

        keys = settings.signing_keys
        db = Database.from_settings(settings)
        return cls(
            settings=settings,
            db=db,
            limiter=RateLimiter(settings),
            passwords=PasswordHasher(settings.auth),
            tokens=AccessTokens(keys, settings.auth),
            cursor_key=derive_key(keys[0], "pagination-cursor"),
            realtime=Hub.from_settings(settings, derive_key(keys[0], "realtime-resume")),
            events=EventBus(settings, db),
            ai=AIServices(settings, db),
            blobs=blob_store_from_settings(settings),
        )

    async def close(self) -> None:
        await self.events.stop()
        await self.ai.aclose()
        await self.blobs.close()
        await self.db.dispose()
