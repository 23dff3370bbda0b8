"""The `veche` command: serve, migrate, manage users, write the OpenAPI schema, check."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import os
import shutil
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, NoReturn, TypeVar
from uuid import UUID

import typer
from pydantic import ValidationError

from veche.settings import Settings, load_settings

if TYPE_CHECKING:
    from veche.kernel import Kernel

T = TypeVar("T")

app = typer.Typer(help="Veche: five AI-native products on one kernel.", no_args_is_help=True)
users_app = typer.Typer(help="Manage accounts.", no_args_is_help=True)
app.add_typer(users_app, name="users")
events_app = typer.Typer(
    help="Operate durable events: consumers, dead letters, replays.", no_args_is_help=True
)
app.add_typer(events_app, name="events")


def _fail(lines: list[str], title: str) -> NoReturn:
    typer.secho(title, fg=typer.colors.RED, err=True)
    for line in lines:
        typer.echo(f"  - {line}", err=True)
    raise typer.Exit(code=1)


def settings_problems(exc: ValidationError) -> list[str]:
    """Readable lines for each invalid setting, named by its environment variable."""
    lines = []
    for error in exc.errors():
        location = [str(part) for part in error["loc"]]
        message = str(error["msg"]).removeprefix("Value error, ")
        if location:
            variable = "VECHE_" + "__".join(location).upper()
            lines.append(f"{variable}: {message}")
        else:
            lines.extend(line.strip().lstrip("- ") for line in message.splitlines() if line)
    return [line for line in lines if line and not line.endswith(":")] or [str(exc)]


def _settings(**overrides: object) -> Settings:
    try:
        return load_settings(**overrides)
    except ValidationError as exc:
        _fail(settings_problems(exc), "The settings are not valid:")


@app.command()
def serve(
    host: Annotated[str | None, typer.Option(help="Address to bind")] = None,
    port: Annotated[int | None, typer.Option(help="Port to bind")] = None,
    apps: Annotated[
        str | None, typer.Option(help="Comma-separated apps to mount (default: all installed)")
    ] = None,
    workers: Annotated[int, typer.Option(min=1, help="Worker processes")] = 1,
) -> None:
    """Serve the API with every enabled app."""
    import uvicorn

    if apps is not None:
        os.environ["VECHE_APPS"] = apps  # worker processes read settings themselves
    settings = _settings()
    bind_host, bind_port = host or settings.host, port or settings.port
    if workers > 1:
        metrics_dir = settings.data_dir / "prometheus"
        shutil.rmtree(metrics_dir, ignore_errors=True)
        metrics_dir.mkdir(parents=True)
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(metrics_dir.resolve())
    shown_host = "127.0.0.1" if bind_host in ("0.0.0.0", "::") else bind_host  # noqa: S104
    url = f"http://{shown_host}:{bind_port}"
    typer.echo(f"Veche is serving at {url}  (API docs: {url}/docs)")
    uvicorn.run(
        "veche.server:create_app",
        factory=True,
        host=bind_host,
        port=bind_port,
        workers=workers,
        proxy_headers=False,
        server_header=False,
        access_log=False,
        log_config=None,
    )


@app.command()
def migrate(
    revision: Annotated[str, typer.Argument(help="Target revision")] = "head",
    downgrade: Annotated[
        bool, typer.Option("--downgrade", help="Go back to REVISION ('base': empty)")
    ] = False,
) -> None:
    """Apply the database migrations (or, with --downgrade, revert them)."""
    from veche import migrate as migrations

    settings = _settings()
    if downgrade:
        asyncio.run(migrations.downgrade(settings, revision))
    else:
        asyncio.run(migrations.upgrade(settings, revision))
    current = asyncio.run(migrations.current_revision(settings))
    target = migrations.head_revision() if revision == "head" else revision
    if not downgrade and current != target:
        _fail(
            [f"the database is at {current}, past {revision}; use --downgrade to go back"],
            "Nothing was changed:",
        )
    typer.echo(f"Database at revision {current or 'base (empty)'}")


@users_app.command("create")
def create_user(
    email: Annotated[str, typer.Argument(help="The account's email")],
    display_name: Annotated[str, typer.Option(help="Name shown to others")] = "Admin",
    admin: Annotated[bool, typer.Option("--admin", help="Give the admin role")] = False,
    password: Annotated[
        str,
        typer.Option(
            prompt=True, hide_input=True, confirmation_prompt=True, envvar="VECHE_PASSWORD"
        ),
    ] = "",
) -> None:
    """Create an account (the password is asked for, or read from VECHE_PASSWORD)."""
    from sqlalchemy.exc import DBAPIError

    from veche.kernel import Kernel
    from veche.kernel.errors import ProblemError
    from veche.kernel.identity import IdentityService
    from veche.kernel.identity.schemas import clean_display_name, normalize_email

    try:
        normalized, name = normalize_email(email), clean_display_name(display_name)
    except ValueError as exc:
        _fail([str(exc)], "The account is not valid:")

    async def run() -> str:
        kernel = Kernel.from_settings(_settings())
        try:
            async with kernel.db.unit_of_work() as session:
                user = await IdentityService(session, kernel).register(
                    email=normalized,
                    password=password,
                    display_name=name,
                    role="admin" if admin else "user",
                )
                return str(user.id)
        finally:
            await kernel.close()

    try:
        user_id = asyncio.run(run())
    except ProblemError as exc:
        _fail([exc.detail or exc.title], "The account was not created:")
    except DBAPIError as exc:  # most often: the tables do not exist yet
        reason = f"database error ({type(exc.orig).__name__}); is it migrated (`veche migrate`)?"
        _fail([reason], "The account was not created:")
    typer.echo(f"Created {'admin' if admin else 'user'} {normalized} ({user_id})")


@app.command()
def openapi(
    output: Annotated[Path | None, typer.Option(help="File to write (default: stdout)")] = None,
) -> None:
    """Write the OpenAPI schema of the enabled apps."""
    from veche.server import create_app

    schema = create_app(_settings(access_log=False)).openapi()
    text = json.dumps(schema, indent=2, ensure_ascii=False) + "\n"
    if output is None:
        sys.stdout.write(text)
    else:
        output.write_text(text, encoding="utf-8")
        typer.echo(f"Wrote {output}")


@app.command()
def check() -> None:
    """Validate the settings and reach every configured backend."""
    from veche.checks import run_checks

    problems = asyncio.run(run_checks(_settings()))
    if problems:
        _fail(problems, f"{len(problems)} problem(s) found:")
    typer.secho("Settings valid; every configured backend answers.", fg=typer.colors.GREEN)


@app.command()
def worker(
    apps: Annotated[
        str | None, typer.Option(help="Comma-separated apps to run (default: all installed)")
    ] = None,
) -> None:
    """Run event consumers, the outbox relay and scheduled jobs, serving no HTTP."""
    import signal

    from veche.server import create_app

    if apps is not None:
        os.environ["VECHE_APPS"] = apps
    application = create_app(_settings(role="worker"))

    async def run() -> None:
        stopping = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, stopping.set)
        async with application.router.lifespan_context(application):
            typer.echo("Veche worker running (consumers, relay, jobs); Ctrl-C stops it")
            await stopping.wait()

    asyncio.run(run())


def _with_events(action: Callable[[Kernel], Awaitable[T]]) -> T:
    """Run `action` on a kernel with the enabled apps' events and consumers installed."""
    from veche.kernel import Kernel
    from veche.kernel.errors import ProblemError
    from veche.registry import load_modules

    settings = _settings()
    modules = load_modules(settings.apps)

    async def run() -> T:
        kernel = Kernel.from_settings(settings)
        kernel.events.install(modules)
        try:
            return await action(kernel)
        finally:
            await kernel.close()

    try:
        return asyncio.run(run())
    except ProblemError as exc:
        _fail([exc.detail or exc.title], "Nothing was done:")


@events_app.command("consumers")
def events_consumers() -> None:
    """List the enabled apps' consumers with their lag and dead letters."""
    from veche.kernel.events.service import consumer_statuses

    statuses = _with_events(consumer_statuses)
    if not statuses:
        typer.echo("No event consumers in the enabled apps.")
    for status in statuses:
        typer.echo(
            f"{status.name}  lag={status.lag}  dead_letters={status.dead_letters}  "
            f"types={','.join(status.event_types)}"
        )


@events_app.command("dead-letters")
def events_dead_letters(
    consumer: Annotated[str | None, typer.Option(help="Only this consumer's")] = None,
    limit: Annotated[int, typer.Option(min=1, max=1000, help="At most this many")] = 50,
) -> None:
    """List dead letters, newest first."""
    from sqlalchemy import select

    from veche.kernel.events import DeadLetter

    async def read(kernel: Kernel) -> list[DeadLetter]:
        statement = select(DeadLetter).order_by(DeadLetter.created_at.desc()).limit(limit)
        if consumer is not None:
            statement = statement.where(DeadLetter.consumer == consumer)
        async with kernel.db.sessions() as session:
            return list(await session.scalars(statement))

    letters = _with_events(read)
    if not letters:
        typer.echo("No dead letters.")
    for letter in letters:
        typer.echo(
            f"{letter.id}  {letter.consumer}  {letter.event_type}  event={letter.event_id}  "
            f"attempts={letter.attempts}  {letter.error_type}: {letter.error_message[:200]}"
        )


@events_app.command("replay")
def events_replay(
    dead_letter_id: Annotated[UUID | None, typer.Argument(help="The dead letter to replay")] = None,
    all_letters: Annotated[
        bool, typer.Option("--all", help="Replay every dead letter (of --consumer)")
    ] = False,
    consumer: Annotated[str | None, typer.Option(help="The consumer to replay")] = None,
    since: Annotated[
        dt.datetime | None,
        typer.Option(help="With --consumer: deliver its events again from this UTC time on"),
    ] = None,
) -> None:
    """Replay one dead letter, all of them (--all), or a consumer from a time (--since)."""
    from veche.kernel.events import service

    if dead_letter_id is not None:
        handled = _with_events(lambda kernel: service.replay_dead_letter(kernel, dead_letter_id))
        if not handled:
            _fail([f"dead letter {dead_letter_id} failed again; it is kept"], "Replay failed:")
        typer.echo(f"Replayed dead letter {dead_letter_id}")
    elif all_letters:
        result = _with_events(lambda kernel: service.replay_dead_letters(kernel, consumer))
        typer.echo(f"Replayed {len(result.replayed)}; {len(result.failed)} failed again")
        if result.failed:
            raise typer.Exit(code=1)
    elif consumer is not None and since is not None:
        moment = since if since.tzinfo else since.replace(tzinfo=dt.UTC)
        _with_events(lambda kernel: service.rewind_consumer(kernel, consumer, moment))
        typer.echo(f"Consumer {consumer} will receive its events again from {moment.isoformat()}")
    else:
        _fail(
            ["give a DEAD_LETTER_ID, or --all, or --consumer NAME --since TIME"],
            "Nothing to replay:",
        )


def main() -> None:
    app()
