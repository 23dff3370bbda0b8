"""The realtime HTTP and WebSocket routes, mounted by the application factory."""

from veche.kernel.realtime.transports import ws as _ws  # noqa: F401  (adds the /ws route)
from veche.kernel.realtime.transports.stream import router

__all__ = ["router"]
