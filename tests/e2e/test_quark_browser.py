"""Quark's end-to-end scenario (register -> post -> message) in a real headless Chromium,
through the web client the blog app serves at `/api/v1/blog/web`.

Runs in the suite against a live server with every app, when a Chromium is installed
(Debian's `chromium`, or the path in `VECHE_TEST_CHROMIUM`). Against a running `make run`:

    .venv/bin/python -m tests.e2e.test_quark_browser http://127.0.0.1:8000
"""

from __future__ import annotations

import asyncio
import os
import shutil
import sys
from collections.abc import Callable

import pytest

from tests.live import serve
from veche.kernel import build_app, new_id
from veche.registry import load_modules
from veche.settings import Settings

try:
    from playwright.async_api import Browser, Page, async_playwright, expect
except ImportError:  # the dev extra is not installed
    async_playwright = None

CHROMIUM = os.environ.get("VECHE_TEST_CHROMIUM") or shutil.which("chromium")
PASSWORD = "a long and unguessable passphrase 42"
TIMEOUT_MS = 10_000
if async_playwright is not None:
    # Assertions wait as long as actions: `expect` keeps its own 5 s default otherwise,
    # which a loaded CI machine exceeded once for a message's round trip.
    expect.set_options(timeout=TIMEOUT_MS)

pytestmark = pytest.mark.skipif(
    async_playwright is None or CHROMIUM is None,
    reason="needs Playwright for Python and a Chromium (apt-get install chromium)",
)


async def _sign_up(page: Page, base_url: str, name: str, email: str, username: str) -> None:
    await page.goto(f"{base_url}/api/v1/blog/web")
    form = page.get_by_test_id("register-form")
    await form.locator("[name=display_name]").fill(name)
    await form.locator("[name=email]").fill(email)
    await form.locator("[name=password]").fill(PASSWORD)
    await form.get_by_role("button").click()
    await expect(page.get_by_test_id("status")).to_have_text(f"Signed in as {name}")
    chosen = page.get_by_test_id("username-form")
    await chosen.locator("[name=username]").fill(username)
    await chosen.get_by_role("button").click()
    await expect(page.get_by_test_id("whoami")).to_have_text(f"@{username}")


async def _open_conversation(page: Page, username: str) -> None:
    form = page.get_by_test_id("conversation-form")
    await form.locator("[name=username]").fill(username)
    await form.get_by_role("button").click()
    await expect(page.get_by_test_id("message-form")).to_be_visible()


async def _send(page: Page, text: str) -> None:
    form = page.get_by_test_id("message-form")
    await form.locator("[name=body]").fill(text)
    await form.get_by_role("button").click()


async def scenario(browser: Browser, base_url: str) -> None:
    """Alice registers, starts a blog and publishes a post; Bob registers, reads it and
    writes to Alice; she reads the history, then they exchange messages live, with
    Bob's typing shown to her."""
    tag = new_id().hex[:8]
    alice_context, bob_context = await browser.new_context(), await browser.new_context()
    try:
        alice, bob = await alice_context.new_page(), await bob_context.new_page()
        for page in (alice, bob):
            page.set_default_timeout(TIMEOUT_MS)
        await _sign_up(alice, base_url, "Alice", f"alice-{tag}@example.com", f"alice_{tag}")
        blog = alice.get_by_test_id("blog-form")
        await blog.locator("[name=slug]").fill(f"notes-{tag}")
        await blog.locator("[name=title]").fill("Alice's notes")
        await blog.get_by_role("button").click()
        post = alice.get_by_test_id("post-form")
        await expect(post.locator("[name=blog]")).to_have_value(f"notes-{tag}")
        await post.locator("[name=title]").fill(f"Hello from Quark {tag}")
        await post.locator("[name=body]").fill("First paragraph.\nSecond <b>paragraph</b>.")
        await post.get_by_role("button").click()
        await expect(alice.get_by_test_id("status")).to_have_text(
            f'Published "Hello from Quark {tag}"'
        )

        await _sign_up(bob, base_url, "Bob", f"bob-{tag}@example.com", f"bob_{tag}")
        await expect(bob.get_by_test_id("posts")).to_contain_text(f"Hello from Quark {tag}")
        # No conversation is open yet, so there is nowhere to send a message.
        await expect(bob.get_by_test_id("message-form")).to_be_hidden()
        await _open_conversation(bob, f"alice_{tag}")
        await _send(bob, "Loved your first post!")
        bob_messages = bob.get_by_test_id("message-list")
        try:
            await expect(bob_messages.locator("li.mine")).to_have_text(["Loved your first post!"])
        except AssertionError as error:  # say what the page said (an intermittent failure)
            status = await bob.get_by_test_id("status").text_content()
            raise AssertionError(f"{error}\nBob's status line: {status!r}") from None

        await _open_conversation(alice, f"bob_{tag}")
        alice_messages = alice.get_by_test_id("message-list")
        # Offline when it was sent: the history has it.
        await expect(alice_messages.locator("li.theirs")).to_have_text(["Loved your first post!"])
        await _send(alice, "Thank you, Bob")
        # Live over the WebSocket, no reload.
        await expect(bob_messages.locator("li.theirs")).to_have_text(["Thank you, Bob"])

        await bob.get_by_test_id("message-form").locator("[name=body]").press_sequentially("S")
        await expect(alice.get_by_test_id("typing")).to_have_text("typing…")
        await _send(bob, "See you")
        await expect(alice_messages.locator("li.theirs")).to_have_text(
            ["Loved your first post!", "See you"]
        )
        # The markup Alice typed is text, not HTML, in her published post.
        await expect(bob.get_by_test_id("posts")).not_to_contain_text("<b>")
    finally:
        await alice_context.close()
        await bob_context.close()


async def run_against(base_url: str) -> None:
    if async_playwright is None or CHROMIUM is None:
        raise RuntimeError("needs Playwright for Python and a Chromium")
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        try:
            await scenario(browser, base_url)
        finally:
            await browser.close()


async def test_register_post_and_message_in_a_browser(
    settings_factory: Callable[..., Settings], clean: None
) -> None:
    app = build_app(settings_factory(), load_modules(None))  # every app, as `make run`
    with serve(app) as base_url:
        await run_against(base_url)


if __name__ == "__main__":
    asyncio.run(run_against(sys.argv[1] if len(sys.argv) > 1 else "http://127.0.0.1:8000"))
    print("the scenario passed")
