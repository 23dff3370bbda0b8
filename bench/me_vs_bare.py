"""Load benchmark: an authenticated `GET /api/v1/me` against a bare FastAPI JSON endpoint.

    .venv/bin/python bench/me_vs_bare.py [--database sqlite|postgresql|both] [--duration N]

For each database it starts two servers as subprocesses on free loopback ports, in the same
run and with the same uvicorn options (one worker, no access log): `veche serve` and the
bare app of `bench/bare_app.py`. It migrates a clean database, registers a user, logs in
for an access token, measures the login cost, warms both servers up, then

1. runs `wrk` (closed loop) against both endpoints for the peak rate, and
2. runs `bench/openloop.py` (open loop, fixed rate, latency from the scheduled send time,
   so stalls are not hidden by coordinated omission) at half of each endpoint's own
   median peak rate for p50/p95/p99.

Each measurement is repeated (`--repetitions`, 3 by default) with the endpoints
alternating, and medians are reported. With two or more CPUs the servers are pinned to the
last CPU and the load generators to the first (`taskset`); `--no-pin` turns that off.
Everything is bounded in time, talks only to 127.0.0.1, prints a Markdown table, and writes
the raw results as JSON to `bench/results/`.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import http.client
import importlib.metadata
import json
import os
import platform
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from common import (
    BENCH,
    HOST,
    PASSWORD,
    PG_URL,
    RESULTS,
    ROOT,
    VENV_BIN,
    free_port,
    log,
    reset_postgresql,
)

ME_PATH = "/api/v1/me"
BARE_PATH = "/bare"
EMAIL = "bench@example.com"
TARGET_RATIO = 0.35
TARGET_P99_MS = 25.0
SERVER_ENV = {
    # Limits far above anything the benchmark reaches (the defaults refuse GET /me after
    # 600 requests a minute and logins after 20).
    "VECHE_RATE_LIMITS": json.dumps({"default": "100000000/minute", "auth": "100000/minute"}),
    "VECHE_ACCESS_LOG": "false",
    "VECHE_LOG_LEVEL": "warning",
    "VECHE_ENV": "dev",
    # One token has to outlive the whole run, however long --duration makes it.
    "VECHE_AUTH__ACCESS_TOKEN_TTL_SECONDS": "7200",
}


# -- small helpers ------------------------------------------------------------------------


def median(values: Sequence[float]) -> float:
    return float(statistics.median(values)) if values else 0.0


@dataclass(frozen=True, slots=True)
class Pinning:
    """Which CPUs the servers and the load generators run on (empty: not pinned)."""

    server: str = ""
    client: str = ""

    def prefix(self, cpus: str) -> list[str]:
        return ["taskset", "-c", cpus] if cpus else []

    def describe(self) -> str:
        if not self.server:
            return "not pinned"
        return f"servers on CPU {self.server}, load generators on CPU {self.client}"


def choose_pinning(enabled: bool) -> Pinning:
    cpus = sorted(os.sched_getaffinity(0))
    if not enabled or len(cpus) < 2 or shutil.which("taskset") is None:
        return Pinning()
    return Pinning(server=str(cpus[-1]), client=str(cpus[0]))


def request(
    port: int,
    method: str,
    path: str,
    body: dict[str, Any] | None = None,
    headers: dict[str, str] | None = None,
    connection: http.client.HTTPConnection | None = None,
) -> tuple[int, dict[str, Any]]:
    """One HTTP request over a given (kept-alive) connection or a new one."""
    conn = connection or http.client.HTTPConnection(HOST, port, timeout=30)
    all_headers = dict(headers or {})
    payload = None
    if body is not None:
        payload = json.dumps(body).encode()
        all_headers["Content-Type"] = "application/json"
    try:
        conn.request(method, path, body=payload, headers=all_headers)
        response = conn.getresponse()
        raw = response.read()
    finally:
        if connection is None:
            conn.close()
    data = json.loads(raw) if raw else {}
    return response.status, data if isinstance(data, dict) else {"body": data}


# -- servers ------------------------------------------------------------------------------


@dataclass(slots=True)
class Server:
    name: str
    port: int
    process: subprocess.Popen[bytes]
    log_path: Path

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=5)


def wait_ready(server: Server, path: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            break
        with contextlib.suppress(OSError, http.client.HTTPException, ValueError):
            status, _ = request(server.port, "GET", path)
            if status == 200:
                return
        time.sleep(0.2)
    tail = server.log_path.read_text(encoding="utf-8", errors="replace")[-2000:]
    raise RuntimeError(f"{server.name} did not become ready on port {server.port}:\n{tail}")


def start_server(
    name: str, command: list[str], port: int, env: dict[str, str], workdir: Path, ready: str
) -> Server:
    log_path = workdir / f"{name}.log"
    with log_path.open("wb") as output:
        process = subprocess.Popen(
            command, cwd=workdir, env=env, stdout=output, stderr=subprocess.STDOUT
        )
    server = Server(name=name, port=port, process=process, log_path=log_path)
    try:
        wait_ready(server, ready)
    except BaseException:
        server.stop()
        raise
    return server


@contextlib.contextmanager
def servers(
    env: dict[str, str], workdir: Path, pinning: Pinning
) -> Iterator[tuple[Server, Server]]:
    prefix = pinning.prefix(pinning.server)
    veche_port, bare_port = free_port(), free_port()
    veche = start_server(
        "veche",
        [*prefix, str(VENV_BIN / "veche"), "serve", "--host", HOST, "--port", str(veche_port)],
        veche_port,
        env,
        workdir,
        "/health",
    )
    try:
        bare = start_server(
            "bare",
            [
                *prefix,
                sys.executable,
                str(BENCH / "bare_app.py"),
                "--host",
                HOST,
                "--port",
                str(bare_port),
            ],
            bare_port,
            env,
            workdir,
            BARE_PATH,
        )
        try:
            yield veche, bare
        finally:
            bare.stop()
    finally:
        veche.stop()


# -- databases ----------------------------------------------------------------------------


def server_env(database: str, data_dir: Path) -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if not key.startswith("VECHE_")}
    env.update(SERVER_ENV)
    env["VECHE_DATA_DIR"] = str(data_dir)
    if database == "postgresql":
        env["VECHE_DATABASE_URL"] = PG_URL
    return env


def migrate(env: dict[str, str], workdir: Path) -> None:
    subprocess.run(
        [str(VENV_BIN / "veche"), "migrate"],
        cwd=workdir,
        env=env,
        check=True,
        capture_output=True,
        timeout=120,
    )


# -- measurements -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class WrkResult:
    requests_per_s: float
    requests: int
    non_2xx: int
    socket_errors: int
    p50_ms: float
    p90_ms: float
    p99_ms: float


_UNITS_MS = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60_000.0}


def _ms(text: str) -> float:
    match = re.fullmatch(r"([\d.]+)(us|ms|s|m)", text)
    if match is None:
        raise ValueError(f"not a wrk duration: {text!r}")
    return float(match.group(1)) * _UNITS_MS[match.group(2)]


def parse_wrk(output: str) -> WrkResult:
    def number(pattern: str) -> float:
        match = re.search(pattern, output)
        return float(match.group(1)) if match else 0.0

    percentiles = {
        int(p): _ms(value) for p, value in re.findall(r"^\s+(\d+)%\s+(\S+)$", output, re.M)
    }
    socket_errors = sum(int(n) for n in re.findall(r"(?:connect|read|write|timeout) (\d+)", output))
    requests_per_s = number(r"Requests/sec:\s+([\d.]+)")
    if not requests_per_s:
        raise RuntimeError(f"wrk printed no rate:\n{output}")
    return WrkResult(
        requests_per_s=requests_per_s,
        requests=int(number(r"(\d+) requests in")),
        non_2xx=int(number(r"Non-2xx or 3xx responses: (\d+)")),
        socket_errors=socket_errors,
        p50_ms=percentiles.get(50, 0.0),
        p90_ms=percentiles.get(90, 0.0),
        p99_ms=percentiles.get(99, 0.0),
    )


def run_wrk(
    url: str, headers: list[str], duration: float, connections: int, pinning: Pinning
) -> WrkResult:
    command = [
        *pinning.prefix(pinning.client),
        "wrk",
        "-t1",
        f"-c{connections}",
        f"-d{max(1, round(duration))}s",
        "--timeout",
        "10s",
        "--latency",
    ]
    for header in headers:
        command += ["-H", header]
    command.append(url)
    result = subprocess.run(
        command, check=True, capture_output=True, text=True, timeout=duration + 60
    )
    return parse_wrk(result.stdout)


def run_openloop(
    url: str,
    headers: list[str],
    rate: float,
    duration: float,
    connections: int,
    pinning: Pinning,
) -> dict[str, Any]:
    command = [
        *pinning.prefix(pinning.client),
        sys.executable,
        str(BENCH / "openloop.py"),
        "--url",
        url,
        "--rate",
        f"{rate:.1f}",
        "--duration",
        str(duration),
        "--connections",
        str(connections),
    ]
    for header in headers:
        command += ["--header", header]
    result = subprocess.run(
        command, check=True, capture_output=True, text=True, timeout=duration + 60
    )
    report: dict[str, Any] = json.loads(result.stdout)
    return report


@dataclass(slots=True)
class LoginCost:
    logins: int
    login_median_ms: float
    login_p90_ms: float
    login_min_ms: float
    argon2_verify_median_ms: float
    argon2_parameters: dict[str, int]


def argon2_verify_ms(samples: int, pinning: Pinning) -> tuple[float, dict[str, int]]:
    """The median time of one raw argon2id verify with Veche's default parameters, timed
    in a subprocess pinned like the servers."""
    code = (
        "import json, statistics, time\n"
        "from pwdlib.hashers.argon2 import Argon2Hasher\n"
        "from veche.settings import AuthSettings\n"
        "a = AuthSettings()\n"
        "h = Argon2Hasher(time_cost=a.argon2_time_cost, memory_cost=a.argon2_memory_kib,"
        " parallelism=a.argon2_parallelism)\n"
        f"pw = {PASSWORD!r}\n"
        "stored = h.hash(pw)\n"
        "times = []\n"
        f"for _ in range({samples}):\n"
        "    t = time.perf_counter(); assert h.verify(pw, stored)\n"
        "    times.append((time.perf_counter() - t) * 1000)\n"
        "print(json.dumps({'median_ms': statistics.median(times), 'hash': stored,"
        " 'memory_kib': a.argon2_memory_kib, 'time_cost': a.argon2_time_cost,"
        " 'parallelism': a.argon2_parallelism}))\n"
    )
    result = subprocess.run(
        [*pinning.prefix(pinning.server), sys.executable, "-c", code],
        check=True,
        capture_output=True,
        text=True,
        timeout=120,
    )
    data = json.loads(result.stdout)
    if not str(data["hash"]).startswith("$argon2id$"):
        raise RuntimeError(f"not an argon2id hash: {data['hash']}")
    parameters = {key: int(data[key]) for key in ("memory_kib", "time_cost", "parallelism")}
    return round(float(data["median_ms"]), 2), parameters


def measure_logins(port: int, count: int, pinning: Pinning) -> LoginCost:
    connection = http.client.HTTPConnection(HOST, port, timeout=30)
    times: list[float] = []
    try:
        for _ in range(count):
            started = time.perf_counter()
            status, _ = request(
                port,
                "POST",
                "/api/v1/auth/login",
                {"email": EMAIL, "password": PASSWORD},
                connection=connection,
            )
            times.append((time.perf_counter() - started) * 1000)
            if status != 200:
                raise RuntimeError(f"login answered {status}")
    finally:
        connection.close()
    times.sort()
    argon2_ms, parameters = argon2_verify_ms(count, pinning)
    return LoginCost(
        logins=count,
        login_median_ms=round(median(times), 2),
        login_p90_ms=round(times[int(0.9 * (len(times) - 1))], 2),
        login_min_ms=round(times[0], 2),
        argon2_verify_median_ms=argon2_ms,
        argon2_parameters=parameters,
    )


def sign_in(port: int) -> str:
    status, body = request(
        port,
        "POST",
        "/api/v1/auth/register",
        {"email": EMAIL, "password": PASSWORD, "display_name": "Bench"},
    )
    if status != 201:
        raise RuntimeError(f"register answered {status}: {body}")
    status, body = request(
        port, "POST", "/api/v1/auth/login", {"email": EMAIL, "password": PASSWORD}
    )
    if status != 200:
        raise RuntimeError(f"login answered {status}: {body}")
    token = str(body["access_token"])
    status, body = request(port, "GET", ME_PATH, headers={"Authorization": f"Bearer {token}"})
    if status != 200 or body.get("email") != EMAIL:
        raise RuntimeError(f"GET /me answered {status}: {body}")
    return token


# -- one database -------------------------------------------------------------------------


@dataclass(slots=True)
class EndpointResult:
    endpoint: str
    url: str
    wrk: list[WrkResult] = field(default_factory=list)
    openloop: list[dict[str, Any]] = field(default_factory=list)
    openloop_rate: float = 0.0

    @property
    def peak(self) -> float:
        return median([run.requests_per_s for run in self.wrk])

    def open_median(self, key: str) -> float:
        return median([float(run[key]) for run in self.openloop])

    def summary(self) -> dict[str, Any]:
        peaks = [run.requests_per_s for run in self.wrk]
        return {
            "peak_rps_median": round(self.peak, 1),
            "peak_rps_min": round(min(peaks), 1) if peaks else 0.0,
            "peak_rps_max": round(max(peaks), 1) if peaks else 0.0,
            "wrk_errors": sum(run.non_2xx + run.socket_errors for run in self.wrk),
            "openloop_rate": round(self.openloop_rate, 1),
            "achieved_rate_median": round(self.open_median("achieved_rate"), 1),
            "p50_ms": round(self.open_median("p50_ms"), 2),
            "p95_ms": round(self.open_median("p95_ms"), 2),
            "p99_ms": round(self.open_median("p99_ms"), 2),
            "p99_ms_all": [run["p99_ms"] for run in self.openloop],
            "max_ms": round(max((float(run["max_ms"]) for run in self.openloop), default=0), 2),
            "openloop_errors": sum(
                int(run["non_2xx"]) + int(run["errors"]) + int(run["timeouts"])
                for run in self.openloop
            ),
            "generator_cpu_max": max(
                (float(run["cpu_utilisation"]) for run in self.openloop), default=0.0
            ),
            "generator_kept_up": all(
                float(run["achieved_rate"]) >= 0.97 * float(run["target_rate"])
                for run in self.openloop
            ),
        }


def bench_database(database: str, args: argparse.Namespace, pinning: Pinning) -> dict[str, Any]:
    info: dict[str, Any] = {"database": database}
    with tempfile.TemporaryDirectory(prefix=f"veche-bench-{database}-") as tmp:
        workdir = Path(tmp)
        if database == "postgresql":
            info["postgresql_version"] = reset_postgresql()
        env = server_env(database, workdir)
        log(f"{database}: migrating")
        migrate(env, workdir)
        with servers(env, workdir, pinning) as (veche, bare):
            log(f"{database}: veche on :{veche.port}, bare on :{bare.port}")
            token = sign_in(veche.port)
            log(f"{database}: measuring {args.logins} sequential logins")
            info["login"] = asdict(measure_logins(veche.port, args.logins, pinning))
            endpoints = [
                (EndpointResult("bare", f"http://{HOST}:{bare.port}{BARE_PATH}"), []),
                (
                    EndpointResult("me", f"http://{HOST}:{veche.port}{ME_PATH}"),
                    [f"Authorization: Bearer {token}"],
                ),
            ]
            for result, headers in endpoints:
                log(f"{database}: warming up {result.endpoint} for {args.warmup} s")
                run_wrk(result.url, headers, args.warmup, args.connections, pinning)
            for repetition in range(args.repetitions):
                for result, headers in endpoints:
                    run = run_wrk(result.url, headers, args.duration, args.connections, pinning)
                    result.wrk.append(run)
                    log(
                        f"{database}: wrk {result.endpoint} #{repetition + 1}: "
                        f"{run.requests_per_s:.0f} req/s, errors {run.non_2xx + run.socket_errors}"
                    )
            for result, _ in endpoints:
                result.openloop_rate = result.peak / 2
            for repetition in range(args.repetitions):
                for result, headers in endpoints:
                    report = run_openloop(
                        result.url,
                        headers,
                        result.openloop_rate,
                        args.duration,
                        args.connections,
                        pinning,
                    )
                    result.openloop.append(report)
                    log(
                        f"{database}: open loop {result.endpoint} #{repetition + 1} at "
                        f"{result.openloop_rate:.0f}/s: achieved {report['achieved_rate']}/s, "
                        f"p50 {report['p50_ms']} p99 {report['p99_ms']} ms, "
                        f"generator CPU {report['cpu_utilisation']:.0%}"
                    )
    bare_result, me_result = (result for result, _ in endpoints)
    info["bare"] = {"summary": bare_result.summary(), "url_path": BARE_PATH}
    info["me"] = {"summary": me_result.summary(), "url_path": ME_PATH}
    info["bare"]["wrk"] = [asdict(run) for run in bare_result.wrk]
    info["me"]["wrk"] = [asdict(run) for run in me_result.wrk]
    info["bare"]["openloop"] = bare_result.openloop
    info["me"]["openloop"] = me_result.openloop
    ratio = me_result.peak / bare_result.peak if bare_result.peak else 0.0
    me_p99 = me_result.open_median("p99_ms")
    info["ratio_me_over_bare"] = round(ratio, 3)
    info["targets"] = {
        "throughput_ratio_at_least": TARGET_RATIO,
        "throughput_ratio_met": ratio >= TARGET_RATIO,
        "me_p99_ms_below": TARGET_P99_MS,
        "me_p99_met": me_p99 < TARGET_P99_MS,
    }
    return info


# -- reporting ----------------------------------------------------------------------------


def machine() -> dict[str, Any]:
    cpu_model = "unknown"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text(encoding="utf-8").splitlines():
            if line.startswith("model name"):
                cpu_model = line.split(":", 1)[1].strip()
                break
    memory = "unknown"
    with contextlib.suppress(OSError, ValueError, IndexError):
        first = Path("/proc/meminfo").read_text(encoding="utf-8").splitlines()[0]
        memory = f"{int(first.split()[1]) / 1024 / 1024:.1f} GiB"
    versions = {}
    for package in ("fastapi", "starlette", "uvicorn", "sqlalchemy", "aiosqlite", "asyncpg"):
        try:
            versions[package] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            versions[package] = "not installed"
    wrk_version = subprocess.run(
        ["wrk", "--version"], capture_output=True, text=True, timeout=10, check=False
    ).stdout.splitlines()
    return {
        "nproc": os.cpu_count(),
        "cpu_model": cpu_model,
        "memory": memory,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "packages": versions,
        "wrk": wrk_version[0] if wrk_version else "unknown",
        "load_average_at_start": os.getloadavg(),
    }


def markdown(results: list[dict[str, Any]], args: argparse.Namespace) -> str:
    lines = [
        f"Peak: wrk -t1 -c{args.connections} -d{args.duration:g}s; latency: open loop at half "
        f"of each endpoint's own peak, {args.duration:g} s, {args.connections} connections; "
        f"medians of {args.repetitions} runs.",
        "",
        "| Database | Endpoint | Peak req/s (min-max) | Open-loop rate | p50 ms | p95 ms "
        "| p99 ms | max ms | Errors |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for info in results:
        for name, label in (("bare", f"`GET {BARE_PATH}`"), ("me", f"`GET {ME_PATH}`")):
            s = info[name]["summary"]
            lines.append(
                f"| {info['database']} | {label} | {s['peak_rps_median']:.0f} "
                f"({s['peak_rps_min']:.0f}-{s['peak_rps_max']:.0f}) "
                f"| {s['openloop_rate']:.0f}/s (achieved {s['achieved_rate_median']:.0f}) "
                f"| {s['p50_ms']:.2f} | {s['p95_ms']:.2f} | {s['p99_ms']:.2f} "
                f"| {s['max_ms']:.1f} | {s['wrk_errors'] + s['openloop_errors']} |"
            )
    lines += [
        "",
        "| Database | /me ÷ bare throughput | Ratio target >= 35% | /me p99 at half peak "
        "| p99 target < 25 ms | Login median | argon2id verify median |",
        "|---|---|---|---|---|---|---|",
    ]
    for info in results:
        targets, login = info["targets"], info["login"]
        lines.append(
            f"| {info['database']} | {info['ratio_me_over_bare']:.1%} "
            f"| {'met' if targets['throughput_ratio_met'] else 'missed'} "
            f"| {info['me']['summary']['p99_ms']:.2f} ms "
            f"| {'met' if targets['me_p99_met'] else 'missed'} "
            f"| {login['login_median_ms']:.1f} ms | {login['argon2_verify_median_ms']:.1f} ms |"
        )
    return "\n".join(lines)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0])
    parser.add_argument("--database", choices=["sqlite", "postgresql", "both"], default="both")
    parser.add_argument("--duration", type=float, default=10.0, help="seconds per run")
    parser.add_argument("--repetitions", type=int, default=3, help="runs per measurement")
    parser.add_argument("--connections", type=int, default=32, help="connections per run")
    parser.add_argument("--warmup", type=float, default=3.0, help="seconds of warm-up")
    parser.add_argument("--logins", type=int, default=30, help="sequential logins timed")
    parser.add_argument(
        "--pin",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="pin servers and load generators to different CPUs with taskset",
    )
    args = parser.parse_args(argv)
    if args.duration < 1 or args.repetitions < 1 or args.connections < 1 or args.logins < 1:
        parser.error("--duration, --repetitions, --connections and --logins must be >= 1")
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if shutil.which("wrk") is None:
        raise SystemExit("wrk is not installed (apt-get install wrk)")
    pinning = choose_pinning(args.pin)
    databases = ["sqlite", "postgresql"] if args.database == "both" else [args.database]
    started = dt.datetime.now(dt.UTC)
    info = machine()
    log(f"pinning: {pinning.describe()}; load average {info['load_average_at_start']}")
    results = [bench_database(database, args, pinning) for database in databases]
    table = markdown(results, args)
    RESULTS.mkdir(parents=True, exist_ok=True)
    output = RESULTS / f"me_vs_bare-{started.strftime('%Y%m%dT%H%M%SZ')}.json"
    document = {
        "started": started.isoformat(),
        "finished": dt.datetime.now(dt.UTC).isoformat(),
        "command": " ".join([".venv/bin/python", "bench/me_vs_bare.py", *sys.argv[1:]]),
        "arguments": vars(args),
        "pinning": pinning.describe(),
        "server_environment": SERVER_ENV,
        "machine": info,
        "load_average_at_end": os.getloadavg(),
        "results": results,
        "markdown": table,
    }
    output.write_text(json.dumps(document, indent=2) + "\n", encoding="utf-8")
    print(table)
    print(f"\nRaw results: {output.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
