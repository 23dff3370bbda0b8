"""The three transports over the one hub: WebSocket, SSE and NDJSON, under /api/v1/realtime."""
