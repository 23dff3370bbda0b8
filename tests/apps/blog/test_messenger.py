"""The messenger over HTTP: conversations, messages by seq, edits, deletion, reads and
unread counts, blocks, groups, limits, and that nobody outside a conversation sees it."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any
from uuid import UUID

import httpx
import pytest
from fastapi import FastAPI

from tests.apps.blog.conftest import BLOG_LIMITS, PREFIX, Caller, events_of, sign_up
from tests.conftest import client_for
from tests.helpers import assert_problem
from veche.apps.blog import module as blog_module
from veche.apps.blog.conversations import unread_total
from veche.settings import BlogSettings, Settings

UNKNOWN = "0196a000-0000-7000-8000-000000000000"


@pytest.fixture
async def carl(http: httpx.AsyncClient) -> Caller:
    return await sign_up(http, "carl@example.com", "Carl")


async def start(
    http: httpx.AsyncClient, caller: Caller, *others: Caller, title: str | None = None
) -> dict[str, Any]:
    if title is None:
        payload: dict[str, Any] = {"kind": "direct", "member_ids": [others[0].user_id]}
    else:
        payload = {"kind": "group", "title": title, "member_ids": [o.user_id for o in others]}
    response = await http.post(f"{PREFIX}/conversations", json=payload, headers=caller.headers)
    assert response.status_code in (200, 201), response.text
    body: dict[str, Any] = response.json()
    return body


async def send(
    http: httpx.AsyncClient, caller: Caller, conversation_id: str, body: str, **fields: Any
) -> httpx.Response:
    return await http.post(
        f"{PREFIX}/conversations/{conversation_id}/messages",
        json={"body": body, **fields},
        headers=caller.headers,
    )


async def sent(
    http: httpx.AsyncClient, caller: Caller, conversation_id: str, body: str, **fields: Any
) -> dict[str, Any]:
    response = await send(http, caller, conversation_id, body, **fields)
    assert response.status_code == 201, response.text
    message: dict[str, Any] = response.json()
    return message


async def history(
    http: httpx.AsyncClient, caller: Caller, conversation_id: str, **params: Any
) -> dict[str, Any]:
    response = await http.get(
        f"{PREFIX}/conversations/{conversation_id}/messages", params=params, headers=caller.headers
    )
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


# -- direct conversations ---------------------------------------------------------------


async def test_a_pair_has_one_direct_conversation(
    http: httpx.AsyncClient, ann: Caller, bob: Caller
) -> None:
    response = await http.post(
        f"{PREFIX}/conversations",
        json={"kind": "direct", "member_ids": [bob.user_id]},
        headers=ann.headers,
    )
    assert response.status_code == 201, response.text
    conversation = response.json()
    assert conversation["kind"] == "direct"
    assert conversation["title"] is None
    assert {m["user_id"] for m in conversation["members"]} == {ann.user_id, bob.user_id}
    assert conversation["last_seq"] == 0
    assert conversation["unread_count"] == 0
    assert conversation["last_message"] is None
    again = await http.post(
        f"{PREFIX}/conversations",
        json={"kind": "direct", "member_ids": [ann.user_id]},
        headers=bob.headers,
    )
    assert again.status_code == 200
    assert again.json()["id"] == conversation["id"]


async def test_malformed_conversation_requests_are_refused(
    http: httpx.AsyncClient, ann: Caller, bob: Caller, carl: Caller
) -> None:
    url = f"{PREFIX}/conversations"
    for payload in (
        {"kind": "direct", "member_ids": []},
        {"kind": "direct", "member_ids": [bob.user_id, carl.user_id]},
        {"kind": "direct", "member_ids": [bob.user_id], "title": "Hi"},
        {"kind": "group", "member_ids": [bob.user_id]},  # no title
        {"kind": "group", "title": "  padded", "member_ids": []},
        {"kind": "group", "title": "Twice", "member_ids": [bob.user_id, bob.user_id]},
        {"kind": "channel", "member_ids": [bob.user_id]},
        {"kind": "direct", "member_ids": ["not-a-uuid"]},
        {"kind": "direct", "member_ids": [bob.user_id], "extra": 1},
    ):
        response = await http.post(url, json=payload, headers=ann.headers)
        assert_problem(response, 422, "validation_failed")
    self_talk = await http.post(
        url, json={"kind": "direct", "member_ids": [ann.user_id]}, headers=ann.headers
    )
    assert_problem(self_talk, 422, "blog.conversation_with_self")
    nobody = await http.post(
        url, json={"kind": "direct", "member_ids": [UNKNOWN]}, headers=ann.headers
    )
    assert_problem(nobody, 404, "blog.profile_not_found")
    anonymous = await http.post(url, json={"kind": "direct", "member_ids": [bob.user_id]})
    assert_problem(anonymous, 401, "unauthorized")
    not_json = await http.post(url, content=b"kind=direct", headers=ann.headers)
    assert_problem(not_json, 415, "unsupported_media_type")


# -- messages ---------------------------------------------------------------------------


async def test_messages_are_numbered_and_history_pages_by_seq(
    http: httpx.AsyncClient, blog_app: FastAPI, ann: Caller, bob: Caller
) -> None:
    conversation = await start(http, ann, bob)
    cid = conversation["id"]
    for n in range(1, 6):
        message = await sent(http, ann if n % 2 else bob, cid, f"line {n}")
        assert message["seq"] == n
        assert message["conversation_id"] == cid
    newest = await history(http, bob, cid, limit=2)
    assert [m["seq"] for m in newest["items"]] == [4, 5]
    assert newest["has_more"] is True
    assert newest["last_seq"] == 5
    older = await history(http, bob, cid, before_seq=4, limit=2)
    assert [m["seq"] for m in older["items"]] == [2, 3]
    assert older["has_more"] is True
    oldest = await history(http, bob, cid, before_seq=2, limit=2)
    assert ([m["seq"] for m in oldest["items"]], oldest["has_more"]) == ([1], False)
    caught_up = await history(http, bob, cid, after_seq=3)
    assert ([m["seq"] for m in caught_up["items"]], caught_up["has_more"]) == ([4, 5], False)
    window = await history(http, bob, cid, after_seq=1, before_seq=4)
    assert [m["body"] for m in window["items"]] == ["line 2", "line 3"]
    for params in ({"after_seq": -1}, {"before_seq": "x"}, {"limit": 0}, {"limit": 101}):
        response = await http.get(
            f"{PREFIX}/conversations/{cid}/messages", params=params, headers=bob.headers
        )
        assert_problem(response, 422, "validation_failed")
    events = await events_of(blog_app, "blog.message.sent")
    assert [event["seq"] for event in events] == [1, 2, 3, 4, 5]
    assert set(events[0]) == {"message_id", "conversation_id", "sender_id", "member_ids", "seq"}
    assert set(events[0]["member_ids"]) == {ann.user_id, bob.user_id}
    assert "line 1" not in str(events)  # never the body


async def test_a_retried_send_returns_the_first_message(
    http: httpx.AsyncClient, blog_app: FastAPI, ann: Caller, bob: Caller
) -> None:
    cid = (await start(http, ann, bob))["id"]
    first = await sent(http, ann, cid, "once", client_id="c-1")
    retry = await send(http, ann, cid, "once", client_id="c-1")
    assert retry.status_code == 200
    assert retry.json() == first
    # The same key from another sender is theirs, not a retry.
    other = await sent(http, bob, cid, "mine", client_id="c-1")
    assert other["seq"] == 2
    reused = await send(http, ann, cid, "something else", client_id="c-1")
    body = assert_problem(reused, 409, "blog.client_id_reused")
    assert body["message_id"] == first["id"]
    assert [m["body"] for m in (await history(http, ann, cid))["items"]] == ["once", "mine"]
    assert len(await events_of(blog_app, "blog.message.sent")) == 2


async def test_bad_message_bodies_are_refused_and_store_nothing(
    http: httpx.AsyncClient, ann: Caller, bob: Caller
) -> None:
    cid = (await start(http, ann, bob))["id"]
    for payload in (
        {"body": ""},
        {"body": "   \n\t"},
        {"body": "nul \x00 inside"},
        {"body": "bell \x07"},
        {"body": 42},
        {},
        {"body": "ok", "client_id": "has space"},
        {"body": "ok", "client_id": "x" * 65},
        {"body": "ok", "unknown": True},
        {"body": "x" * 100_001},
    ):
        response = await http.post(
            f"{PREFIX}/conversations/{cid}/messages", json=payload, headers=ann.headers
        )
        assert_problem(response, 422, "validation_failed")
    too_long = await send(http, ann, cid, "x" * 4001)
    problem = assert_problem(too_long, 422, "blog.message_too_long")
    assert problem["max_chars"] == 4000
    huge = await http.post(
        f"{PREFIX}/conversations/{cid}/messages",
        content=b'{"body": "' + b"x" * (2 * 1024 * 1024) + b'"}',
        headers={**ann.headers, "content-type": "application/json"},
    )
    assert_problem(huge, 413, "payload_too_large")
    assert (await sent(http, ann, cid, "line one\n\tline two"))["seq"] == 1  # no gap
    assert (await history(http, ann, cid))["last_seq"] == 1


async def test_edits_keep_their_history_and_deletion_leaves_a_tombstone(
    http: httpx.AsyncClient, ann: Caller, bob: Caller
) -> None:
    cid = (await start(http, ann, bob))["id"]
    message = await sent(http, ann, cid, "helo")
    url = f"{PREFIX}/messages/{message['id']}"
    edited = await http.patch(url, json={"body": "hello"}, headers=ann.headers)
    assert edited.status_code == 200, edited.text
    assert (edited.json()["body"], edited.json()["edit_count"]) == ("hello", 1)
    assert edited.json()["edited_at"] is not None
    same = await http.patch(url, json={"body": "hello"}, headers=ann.headers)
    assert same.json()["edit_count"] == 1  # the same body is not an edit
    await http.patch(url, json={"body": "hello!"}, headers=ann.headers)
    edits = await http.get(f"{url}/edits", headers=bob.headers)  # members read them
    assert [(e["number"], e["body"]) for e in edits.json()] == [(1, "helo"), (2, "hello")]
    assert_problem(
        await http.patch(url, json={"body": "x"}, headers=bob.headers),
        403,
        "blog.not_message_sender",
    )
    assert_problem(await http.delete(url, headers=bob.headers), 403, "blog.not_message_sender")
    assert_problem(
        await http.patch(url, json={"body": ""}, headers=ann.headers), 422, "validation_failed"
    )
    assert_problem(
        await http.patch(url, json={"body": "x" * 4001}, headers=ann.headers),
        422,
        "blog.message_too_long",
    )
    assert (await http.get(url, headers=bob.headers)).json()["body"] == "hello!"

    assert (await http.delete(url, headers=ann.headers)).status_code == 204
    assert (await http.delete(url, headers=ann.headers)).status_code == 204  # again is fine
    tombstone = (await history(http, bob, cid))["items"][0]
    assert tombstone["seq"] == 1
    assert (tombstone["deleted"], tombstone["body"], tombstone["edit_count"]) == (True, None, 0)
    assert (await http.get(f"{url}/edits", headers=bob.headers)).json() == []
    assert_problem(
        await http.patch(url, json={"body": "back"}, headers=ann.headers),
        409,
        "blog.message_deleted",
    )
    assert (await sent(http, bob, cid, "next"))["seq"] == 2


async def test_reads_move_forward_and_unread_counts_follow(
    http: httpx.AsyncClient, blog_app: FastAPI, ann: Caller, bob: Caller, carl: Caller
) -> None:
    direct = (await start(http, ann, bob))["id"]
    group = (await start(http, ann, bob, carl, title="Lighthouse keepers"))["id"]
    for n in range(3):
        await sent(http, ann, direct, f"d{n}")
    await sent(http, ann, group, "g0")
    deleted = await sent(http, ann, group, "gone soon")
    await http.delete(f"{PREFIX}/messages/{deleted['id']}", headers=ann.headers)
    unread = await http.get(f"{PREFIX}/conversations/unread", headers=bob.headers)
    assert unread.json() == {"total": 4}  # three direct, one in the group (not the tombstone)
    # Sending reads the conversation up to your message; your own are never unread.
    await sent(http, bob, group, "bob's own")
    async with blog_app.state.kernel.db.unit_of_work() as session:
        assert await unread_total(session, UUID(bob.user_id)) == 3
        assert await unread_total(session, UUID(ann.user_id)) == 1

    read_url = f"{PREFIX}/conversations/{direct}/read"
    state = await http.post(read_url, json={"seq": 2}, headers=bob.headers)
    assert state.status_code == 200, state.text
    assert state.json() == {
        "conversation_id": direct,
        "user_id": bob.user_id,
        "last_read_seq": 2,
        "unread_count": 1,
    }
    backwards = await http.post(read_url, json={"seq": 1}, headers=bob.headers)
    assert backwards.json()["last_read_seq"] == 2  # never moves back
    everything = await http.post(read_url, json={}, headers=bob.headers)
    assert (everything.json()["last_read_seq"], everything.json()["unread_count"]) == (3, 0)
    assert_problem(
        await http.post(read_url, json={"seq": 4}, headers=bob.headers), 422, "blog.invalid_seq"
    )
    for bad in ({"seq": -1}, {"seq": "x"}, {"seq": 1, "more": 1}):
        assert_problem(
            await http.post(read_url, json=bad, headers=bob.headers), 422, "validation_failed"
        )
    seen = await http.get(f"{PREFIX}/conversations/{direct}", headers=ann.headers)
    positions = {m["user_id"]: m["last_read_seq"] for m in seen.json()["members"]}
    assert positions == {ann.user_id: 3, bob.user_id: 3}  # sending reads your own


async def test_the_list_is_newest_activity_first_with_previews_and_pages(
    http: httpx.AsyncClient, ann: Caller, bob: Caller, carl: Caller
) -> None:
    with_bob = (await start(http, ann, bob))["id"]
    with_carl = (await start(http, ann, carl))["id"]
    group = (await start(http, ann, bob, carl, title="All of us"))["id"]
    await sent(http, bob, with_bob, "x" * 300)
    listed = await http.get(f"{PREFIX}/conversations", headers=ann.headers)
    items = listed.json()["items"]
    assert [item["id"] for item in items] == [with_bob, group, with_carl]
    assert items[0]["unread_count"] == 1
    assert items[0]["last_message"]["body"] == "x" * 200
    assert items[1]["last_message"] is None
    first = await http.get(f"{PREFIX}/conversations", params={"limit": 2}, headers=ann.headers)
    cursor = first.json()["next_cursor"]
    assert cursor
    rest = await http.get(
        f"{PREFIX}/conversations", params={"limit": 2, "cursor": cursor}, headers=ann.headers
    )
    assert [item["id"] for item in rest.json()["items"]] == [with_carl]
    assert rest.json()["next_cursor"] is None
    # A cursor is bound to its caller's list.
    foreign = await http.get(
        f"{PREFIX}/conversations", params={"cursor": cursor}, headers=bob.headers
    )
    assert_problem(foreign, 400, "pagination.invalid_cursor")
    carls = await http.get(f"{PREFIX}/conversations", headers=carl.headers)
    assert {item["id"] for item in carls.json()["items"]} == {with_carl, group}


# -- who may see what -------------------------------------------------------------------


async def test_outsiders_get_404_for_everything_and_anonymous_callers_401(
    http: httpx.AsyncClient, ann: Caller, bob: Caller, carl: Caller
) -> None:
    cid = (await start(http, ann, bob))["id"]
    message = await sent(http, ann, cid, "private")
    mid = message["id"]
    conversation_404 = [
        ("GET", f"/conversations/{cid}", None),
        ("GET", f"/conversations/{cid}/messages", None),
        ("POST", f"/conversations/{cid}/messages", {"body": "let me in"}),
        ("POST", f"/conversations/{cid}/read", {}),
        ("POST", f"/conversations/{cid}/members", {"user_ids": [carl.user_id]}),
        ("DELETE", f"/conversations/{cid}/members/{ann.user_id}", None),
        ("DELETE", f"/conversations/{cid}/members/{carl.user_id}", None),
        ("GET", f"/conversations/{UNKNOWN}", None),
    ]
    for method, path, payload in conversation_404:
        response = await http.request(method, PREFIX + path, json=payload, headers=carl.headers)
        assert_problem(response, 404, "blog.conversation_not_found")
    message_404 = [
        ("GET", f"/messages/{mid}", None),
        ("PATCH", f"/messages/{mid}", {"body": "mine now"}),
        ("DELETE", f"/messages/{mid}", None),
        ("GET", f"/messages/{mid}/edits", None),
    ]
    for method, path, payload in message_404:
        response = await http.request(method, PREFIX + path, json=payload, headers=carl.headers)
        assert_problem(response, 404, "blog.message_not_found")
    for method, path, payload in [*conversation_404, *message_404]:
        response = await http.request(method, PREFIX + path, json=payload)
        assert_problem(response, 401, "unauthorized")
    for path in ("/conversations", "/conversations/unread", "/users/me/blocks"):
        assert_problem(await http.get(PREFIX + path), 401, "unauthorized")
    listed = await http.get(f"{PREFIX}/conversations", headers=carl.headers)
    assert listed.json()["items"] == []
    assert (await http.get(f"{PREFIX}/messages/{mid}", headers=bob.headers)).json()[
        "body"
    ] == "private"
    assert_problem(
        await http.get(f"{PREFIX}/conversations/not-a-uuid", headers=ann.headers),
        422,
        "validation_failed",
    )


# -- blocks -----------------------------------------------------------------------------


async def test_blocks_stop_direct_messages_both_ways_until_lifted(
    http: httpx.AsyncClient, ann: Caller, bob: Caller
) -> None:
    cid = (await start(http, ann, bob))["id"]
    await sent(http, bob, cid, "hi ann")
    blocked = await http.put(f"{PREFIX}/users/{bob.user_id}/block", headers=ann.headers)
    assert blocked.status_code == 200, blocked.text
    assert blocked.json()["user_id"] == bob.user_id
    again = await http.put(f"{PREFIX}/users/{bob.user_id}/block", headers=ann.headers)
    assert again.json() == blocked.json()
    listed = await http.get(f"{PREFIX}/users/me/blocks", headers=ann.headers)
    assert [b["user_id"] for b in listed.json()["items"]] == [bob.user_id]
    assert (await http.get(f"{PREFIX}/users/me/blocks", headers=bob.headers)).json()["items"] == []

    assert_problem(await send(http, bob, cid, "why?"), 403, "blog.user_blocked")
    assert_problem(await send(http, ann, cid, "bye"), 403, "blog.user_blocked")
    first = (await history(http, bob, cid))["items"][0]
    assert_problem(
        await http.patch(
            f"{PREFIX}/messages/{first['id']}", json={"body": "edited"}, headers=bob.headers
        ),
        403,
        "blog.user_blocked",
    )
    assert [m["body"] for m in (await history(http, bob, cid))["items"]] == ["hi ann"]

    assert (
        await http.delete(f"{PREFIX}/users/{bob.user_id}/block", headers=ann.headers)
    ).status_code == 204
    assert (
        await http.delete(f"{PREFIX}/users/{bob.user_id}/block", headers=ann.headers)
    ).status_code == 204
    assert (await sent(http, bob, cid, "friends again"))["seq"] == 2


async def test_a_blocked_user_cannot_start_a_conversation_or_add_the_blocker(
    http: httpx.AsyncClient, ann: Caller, bob: Caller, carl: Caller
) -> None:
    await http.put(f"{PREFIX}/users/{bob.user_id}/block", headers=ann.headers)
    direct = await http.post(
        f"{PREFIX}/conversations",
        json={"kind": "direct", "member_ids": [ann.user_id]},
        headers=bob.headers,
    )
    assert_problem(direct, 403, "blog.user_blocked")
    group = await http.post(
        f"{PREFIX}/conversations",
        json={"kind": "group", "title": "Trap", "member_ids": [ann.user_id, carl.user_id]},
        headers=bob.headers,
    )
    assert_problem(group, 403, "blog.user_blocked")
    gid = (await start(http, bob, carl, title="Just us"))["id"]
    added = await http.post(
        f"{PREFIX}/conversations/{gid}/members",
        json={"user_ids": [ann.user_id]},
        headers=bob.headers,
    )
    assert_problem(added, 403, "blog.user_blocked")
    # The blocker may still add the blocked user to a group of theirs.
    own = await start(http, ann, bob, title="Ann's")
    assert {m["user_id"] for m in own["members"]} == {ann.user_id, bob.user_id}


async def test_block_requests_that_cannot_work_are_refused(
    http: httpx.AsyncClient, ann: Caller
) -> None:
    assert_problem(
        await http.put(f"{PREFIX}/users/{ann.user_id}/block", headers=ann.headers),
        422,
        "blog.cannot_block_self",
    )
    assert_problem(
        await http.put(f"{PREFIX}/users/{UNKNOWN}/block", headers=ann.headers),
        404,
        "blog.profile_not_found",
    )
    assert_problem(
        await http.put(f"{PREFIX}/users/someone/block", headers=ann.headers),
        422,
        "validation_failed",
    )
    assert_problem(await http.put(f"{PREFIX}/users/{UNKNOWN}/block"), 401, "unauthorized")
    assert_problem(await http.delete(f"{PREFIX}/users/{UNKNOWN}/block"), 401, "unauthorized")


# -- groups -----------------------------------------------------------------------------


@pytest.fixture
async def small_app(
    app_factory: Callable[..., Any], settings_factory: Callable[..., Settings]
) -> FastAPI:
    """Groups of at most three, bodies of at most 50 characters, three sends a minute."""
    settings = settings_factory(
        rate_limits={**BLOG_LIMITS, "blog_messages": "3/minute"},
        blog=BlogSettings(group_max_members=3, message_max_chars=50),
    )
    app: FastAPI = await app_factory(settings, [blog_module])
    return app


@pytest.fixture
async def small(small_app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    async with client_for(small_app) as client:
        yield client


async def test_groups_have_an_owner_a_member_limit_and_members_who_leave(
    small: httpx.AsyncClient,
) -> None:
    ann, bob, carl, dora = [
        await sign_up(small, f"{name}@example.com", name.capitalize())
        for name in ("ann", "bob", "carl", "dora")
    ]
    too_many = await small.post(
        f"{PREFIX}/conversations",
        json={
            "kind": "group",
            "title": "Crowd",
            "member_ids": [bob.user_id, carl.user_id, dora.user_id],
        },
        headers=ann.headers,
    )
    assert_problem(too_many, 422, "blog.too_many_members")
    group = await start(small, ann, bob, title="Keepers")
    gid = group["id"]
    roles = {m["user_id"]: m["role"] for m in group["members"]}
    assert roles == {ann.user_id: "owner", bob.user_id: "member"}
    members_url = f"{PREFIX}/conversations/{gid}/members"
    assert_problem(
        await small.post(members_url, json={"user_ids": [carl.user_id]}, headers=bob.headers),
        403,
        "blog.not_conversation_owner",
    )
    added = await small.post(
        members_url, json={"user_ids": [carl.user_id, bob.user_id]}, headers=ann.headers
    )
    assert added.status_code == 200, added.text
    assert len(added.json()["members"]) == 3
    full = await small.post(members_url, json={"user_ids": [dora.user_id]}, headers=ann.headers)
    assert_problem(full, 409, "blog.conversation_full")
    for bad in ({"user_ids": []}, {"user_ids": ["x"]}, {"users": [dora.user_id]}):
        assert_problem(
            await small.post(members_url, json=bad, headers=ann.headers), 422, "validation_failed"
        )
    assert_problem(
        await small.delete(f"{members_url}/{ann.user_id}", headers=bob.headers),
        403,
        "blog.not_conversation_owner",
    )
    assert_problem(
        await small.delete(f"{members_url}/{dora.user_id}", headers=ann.headers),
        404,
        "blog.conversation_member_not_found",
    )

    await sent(small, bob, gid, "before I go")
    assert (
        await small.delete(f"{members_url}/{carl.user_id}", headers=ann.headers)
    ).status_code == 204
    assert_problem(
        await small.get(f"{PREFIX}/conversations/{gid}", headers=carl.headers),
        404,
        "blog.conversation_not_found",
    )
    # The owner leaves: the member who joined first inherits the group.
    assert (
        await small.delete(f"{members_url}/{ann.user_id}", headers=ann.headers)
    ).status_code == 204
    after = (await small.get(f"{PREFIX}/conversations/{gid}", headers=bob.headers)).json()
    assert [(m["user_id"], m["role"]) for m in after["members"]] == [(bob.user_id, "owner")]
    assert (
        await small.delete(f"{members_url}/{bob.user_id}", headers=bob.headers)
    ).status_code == 204
    assert_problem(
        await small.get(f"{PREFIX}/conversations/{gid}", headers=bob.headers),
        404,
        "blog.conversation_not_found",
    )

    direct = (await start(small, ann, bob))["id"]
    for user in (ann, bob):
        leave = await small.delete(
            f"{PREFIX}/conversations/{direct}/members/{user.user_id}", headers=user.headers
        )
        assert_problem(leave, 409, "blog.direct_conversation")
    add = await small.post(
        f"{PREFIX}/conversations/{direct}/members",
        json={"user_ids": [carl.user_id]},
        headers=ann.headers,
    )
    assert_problem(add, 409, "blog.direct_conversation")


async def test_sending_is_rate_limited_with_a_clear_429(small: httpx.AsyncClient) -> None:
    ann = await sign_up(small, "ann@example.com", "Ann")
    bob = await sign_up(small, "bob@example.com", "Bob")
    cid = (await start(small, ann, bob))["id"]
    too_long = await send(small, ann, cid, "x" * 51)
    assert assert_problem(too_long, 422, "blog.message_too_long")["max_chars"] == 50
    for n in range(2):
        assert (await send(small, ann, cid, f"m{n}")).status_code == 201
    limited = await send(small, ann, cid, "one too many")
    assert_problem(limited, 429, "rate_limited")
    assert int(limited.headers["Retry-After"]) >= 1
    assert limited.headers["X-RateLimit-Limit"] == "3"
    # Per user: Bob still sends.
    assert (await send(small, bob, cid, "my turn")).status_code == 201
    assert (await history(small, bob, cid))["last_seq"] == 3
