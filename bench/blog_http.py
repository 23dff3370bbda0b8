"""Blog benchmark: post reads and post creation over HTTP, against a bare baseline in the
same run, and the image pipeline's time per megapixel.

    .venv/bin/python bench/blog_http.py [--database sqlite|postgresql|both] [--duration N]

The plan's SLO is p95 under 500 ms for reads and 1.5 s for writes at 100 requests/s; the
targets here are far tighter: `GET /api/v1/blog/posts/{id}` p95 under 30 ms at 300/s and
`POST /api/v1/blog/posts` p95 under 100 ms at 50/s. For each database it migrates a clean
database, starts `veche serve` with only the blog app and the bare app of
`bench/bare_app.py` (same uvicorn options) as subprocesses on free loopback ports, signs
in, makes a blog and seeds published posts, warms up, then per repetition, alternating
Veche and the baseline:

1. reads: `bench/openloop.py` (open loop, latency from the scheduled send time) at the
   read rate against one post, and against `GET /bare` at the same rate;
2. creates: this script's own open-loop driver (`post-driver`, in a subprocess like the
   read generator) sending `POST /api/v1/blog/posts` with a 2 KB HTML body at the create
   rate, and the same driver sending `GET /bare` at the same rate as the baseline.

Then it times `process_image` (decode, checks, three WebP variants) on 1, 4 and 12
megapixel JPEGs in this process and reports milliseconds per megapixel.

`--scenario feed` measures `GET /api/v1/blog/feed` instead (target p95 under 30 ms at
300/s). It seeds `--authors` (20) users, each with a blog and `--posts-per-author` (15)
published posts; the reader follows the 20 blogs; every post gets likes from
`--likes-per-post` (5) of the other authors and `--comments-per-post` (2) comments, and the
reader likes every third post and comments on every fifth (so the page's `liked` and
`commented` have both answers). Suggestions are off (`VECHE_BLOG__SUGGESTIONS_ENABLED`):
the recommender would run the local embedding model on the server's CPU for every seeded
post; the feed still asks for them. Once the event consumers are idle (two cache hits in a
row), per repetition, alternating, `bench/openloop.py` at the read rate runs against:

1. the feed, **cached**: the server that seeded (role `all`), the first page served from
   its in-process cache (`Cache-Status: veche; hit`, checked before and after);
2. the feed, **uncached**: a second `veche serve` on the same database with
   `VECHE_BLOG__FEED_CACHE_SECONDS=0` (the documented switch that turns the cache off) and
   role `api`, so every request computes the page (`veche; fwd=miss`, checked);
3. `GET /bare` at the same rate.

With two or more
CPUs the servers are pinned to the last CPU and the load generators to the first
(`--no-pin` turns that off). PostgreSQL runs use their own database, `bench_blog`.
Prints a Markdown table and writes the raw results as JSON to `bench/results/`.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import io
import json
import math
import os
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from common import BENCH, HOST, PASSWORD, PG_ADMIN, VENV_BIN, free_port, log, write_results
from me_vs_bare import (
    SERVER_ENV,
    Pinning,
    choose_pinning,
    migrate,
    request,
    run_openloop,
    servers,
    sign_in,
)

PG_BLOG_URL = "postgresql+asyncpg://postgres@127.0.0.1:5432/bench_blog"
BLOG = "bench"
READ_TARGET_P95_MS = 30.0
CREATE_TARGET_P95_MS = 100.0
BODY_HTML = "".join(
    f"<h2>Part {n}</h2><p>The <b>lamp</b> turns <em>slowly</em>; see "
    f'<a href="https://example.com/{n}">notes</a>. {"Words of the night. " * 4}</p>'
    for n in range(8)
)
BLOG_ENV = {
    **SERVER_ENV,
    "VECHE_APPS": "blog",
    "VECHE_RATE_LIMITS": json.dumps(
        {
            "default": "100000000/minute",
            "auth": "100000/minute",
            "blog_write": "100000000/minute",
            "blog_media": "100000/minute",
        }
    ),
}


# -- the open-loop POST driver (run as its own process) ---------------------------------


def percentile(sorted_values: list[float], fraction: float) -> float:
    if not sorted_values:
        return 0.0
    rank = max(1, math.ceil(fraction * len(sorted_values)))
    return sorted_values[min(rank, len(sorted_values)) - 1]


async def drive(
    url: str, method: str, token: str, rate: float, duration: float, connections: int
) -> dict[str, Any]:
    """Send request i at `start + i / rate` whatever the answers; latency is measured from
    the scheduled time, so a stall counts in full for every request it delayed."""
    import httpx

    limits = httpx.Limits(max_connections=connections, max_keepalive_connections=connections)
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    latencies: list[float] = []
    statuses: dict[int, int] = {}
    errors = 0
    async with httpx.AsyncClient(limits=limits, timeout=10.0, headers=headers) as client:
        gate = asyncio.Semaphore(connections)

        async def one(index: int, scheduled: float) -> None:
            nonlocal errors
            async with gate:
                try:
                    if method == "POST":
                        body = {
                            "blog": BLOG,
                            "title": f"Bench post {index} {scheduled:.6f}",
                            "body_html": BODY_HTML,
                            "tags": ["bench", f"t{index % 10}"],
                            "state": "published",
                        }
                        response = await client.post(url, json=body)
                    else:
                        response = await client.get(url)
                except httpx.HTTPError:
                    errors += 1
                    return
            latencies.append(time.perf_counter() - scheduled)
            statuses[response.status_code] = statuses.get(response.status_code, 0) + 1

        count = int(rate * duration)
        start = time.perf_counter() + 0.05
        tasks = []
        for index in range(count):
            scheduled = start + index / rate
            delay = scheduled - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(one(index, scheduled)))
        await asyncio.gather(*tasks)
        elapsed = time.perf_counter() - start
    ordered = sorted(latencies)

    def ms(value: float) -> float:
        return round(value * 1000.0, 3)

    ok = sum(n for status, n in statuses.items() if 200 <= status < 300)
    return {
        "url": url,
        "method": method,
        "target_rate": rate,
        "achieved_rate": round(len(latencies) / elapsed, 1),
        "completed": len(latencies),
        "ok": ok,
        "non_2xx": len(latencies) - ok,
        "errors": errors,
        "statuses": {str(key): value for key, value in sorted(statuses.items())},
        "p50_ms": ms(percentile(ordered, 0.50)),
        "p95_ms": ms(percentile(ordered, 0.95)),
        "p99_ms": ms(percentile(ordered, 0.99)),
        "max_ms": ms(ordered[-1] if ordered else 0.0),
    }


def run_driver(
    url: str, method: str, token: str, rate: float, duration: float, pinning: Pinning
) -> dict[str, Any]:
    command = [
        *pinning.prefix(pinning.client),
        sys.executable,
        str(BENCH / "blog_http.py"),
        "post-driver",
        "--url",
        url,
        "--method",
        method,
        "--rate",
        f"{rate:.1f}",
        "--duration",
        str(duration),
    ]
    result = subprocess.run(
        command,
        check=True,
        capture_output=True,
        text=True,
        timeout=duration + 90,
        env={"BENCH_TOKEN": token, "PATH": "/usr/bin:/bin"},
    )
    report: dict[str, Any] = json.loads(result.stdout)
    return report


# -- the image pipeline -----------------------------------------------------------------


def photo_like(width: int, height: int) -> bytes:
    """A JPEG with gradients and noise, closer to a photograph than a flat colour."""
    from PIL import Image

    gradient = Image.linear_gradient("L").resize((width, height))
    noise = Image.effect_noise((width, height), 40)
    image = Image.merge("RGB", (gradient, noise, gradient.transpose(Image.Transpose.ROTATE_180)))
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=90)
    return buffer.getvalue()


def bench_images(repetitions: int) -> list[dict[str, Any]]:
    from veche.apps.blog.media import IMAGE_VARIANTS
    from veche.kernel.storage import process_image

    rows = []
    for width, height in ((1200, 834), (2400, 1667), (4000, 3000)):
        data = photo_like(width, height)
        process_image(data, IMAGE_VARIANTS, max_pixels=50_000_000)  # warm-up
        timings = []
        for _ in range(repetitions):
            result = process_image(data, IMAGE_VARIANTS, max_pixels=50_000_000)
            timings.append(result.seconds)
        megapixels = width * height / 1_000_000
        median_s = statistics.median(timings)
        rows.append(
            {
                "width": width,
                "height": height,
                "megapixels": round(megapixels, 2),
                "bytes": len(data),
                "median_ms": round(median_s * 1000, 1),
                "ms_per_megapixel": round(median_s * 1000 / megapixels, 1),
            }
        )
        log(f"image {width}x{height}: {rows[-1]['median_ms']} ms")
    return rows


def machine() -> dict[str, Any]:
    import importlib.metadata
    import platform

    versions = {}
    for package in ("fastapi", "uvicorn", "sqlalchemy", "aiosqlite", "asyncpg", "pillow", "nh3"):
        try:
            versions[package] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            versions[package] = "not installed"
    cpu_model = "unknown"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text(encoding="utf-8").splitlines():
            if line.startswith("model name"):
                cpu_model = line.split(":", 1)[1].strip()
                break
    return {
        "nproc": os.cpu_count(),
        "cpu_model": cpu_model,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "packages": versions,
        "load_average_at_start": os.getloadavg(),
    }


# -- one database -----------------------------------------------------------------------


def reset_blog_database() -> None:
    def psql(sql: str, database: str = "postgres") -> str:
        result = subprocess.run(
            [*PG_ADMIN, "-d", database, "-tA", "-c", sql],
            check=True,
            capture_output=True,
            text=True,
            timeout=60,
        )
        return result.stdout.strip()

    if psql("SELECT 1 FROM pg_database WHERE datname = 'bench_blog'") != "1":
        psql("CREATE DATABASE bench_blog")
    psql("DROP SCHEMA IF EXISTS public CASCADE; CREATE SCHEMA public;", database="bench_blog")


def seed(port: int, token: str, posts: int) -> str:
    auth = {"Authorization": f"Bearer {token}"}
    status, body = request(
        port, "POST", "/api/v1/blog/blogs", {"slug": BLOG, "title": "Bench"}, auth
    )
    if status != 201:
        raise RuntimeError(f"creating the blog answered {status}: {body}")
    post_id = ""
    for index in range(posts):
        status, body = request(
            port,
            "POST",
            "/api/v1/blog/posts",
            {
                "blog": BLOG,
                "title": f"Seed {index}",
                "body_html": BODY_HTML,
                "tags": ["seed"],
                "state": "published",
            },
            auth,
        )
        if status != 201:
            raise RuntimeError(f"seeding answered {status}: {body}")
        post_id = str(body["id"])
    return post_id


@dataclass(slots=True)
class Series:
    runs: list[dict[str, Any]] = field(default_factory=list)

    def median(self, key: str) -> float:
        return float(statistics.median(float(run[key]) for run in self.runs)) if self.runs else 0.0

    def failures(self) -> int:
        return sum(int(run.get("non_2xx", 0)) + int(run.get("errors", 0)) for run in self.runs)


def bench_database(database: str, args: argparse.Namespace, pinning: Pinning) -> dict[str, Any]:
    log(f"== {database} ==")
    with tempfile.TemporaryDirectory(prefix="veche-bench-blog-") as directory:
        workdir = Path(directory)
        env = {k: v for k, v in os.environ.items() if not k.startswith("VECHE_")}
        env.update(BLOG_ENV)
        env["VECHE_DATA_DIR"] = str(workdir / "var")
        if database == "postgresql":
            reset_blog_database()
            env["VECHE_DATABASE_URL"] = PG_BLOG_URL
        migrate(env, workdir)
        with servers(env, workdir, pinning) as (veche, bare):
            token = sign_in(veche.port)
            post_id = seed(veche.port, token, args.posts)
            read_url = f"http://{HOST}:{veche.port}/api/v1/blog/posts/{post_id}"
            bare_url = f"http://{HOST}:{bare.port}/bare"
            create_url = f"http://{HOST}:{veche.port}/api/v1/blog/posts"
            log("warming up")
            run_openloop(read_url, [], args.read_rate, 3, 16, pinning)
            run_openloop(bare_url, [], args.read_rate, 3, 16, pinning)
            reads, read_base, creates, create_base = Series(), Series(), Series(), Series()
            for repetition in range(args.repetitions):
                log(f"repetition {repetition + 1}/{args.repetitions}")
                reads.runs.append(
                    run_openloop(read_url, [], args.read_rate, args.duration, 32, pinning)
                )
                read_base.runs.append(
                    run_openloop(bare_url, [], args.read_rate, args.duration, 32, pinning)
                )
                creates.runs.append(
                    run_driver(create_url, "POST", token, args.create_rate, args.duration, pinning)
                )
                create_base.runs.append(
                    run_driver(bare_url, "GET", "", args.create_rate, args.duration, pinning)
                )
                log(
                    f"read p95 {reads.runs[-1]['p95_ms']} ms (bare "
                    f"{read_base.runs[-1]['p95_ms']}), create p95 {creates.runs[-1]['p95_ms']} "
                    f"ms (bare {create_base.runs[-1]['p95_ms']})"
                )
    return {
        "database": database,
        "read": {"veche": reads.runs, "bare": read_base.runs},
        "create": {"veche": creates.runs, "bare": create_base.runs},
        "summary": {
            "read_p50_ms": reads.median("p50_ms"),
            "read_p95_ms": reads.median("p95_ms"),
            "read_p99_ms": reads.median("p99_ms"),
            "read_bare_p95_ms": read_base.median("p95_ms"),
            "read_achieved": reads.median("achieved_rate"),
            "read_failures": reads.failures(),
            "create_p50_ms": creates.median("p50_ms"),
            "create_p95_ms": creates.median("p95_ms"),
            "create_p99_ms": creates.median("p99_ms"),
            "create_bare_p95_ms": create_base.median("p95_ms"),
            "create_achieved": creates.median("achieved_rate"),
            "create_failures": creates.failures(),
        },
    }


def markdown(results: list[dict[str, Any]], images: list[dict[str, Any]], args: Any) -> str:
    lines = [
        f"Reads at {args.read_rate:.0f}/s, creates at {args.create_rate:.0f}/s, "
        f"{args.duration:.0f} s each, median of {args.repetitions}.",
        "",
        "| database | endpoint | p50 ms | p95 ms | p99 ms | bare p95 ms | achieved/s "
        "| failures | target p95 |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for result in results:
        s = result["summary"]
        for kind, target in (("read", READ_TARGET_P95_MS), ("create", CREATE_TARGET_P95_MS)):
            verdict = "met" if s[f"{kind}_p95_ms"] < target else "missed"
            lines.append(
                f"| {result['database']} | {kind} | {s[f'{kind}_p50_ms']:.1f} "
                f"| {s[f'{kind}_p95_ms']:.1f} | {s[f'{kind}_p99_ms']:.1f} "
                f"| {s[f'{kind}_bare_p95_ms']:.1f} | {s[f'{kind}_achieved']:.0f} "
                f"| {s[f'{kind}_failures']} | < {target:.0f} ms: {verdict} |"
            )
    lines += ["", "| image | megapixels | median ms | ms per megapixel |", "|---|---|---|---|"]
    for row in images:
        lines.append(
            f"| {row['width']}x{row['height']} JPEG | {row['megapixels']} "
            f"| {row['median_ms']} | {row['ms_per_megapixel']} |"
        )
    return "\n".join(lines)


# -- the feed ---------------------------------------------------------------------------

FEED_PATH = "/api/v1/blog/feed"
FEED_TARGET_P95_MS = 30.0
FEED_ENV = {
    # The recommender would embed every seeded post with the local model on the server's
    # CPU while the feed is measured.
    "VECHE_BLOG__SUGGESTIONS_ENABLED": "false",
    "VECHE_RATE_LIMITS": json.dumps(
        {
            "default": "100000000/minute",
            "auth": "100000/minute",
            "blog_write": "100000000/minute",
        }
    ),
}


async def seed_feed(port: int, reader_token: str, args: argparse.Namespace) -> dict[str, int]:
    """Authors with a blog and published posts each, the reader following every blog,
    likes and comments from the other authors and some from the reader."""
    import httpx

    limits = httpx.Limits(max_connections=8, max_keepalive_connections=8)
    gate = asyncio.Semaphore(8)
    counts = {"posts": 0, "likes": 0, "comments": 0}
    async with httpx.AsyncClient(
        base_url=f"http://{HOST}:{port}/api/v1", limits=limits, timeout=60
    ) as client:

        async def call(method: str, path: str, token: str, body: Any = None) -> Any:
            async with gate:
                response = await client.request(
                    method, path, json=body, headers={"Authorization": f"Bearer {token}"}
                )
            if response.status_code >= 300:
                raise RuntimeError(f"{method} {path} answered {response.status_code}")
            return response.json() if response.content else None

        async def author(index: int) -> str:
            email = f"author{index}@example.com"
            account = {"email": email, "password": PASSWORD, "display_name": f"Author {index}"}
            async with gate:
                registered = await client.post("/auth/register", json=account)
                login = await client.post(
                    "/auth/login", json={"email": email, "password": PASSWORD}
                )
            if registered.status_code != 201 or login.status_code != 200:
                raise RuntimeError(f"author {index}: {registered.status_code}")
            token = str(login.json()["access_token"])
            blog = {"slug": f"author-{index}", "title": f"Author {index}"}
            await call("POST", "/blog/blogs", token, blog)
            return token

        tokens = await asyncio.gather(*(author(i) for i in range(args.authors)))
        follows = [f"/blog/blogs/author-{i}/follow" for i in range(args.authors)]
        await asyncio.gather(*(call("PUT", path, reader_token) for path in follows))
        posts: list[tuple[int, str]] = []
        for number in range(args.posts_per_author):  # interleaved: a realistic timeline
            created = await asyncio.gather(
                *(
                    call(
                        "POST",
                        "/blog/posts",
                        tokens[i],
                        {
                            "blog": f"author-{i}",
                            "title": f"Post {number} of author {i}",
                            "body_html": BODY_HTML,
                            "tags": ["feed", f"t{number % 5}"],
                            "state": "published",
                        },
                    )
                    for i in range(args.authors)
                )
            )
            posts += [(i, str(post["id"])) for i, post in enumerate(created)]
        counts["posts"] = len(posts)
        actions = []
        for number, (owner, post_id) in enumerate(posts):
            others = [i for i in range(args.authors) if i != owner]
            for k in range(args.likes_per_post):
                liker = others[(number + k) % len(others)]
                actions.append(call("PUT", f"/blog/posts/{post_id}/like", tokens[liker]))
            for k in range(args.comments_per_post):
                commenter = others[(number + 7 + k) % len(others)]
                body = {"body_html": f"<p>Comment {k} on post {number}.</p>"}
                actions.append(
                    call("POST", f"/blog/posts/{post_id}/comments", tokens[commenter], body)
                )
            if number % 3 == 0:
                actions.append(call("PUT", f"/blog/posts/{post_id}/like", reader_token))
                counts["likes"] += 1
            if number % 5 == 0:
                body = {"body_html": f"<p>The reader on post {number}.</p>"}
                actions.append(call("POST", f"/blog/posts/{post_id}/comments", reader_token, body))
                counts["comments"] += 1
        counts["likes"] += len(posts) * args.likes_per_post
        counts["comments"] += len(posts) * args.comments_per_post
        await asyncio.gather(*actions)
    return counts


def feed_status(port: int, token: str) -> tuple[str, int]:
    """One feed read: its Cache-Status and how many items it had."""
    import http.client

    conn = http.client.HTTPConnection(HOST, port, timeout=30)
    try:
        conn.request("GET", FEED_PATH, headers={"Authorization": f"Bearer {token}"})
        response = conn.getresponse()
        body = json.loads(response.read())
        if response.status != 200:
            raise RuntimeError(f"the feed answered {response.status}: {body}")
        return response.getheader("Cache-Status", ""), len(body["items"])
    finally:
        conn.close()


def wait_for_quiet_feed(port: int, token: str, timeout: float = 300.0) -> float:
    """Wait until the event consumers stopped renewing the reader's feed: two hits in a
    row one second apart. Returns the seconds waited."""
    started = time.monotonic()
    hits = 0
    while time.monotonic() - started < timeout:
        status, _ = feed_status(port, token)
        hits = hits + 1 if status.endswith("hit") else 0
        if hits >= 2:
            return round(time.monotonic() - started, 1)
        time.sleep(1.0)
    raise RuntimeError("the feed cache never settled: the consumers are still busy")


def bench_feed(database: str, args: argparse.Namespace, pinning: Pinning) -> dict[str, Any]:
    from me_vs_bare import start_server

    log(f"== feed, {database} ==")
    with tempfile.TemporaryDirectory(prefix="veche-bench-feed-") as directory:
        workdir = Path(directory)
        env = {k: v for k, v in os.environ.items() if not k.startswith("VECHE_")}
        env.update(BLOG_ENV)
        env.update(FEED_ENV)
        env["VECHE_DATA_DIR"] = str(workdir / "var")
        if database == "postgresql":
            reset_blog_database()
            env["VECHE_DATABASE_URL"] = PG_BLOG_URL
        migrate(env, workdir)
        with servers(env, workdir, pinning) as (veche, bare):
            token = sign_in(veche.port)
            started = time.monotonic()
            counts = asyncio.run(seed_feed(veche.port, token, args))
            log(f"seeded {counts} in {time.monotonic() - started:.1f} s")
            waited = wait_for_quiet_feed(veche.port, token)
            log(f"the consumers were done {waited} s after seeding")
            uncached_port = free_port()
            uncached_env = {
                **env,
                "VECHE_BLOG__FEED_CACHE_SECONDS": "0",
                "VECHE_ROLE": "api",
            }
            uncached = start_server(
                "veche-uncached",
                [
                    *pinning.prefix(pinning.server),
                    str(VENV_BIN / "veche"),
                    "serve",
                    "--host",
                    HOST,
                    "--port",
                    str(uncached_port),
                ],
                uncached_port,
                uncached_env,
                workdir,
                "/health",
            )
            try:
                checks = {
                    "cached": feed_status(veche.port, token),
                    "uncached": feed_status(uncached.port, token),
                }
                log(f"Cache-Status and items: {checks}")
                if not checks["cached"][0].endswith("hit") or checks["uncached"][0].endswith("hit"):
                    raise RuntimeError(f"unexpected cache states: {checks}")
                auth = [f"Authorization: Bearer {token}"]
                targets = {
                    "cached": (f"http://{HOST}:{veche.port}{FEED_PATH}", auth),
                    "uncached": (f"http://{HOST}:{uncached.port}{FEED_PATH}", auth),
                    "bare": (f"http://{HOST}:{bare.port}/bare", []),
                }
                log("warming up")
                for url, headers in targets.values():
                    run_openloop(url, headers, args.read_rate, 3, 16, pinning)
                series = {name: Series() for name in targets}
                for repetition in range(args.repetitions):
                    for name, (url, headers) in targets.items():
                        series[name].runs.append(
                            run_openloop(url, headers, args.read_rate, args.duration, 32, pinning)
                        )
                    log(
                        f"repetition {repetition + 1}/{args.repetitions}: p95 "
                        + ", ".join(f"{n} {s.runs[-1]['p95_ms']} ms" for n, s in series.items())
                    )
                after = feed_status(veche.port, token)
                if not after[0].endswith("hit"):
                    raise RuntimeError(f"the cached feed was not a hit after the runs: {after}")
            finally:
                uncached.stop()
    return {
        "database": database,
        "seeded": counts,
        "items_per_page": checks["cached"][1],
        "consumers_settled_after_s": waited,
        "runs": {name: found.runs for name, found in series.items()},
        "summary": {
            name: {
                "p50_ms": found.median("p50_ms"),
                "p95_ms": found.median("p95_ms"),
                "p99_ms": found.median("p99_ms"),
                "p95_ms_all": [run["p95_ms"] for run in found.runs],
                "achieved": found.median("achieved_rate"),
                "failures": found.failures()
                + sum(int(run.get("timeouts", 0)) for run in found.runs),
            }
            for name, found in series.items()
        },
    }


def feed_markdown(results: list[dict[str, Any]], args: argparse.Namespace) -> str:
    lines = [
        f"`GET {FEED_PATH}` at {args.read_rate:.0f}/s, {args.duration:.0f} s per run, "
        f"median of {args.repetitions}.",
        "",
        "| database | path | p50 ms | p95 ms | p99 ms | p95 per run | achieved/s "
        "| failures | target p95 < 30 ms |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for result in results:
        for name, row in result["summary"].items():
            verdict = "-"
            if name != "bare":
                verdict = "met" if row["p95_ms"] < FEED_TARGET_P95_MS else "missed"
            per_run = ", ".join(f"{value:.1f}" for value in row["p95_ms_all"])
            lines.append(
                f"| {result['database']} | {name} | {row['p50_ms']:.1f} | {row['p95_ms']:.1f} "
                f"| {row['p99_ms']:.1f} | {per_run} | {row['achieved']:.0f} "
                f"| {row['failures']} | {verdict} |"
            )
    return "\n".join(lines)


def feed_main(
    args: argparse.Namespace, pinning: Pinning, databases: list[str], started: dt.datetime
) -> None:
    host = machine()
    results = [bench_feed(database, args, pinning) for database in databases]
    table = feed_markdown(results, args)
    print(table)
    write_results(
        "blog_feed",
        started,
        vars(args),
        pinning=asdict(pinning),
        machine={**host, "load_average_at_end": os.getloadavg()},
        results=results,
        table=table,
    )


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0])
    sub = parser.add_subparsers(dest="command")
    driver = sub.add_parser("post-driver", help="(internal) the open-loop write generator")
    driver.add_argument("--url", required=True)
    driver.add_argument("--method", choices=["GET", "POST"], default="POST")
    driver.add_argument("--rate", type=float, required=True)
    driver.add_argument("--duration", type=float, required=True)
    driver.add_argument("--connections", type=int, default=16)
    parser.add_argument("--database", choices=["sqlite", "postgresql", "both"], default="both")
    parser.add_argument("--duration", type=float, default=20.0, help="seconds per measurement")
    parser.add_argument("--repetitions", type=int, default=3)
    parser.add_argument("--read-rate", type=float, default=300.0)
    parser.add_argument("--create-rate", type=float, default=50.0)
    parser.add_argument("--posts", type=int, default=200, help="published posts seeded first")
    parser.add_argument("--image-repetitions", type=int, default=5)
    parser.add_argument("--no-pin", action="store_true")
    parser.add_argument(
        "--scenario",
        choices=["posts", "feed"],
        default="posts",
        help="posts: post reads, creates and images; feed: GET /feed cached and uncached",
    )
    parser.add_argument("--authors", type=int, default=20, help="(feed) blogs the reader follows")
    parser.add_argument("--posts-per-author", type=int, default=15, help="(feed)")
    parser.add_argument("--likes-per-post", type=int, default=5, help="(feed)")
    parser.add_argument("--comments-per-post", type=int, default=2, help="(feed)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.command == "post-driver":
        report = asyncio.run(
            drive(
                args.url,
                args.method,
                os.environ.get("BENCH_TOKEN", ""),
                args.rate,
                args.duration,
                args.connections,
            )
        )
        json.dump(report, sys.stdout)
        return
    pinning = choose_pinning(not args.no_pin)
    databases = ["sqlite", "postgresql"] if args.database == "both" else [args.database]
    started = dt.datetime.now(dt.UTC)
    if args.scenario == "feed":
        feed_main(args, pinning, databases, started)
        return
    results = [bench_database(database, args, pinning) for database in databases]
    images = bench_images(args.image_repetitions)
    table = markdown(results, images, args)
    print(table)
    write_results(
        "blog_http",
        started,
        vars(args),
        pinning=asdict(pinning),
        machine=machine(),
        results=results,
        images=images,
        table=table,
    )


if __name__ == "__main__":
    main()
