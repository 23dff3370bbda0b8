"""The baseline of the benchmark: a bare FastAPI app with one small JSON endpoint.

No middleware, no dependencies, no database: what FastAPI and uvicorn cost on their own.
It is served with the same uvicorn options as `veche serve` (one worker, no access log,
no server header, no proxy headers, uvicorn's automatic loop and HTTP implementation, which
pick uvloop and httptools when installed), so the difference to `GET /api/v1/me` is the
price of Veche's middleware, authentication, rate limit and database read.

    python bench/bare_app.py --host 127.0.0.1 --port 8001
"""

from __future__ import annotations

import argparse

import uvicorn
from fastapi import FastAPI

app = FastAPI(title="bare", docs_url=None, redoc_url=None, openapi_url=None)


@app.get("/bare")
async def bare() -> dict[str, str]:
    return {"status": "ok", "service": "bare"}


def main() -> None:
    parser = argparse.ArgumentParser(description="Serve the bare baseline app.")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8001)
    args = parser.parse_args()
    # The same options `veche serve` passes to uvicorn.run (see src/veche/cli.py).
    uvicorn.run(
        app,
        host=args.host,
        port=args.port,
        workers=1,
        proxy_headers=False,
        server_header=False,
        access_log=False,
        log_config=None,
    )


if __name__ == "__main__":
    main()
