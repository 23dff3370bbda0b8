"""What the benchmark drivers share: paths, the local PostgreSQL, logging and ports."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from pathlib import Path

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
