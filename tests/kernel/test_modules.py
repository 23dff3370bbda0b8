"""App modules and their manifests, the app registry, and scheduled jobs with leases."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import logging
from collections.abc import Callable
from typing import Any

import httpx
import pytest
from fastapi import APIRouter, FastAPI, WebSocket
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel
from sqlalchemy import select, update

from tests import example_app
from veche.kernel import Kernel, build_app
from veche.kernel.db import utcnow
from veche.kernel.events import Event, consumer
from veche.kernel.jobs import HOLDER, JobLease, ScheduledJob, Scheduler, acquire_lease
from veche.kernel.modules import AppModule, Manifest, ManifestError
from veche.kernel.realtime import ChannelPolicy
from veche.registry import UnknownApp, installed_apps, load_modules
from veche.settings import Settings

MINUTE = dt.timedelta(minutes=1)
VALID_MANIFEST = """\
name: mini
version: 1.2.3
requires: [db, jobs]
exposes:
  api: ["GET /items", "POST /items"]
  events: [mini.item.created]
health_check: GET /items
"""


class ItemCreated(BaseModel):
    item_id: str


def mini_router() -> APIRouter:
    router = APIRouter()

    @router.get("/items")
    async def list_items() -> list[str]:
        return []

    @router.post("/items")
    async def create_item() -> str:
        return "made"

    return router


def mini_module(manifest_text: str = VALID_MANIFEST) -> AppModule:
    return AppModule(
        name="mini",
        manifest=Manifest.parse(manifest_text, "mini/manifest.yaml"),
        routers=[mini_router()],
        events={"mini.item.created": ItemCreated},
    )


def with_exposed(api: list[str], health_check: str = "GET /items", name: str = "mini") -> str:
    """A manifest for the mini module's routers that exposes `api`."""
    entries = ", ".join(f'"{entry}"' for entry in api)
    return (
        f"name: {name}\nversion: 1.0.0\nexposes:\n  api: [{entries}]\n"
        f"health_check: {health_check}\n"
    )


# -- the example module -----------------------------------------------------------------


async def test_example_module_is_mounted(client: httpx.AsyncClient) -> None:
    response = await client.get("/api/v1/example/ping")

    assert response.status_code == 200
    assert response.json() == {"app": "example"}


async def test_example_module_startup_hook_runs_once_per_start(
    app_factory: Callable[..., Any], settings: Settings
) -> None:
    before = len(example_app.started)

    await app_factory(settings)

    assert example_app.started[before:] == ["up"]


async def test_module_readiness_checks_join_the_kernel_checks(app: FastAPI) -> None:
    assert {"database", "example.self"} <= set(app.state.readiness_checks)


async def test_an_app_without_modules_serves_no_app_routes(
    app_factory: Callable[..., Any], settings: Settings
) -> None:
    app = await app_factory(settings, [])
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://testserver"
    ) as client:
        response = await client.get("/api/v1/example/ping")

    assert response.status_code == 404


def test_example_manifest_matches_its_routes() -> None:
    module = example_app.module

    assert module.served_api() == set(module.manifest.exposes.api)
    module.validate()


# -- manifests --------------------------------------------------------------------------


def test_a_valid_manifest_parses() -> None:
    manifest = Manifest.parse(VALID_MANIFEST, "mini/manifest.yaml")

    assert manifest.name == "mini"
    assert manifest.version == "1.2.3"
    assert manifest.requires == ["db", "jobs"]
    assert manifest.exposes.api == ["GET /items", "POST /items"]
    assert manifest.exposes.events == ["mini.item.created"]
    assert manifest.health_check == "GET /items"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        pytest.param("name: mini\nversion: [1.0.0\n", "while parsing", id="bad-yaml"),
        pytest.param("", "valid dictionary", id="empty"),
        pytest.param("- name: mini\n", "valid dictionary", id="not-a-mapping"),
        pytest.param("version: 1.0.0\n", "name\n  Field required", id="no-name"),
        pytest.param(
            "name: mini\nversion: 1.0.0\ncolour: red\n",
            "colour\n  Extra inputs are not permitted",
            id="unknown-field",
        ),
        pytest.param(
            "name: mini\nversion: 1.0.0\nexposes:\n  routes: []\n",
            "exposes.routes\n  Extra inputs are not permitted",
            id="unknown-exposes-field",
        ),
        pytest.param("name: Mini-App\nversion: 1.0.0\n", "name\n  String should", id="bad-name"),
        pytest.param("name: m\nversion: 1.0.0\n", "name\n  String should", id="short-name"),
        pytest.param("name: mini\nversion: '1.0'\n", "version\n  String should", id="bad-version"),
        pytest.param(
            "name: mini\nversion: 1.0.0\nexposes:\n  api: ['FETCH /x']\n",
            "'FETCH /x' is not 'METHOD /path'",
            id="unknown-method",
        ),
        pytest.param(
            "name: mini\nversion: 1.0.0\nexposes:\n  api: ['GET items']\n",
            "'GET items' is not 'METHOD /path'",
            id="relative-path",
        ),
        pytest.param(
            "name: mini\nversion: 1.0.0\nexposes:\n  events: [mini.created]\n",
            "'mini.created' is not an event type like 'app.entity.verb'",
            id="two-part-event",
        ),
        pytest.param(
            "name: mini\nversion: 1.0.0\nexposes:\n  events: [Mini.Item.Created]\n",
            "'Mini.Item.Created' is not an event type",
            id="capitalised-event",
        ),
        pytest.param(
            "name: mini\nversion: 1.0.0\nrequires: [db, telepathy]\n",
            "unknown kernel capabilities ['telepathy']; known: ai, audit, db,",
            id="unknown-capability",
        ),
    ],
)
def test_bad_manifests_are_refused_with_a_clear_message(text: str, expected: str) -> None:
    with pytest.raises(ManifestError) as caught:
        Manifest.parse(text, "mini/manifest.yaml")

    message = str(caught.value)
    assert message.startswith("mini/manifest.yaml: ")
    assert expected in message


def test_a_package_without_a_manifest_is_refused() -> None:
    with pytest.raises(ManifestError, match=r"tests\.kernel has no manifest\.yaml"):
        Manifest.from_package("tests.kernel")


# -- manifests against the routes -------------------------------------------------------


def test_a_module_whose_manifest_matches_its_routes_is_valid() -> None:
    module = mini_module()

    assert module.served_api() == {"GET /items", "POST /items"}
    module.validate()


@pytest.mark.parametrize(
    ("module", "expected"),
    [
        pytest.param(
            mini_module(with_exposed(["GET /items", "POST /items", "DELETE /items/{id}"])),
            "manifest lists routes that do not exist: ['DELETE /items/{id}']",
            id="route-that-does-not-exist",
        ),
        pytest.param(
            mini_module(with_exposed(["GET /items"])),
            "routes missing from the manifest: ['POST /items']",
            id="served-route-missing",
        ),
        pytest.param(
            mini_module(with_exposed(["GET /items", "POST /items"], name="other")),
            "manifest name 'other' is not 'mini'",
            id="other-app",
        ),
        pytest.param(
            mini_module(with_exposed(["GET /items", "POST /items"], "GET /health")),
            "health_check 'GET /health' is not a served route",
            id="health-check-not-served",
        ),
    ],
)
def test_a_manifest_that_disagrees_with_the_routes_is_refused(
    module: AppModule, expected: str
) -> None:
    with pytest.raises(ManifestError) as caught:
        module.validate()

    message = str(caught.value)
    assert message.startswith("app 'mini': ")
    assert expected in message


def test_every_disagreement_is_named_at_once() -> None:
    module = mini_module(with_exposed(["GET /items", "PUT /items"], "GET /health"))

    with pytest.raises(ManifestError) as caught:
        module.validate()

    message = str(caught.value)
    assert "['POST /items']" in message
    assert "['PUT /items']" in message
    assert "'GET /health'" in message


def test_websocket_routes_are_described_and_mounts_are_refused() -> None:
    router = mini_router()

    @router.websocket("/live")
    async def live(websocket: WebSocket) -> None:
        await websocket.close()

    module = AppModule(
        name="mini",
        manifest=Manifest.parse(
            with_exposed(["GET /items", "POST /items", "WS /live"]), "mini/manifest.yaml"
        ),
        routers=[router],
    )
    module.validate()
    router.mount("/static", StaticFiles(directory=".", check_dir=False))
    with pytest.raises(ManifestError, match="cannot describe Mount routes"):
        module.validate()


def test_declared_consumers_are_accepted() -> None:
    @consumer("other.item.created", name="mini-follower")
    async def follow(_event: Event, _context: object) -> None:
        return None

    module = mini_module()
    module.consumers = [follow]

    module.validate()
    assert follow.event_types == ("other.item.created",)


def test_a_consumer_that_is_not_declared_with_the_decorator_is_refused() -> None:
    module = mini_module()
    module.consumers = [object()]  # type: ignore[list-item]

    with pytest.raises(ManifestError, match="is not a consumer"):
        module.validate()


@pytest.mark.parametrize(
    ("events", "expected"),
    [
        pytest.param({}, "manifest lists undeclared events: ['mini.item.created']", id="missing"),
        pytest.param(
            {"mini.item.created": ItemCreated, "mini.item.deleted": ItemCreated},
            "events missing from the manifest: ['mini.item.deleted']",
            id="unlisted",
        ),
        pytest.param(
            {"mini.item.created": dict},
            "the payload of 'mini.item.created' is not a Pydantic model",
            id="not-a-model",
        ),
    ],
)
def test_declared_events_must_match_the_manifest(events: dict[str, Any], expected: str) -> None:
    module = mini_module()
    module.events = events

    with pytest.raises(ManifestError) as caught:
        module.validate()

    assert expected in str(caught.value)


def test_event_types_must_start_with_the_app_name() -> None:
    manifest = VALID_MANIFEST.replace("mini.item.created", "other.item.created")
    module = mini_module(manifest)
    module.events = {"other.item.created": ItemCreated}

    with pytest.raises(ManifestError, match=r"event types must start with 'mini\.'"):
        module.validate()


def test_consumer_declarations_are_checked() -> None:
    with pytest.raises(ValueError, match="not an event type"):
        consumer("nodots", name="ok")
    with pytest.raises(ValueError, match="not a consumer name"):
        consumer("mini.item.created", name="Bad Name")
    with pytest.raises(ValueError, match="at least one event type"):
        consumer(name="ok")


def _anyone(_user: object, _channel: str) -> bool:
    return True


def test_a_module_may_declare_channel_policies(settings: Settings) -> None:
    module = mini_module()
    module.channel_policies = {"mini:": ChannelPolicy(subscribe=_anyone)}

    app = build_app(settings, [module])

    assert app.state.kernel.realtime.policies.prefixes() == {
        "user:": "kernel",
        "mini:": "app 'mini'",
    }


def test_a_channel_prefix_two_modules_both_claim_is_refused(settings: Settings) -> None:
    first = mini_module()
    second = AppModule(name="other", manifest=Manifest(name="other", version="0.1.0"))
    for module in (first, second):
        module.channel_policies = {"shared:": ChannelPolicy(subscribe=_anyone)}

    with pytest.raises(ManifestError, match="'shared:' is already claimed by app 'mini'"):
        build_app(settings, [first, second])


@pytest.mark.parametrize(
    ("prefix", "policy", "message"),
    [
        ("user:", ChannelPolicy(subscribe=_anyone), "already claimed by kernel"),
        ("mini", ChannelPolicy(subscribe=_anyone), "is not like 'name:'"),
        ("mini:", object(), "is not a ChannelPolicy"),
    ],
)
def test_a_bad_or_reserved_channel_policy_is_refused(
    settings: Settings, prefix: str, policy: Any, message: str
) -> None:
    module = mini_module()
    module.channel_policies = {prefix: policy}

    with pytest.raises(ManifestError, match=message):
        build_app(settings, [module])


def test_build_app_refuses_a_module_that_disagrees_with_its_manifest(
    settings: Settings,
) -> None:
    module = mini_module(with_exposed(["GET /items", "POST /items", "GET /gone"]))

    with pytest.raises(ManifestError, match=r"\['GET /gone'\]"):
        build_app(settings, [module])


async def test_build_app_mounts_a_valid_module_under_its_name(
    app_factory: Callable[..., Any], settings: Settings
) -> None:
    app = await app_factory(settings, [mini_module()])
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://testserver"
    ) as client:
        listed = await client.get("/api/v1/mini/items")
        created = await client.post("/api/v1/mini/items")

    assert (listed.status_code, listed.json()) == (200, [])
    assert (created.status_code, created.json()) == (200, "made")


# -- the registry -----------------------------------------------------------------------


def test_an_unknown_app_is_refused_naming_the_installed_ones() -> None:
    installed = installed_apps()

    with pytest.raises(UnknownApp) as caught:
        load_modules(["nope"])

    message = str(caught.value)
    assert "unknown apps ['nope']" in message
    assert f"installed: {', '.join(installed) or 'none'}" in message


def test_all_installed_apps_load_by_default() -> None:
    modules = load_modules(None)

    assert [module.name for module in modules] == installed_apps()
    for module in modules:
        module.validate()


def test_an_app_named_twice_is_refused() -> None:
    with pytest.raises(UnknownApp, match="apps named more than once"):
        load_modules(["nope", "nope"])


def test_no_apps_is_a_valid_choice() -> None:
    assert load_modules([]) == []


# -- leases -----------------------------------------------------------------------------


async def lease_row(kernel: Kernel, name: str) -> JobLease | None:
    async with kernel.db.unit_of_work() as session:
        row: JobLease | None = await session.scalar(select(JobLease).where(JobLease.name == name))
        return row


async def expire_lease(kernel: Kernel, name: str) -> None:
    async with kernel.db.unit_of_work() as session:
        await session.execute(
            update(JobLease)
            .where(JobLease.name == name)
            .values(expires_at=utcnow() - dt.timedelta(seconds=1))
        )


async def test_a_live_lease_belongs_to_one_holder(kernel: Kernel) -> None:
    assert await acquire_lease(kernel.db, "digest", MINUTE, holder="replica-a")
    assert not await acquire_lease(kernel.db, "digest", MINUTE, holder="replica-b")

    row = await lease_row(kernel, "digest")
    assert row is not None
    assert row.holder == "replica-a"
    assert row.expires_at > utcnow()


async def test_an_expired_lease_passes_to_another_holder(kernel: Kernel) -> None:
    assert await acquire_lease(kernel.db, "digest", MINUTE, holder="replica-a")
    await expire_lease(kernel, "digest")

    assert await acquire_lease(kernel.db, "digest", MINUTE, holder="replica-b")
    assert not await acquire_lease(kernel.db, "digest", MINUTE, holder="replica-a")

    row = await lease_row(kernel, "digest")
    assert row is not None
    assert row.holder == "replica-b"


async def test_the_holder_renews_its_own_lease(kernel: Kernel) -> None:
    assert await acquire_lease(kernel.db, "digest", MINUTE, holder="replica-a")
    first = await lease_row(kernel, "digest")

    assert await acquire_lease(kernel.db, "digest", 10 * MINUTE, holder="replica-a")
    renewed = await lease_row(kernel, "digest")

    assert first is not None
    assert renewed is not None
    assert renewed.holder == "replica-a"
    assert renewed.expires_at > first.expires_at
    assert not await acquire_lease(kernel.db, "digest", MINUTE, holder="replica-b")


async def test_leases_are_per_job(kernel: Kernel) -> None:
    assert await acquire_lease(kernel.db, "digest", MINUTE, holder="replica-a")
    assert await acquire_lease(kernel.db, "cleanup", MINUTE, holder="replica-b")


# -- the scheduler ----------------------------------------------------------------------


async def test_run_once_runs_a_job_under_this_process_lease(kernel: Kernel) -> None:
    ran: list[Kernel] = []

    async def tick(job_kernel: Kernel) -> None:
        ran.append(job_kernel)

    job = ScheduledJob(name="tick", interval=MINUTE, run=tick)

    assert await Scheduler(kernel, [job]).run_once(job)

    assert ran == [kernel]
    row = await lease_row(kernel, "tick")
    assert row is not None
    assert row.holder == HOLDER
    assert row.last_run_at is not None


async def test_a_tick_holds_its_lease_for_longer_than_the_interval(kernel: Kernel) -> None:
    # Until this replica's next tick nobody else may start the job, even if this run is slow.
    async def tick(_kernel: Kernel) -> None:
        return None

    job = ScheduledJob(name="tick", interval=MINUTE, run=tick)

    assert await Scheduler(kernel, [job]).run_once(job)

    row = await lease_row(kernel, "tick")
    assert row is not None
    assert row.last_run_at is not None
    assert row.expires_at - row.last_run_at > job.interval
    assert not await acquire_lease(kernel.db, "tick", MINUTE, holder="another-host:1")


async def test_run_once_skips_a_job_another_replica_holds(kernel: Kernel) -> None:
    ran: list[str] = []

    async def tick(_kernel: Kernel) -> None:
        ran.append("ran")

    job = ScheduledJob(name="tick", interval=MINUTE, run=tick)
    assert await acquire_lease(kernel.db, "tick", MINUTE, holder="another-host:1")

    assert not await Scheduler(kernel, [job]).run_once(job)
    assert ran == []

    await expire_lease(kernel, "tick")
    assert await Scheduler(kernel, [job]).run_once(job)
    assert ran == ["ran"]


async def test_a_failing_job_is_logged_and_does_not_raise(
    kernel: Kernel, caplog: pytest.LogCaptureFixture
) -> None:
    async def explode(_kernel: Kernel) -> None:
        raise RuntimeError("the job broke")

    job = ScheduledJob(name="exploding", interval=MINUTE, run=explode)

    with caplog.at_level(logging.ERROR, logger="veche.jobs"):
        assert not await Scheduler(kernel, [job]).run_once(job)

    failures = [record for record in caplog.records if record.name == "veche.jobs"]
    assert len(failures) == 1
    assert failures[0].levelno == logging.ERROR
    event = failures[0].msg
    assert isinstance(event, dict)
    assert event["event"] == "job_failed"
    assert event["job"] == "exploding"
    assert "RuntimeError: the job broke" in event["exception"]


async def test_concurrent_claims_have_exactly_one_winner(kernel: Kernel) -> None:
    holders = [f"replica-{index}" for index in range(5)]

    for round_number in range(20):
        name = f"race-{round_number}"
        won = await asyncio.gather(
            *(acquire_lease(kernel.db, name, MINUTE, holder=holder) for holder in holders)
        )
        row = await lease_row(kernel, name)
        assert won.count(True) == 1
        assert row is not None
        assert row.holder == holders[won.index(True)]


async def test_a_stop_lets_a_tick_in_progress_finish_and_ends_the_waits_at_once(
    kernel: Kernel,
) -> None:
    entered, release = asyncio.Event(), asyncio.Event()
    finished: list[str] = []

    async def slow(_kernel: Kernel) -> None:
        entered.set()
        await release.wait()
        finished.append("slow")

    async def hourly(_kernel: Kernel) -> None:
        finished.append("hourly")

    busy = ScheduledJob(name="busy", interval=dt.timedelta(hours=1), run=slow)
    idle = ScheduledJob(name="idle", interval=dt.timedelta(hours=1), run=hourly, at_startup=False)
    scheduler = Scheduler(kernel, [busy, idle])
    scheduler.start()
    await asyncio.wait_for(entered.wait(), 5)

    stopping = asyncio.create_task(scheduler.stop())
    await asyncio.sleep(0.2)
    assert not stopping.done()  # the tick in progress is not cut short
    release.set()
    # The idle job's hour-long wait ends with the stop.
    await asyncio.wait_for(stopping, 5)
    assert finished == ["slow"]


async def test_a_tick_past_the_shutdown_grace_is_cancelled(
    app_factory: Callable[..., Any], settings: Settings, capsys: pytest.CaptureFixture[str]
) -> None:
    async def stuck(_kernel: Kernel) -> None:
        await asyncio.Event().wait()  # never set

    job = ScheduledJob(name="stuck", interval=MINUTE, run=stuck)
    app = await app_factory(settings.model_copy(update={"shutdown_grace_seconds": 0.2}))
    kernel: Kernel = app.state.kernel
    scheduler = Scheduler(kernel, [job])
    scheduler.start()
    await asyncio.sleep(0.1)

    await asyncio.wait_for(scheduler.stop(), 5)

    logged = [json.loads(line) for line in capsys.readouterr().out.splitlines() if line]
    [warning] = [entry for entry in logged if entry["event"] == "stop_grace_exceeded"]
    assert warning["cancelled"] == ["job:stuck"]
