"""What the benchmark drivers share: paths, the local PostgreSQL, logging and ports."""

from __future__ import annotations

import datetime as dt
import json
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "bench"
RESULTS = BENCH / "results"
VENV_BIN = Path(sys.executable).parent
HOST = "127.0.0.1"
PG_ADMIN = ["psql", "-h", HOST, "-p", "5432", "-U", "postgres", "-v", "ON_ERROR_STOP=1"]
PG_URL = "postgresql+asyncpg://postgres@127.0.0.1:5432/bench"
PASSWORD = "correct-horse-battery-staple-42"  # noqa: S105 - a throwaway benchmark account


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        port: int = sock.getsockname()[1]
        return port


def psql(*args: str, database: str = "postgres") -> str:
    result = subprocess.run(
        [*PG_ADMIN, "-d", database, "-tA", *args],
        check=True,
        capture_output=True,
        text=True,
        timeout=60,
    )
    return result.stdout.strip()


def reset_postgresql() -> str:
    """A clean `bench` database (created when missing, its public schema dropped); returns
    the server's version."""
    if psql("-c", "SELECT 1 FROM pg_database WHERE datname = 'bench'") != "1":
        psql("-c", "CREATE DATABASE bench")
    psql("-c", "DROP SCHEMA IF EXISTS public CASCADE; CREATE SCHEMA public;", database="bench")
    return psql("-c", "SHOW server_version")


def write_results(
    name: str, started: dt.datetime, arguments: dict[str, Any], **record: Any
) -> Path:
    """`bench/results/<name>-<stamp>.json`: when the run started, its arguments (without
    the subcommand) and `record`; returns the path."""
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / f"{name}-{started:%Y%m%dT%H%M%SZ}.json"
    document = {
        "started": started.isoformat(),
        "arguments": {k: v for k, v in arguments.items() if k != "command"},
        **record,
    }
    path.write_text(json.dumps(document, indent=2), encoding="utf-8")
    log(f"results written to {path.relative_to(ROOT)}")
    return path
