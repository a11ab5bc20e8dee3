"""The widget and the inbox in a real Chromium, on SQLite and PostgreSQL.

The app, a real dispatcher and the loopback Telegram run as in tests/test_outbound.py;
the browser is Debian's chromium driven by Playwright (tests/support/browser.py). Network
trouble is made with Playwright's request routing: a request that reaches the server but
whose answer the page never gets (``route.fetch()`` then ``route.abort()``), which is
exactly what a flaky connection does to a double-submitted form.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest
import sqlalchemy as sa
from playwright.sync_api import Browser, Page, Route, expect, sync_playwright

from noclash.db.tables import messages, sessions
from tests.support.browser import ARGS, chromium_path, embed, other_site
from tests.support.outbound import Stack, outbound_stack
from tests.support.platforms import TELEGRAM_BLOCKED, wait_for


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=chromium_path(), args=ARGS)
        yield launched
        launched.close()


@pytest.fixture
def stack(database_url) -> Iterator[Stack]:
    # A re-read period longer than any wait here: what arrives in time was pushed.
    with outbound_stack(database_url, stream_reread_seconds=60.0) as s:
        yield s


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    context = browser.new_context()
    page = context.new_page()
    page.set_default_timeout(10_000)
    yield page
    context.close()


def _count(stack: Stack, table, *where) -> int:
    with stack.server.engine.connect() as conn:
        return conn.execute(sa.select(sa.func.count()).select_from(table).where(*where)).scalar()


def _widget(page: Page):
    """The widget's shadow root, through Playwright's shadow-piercing locators."""
    return page.locator("[data-noclash-widget]")


def _until(page: Page, predicate: Any, timeout: float = 10.0) -> bool:
    """Wait for ``predicate`` while Playwright keeps dispatching its events (the sync API
    runs route handlers and listeners only inside its own calls, never during a sleep)."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            return False
        page.wait_for_timeout(50)
    return True


def _lose_first_answer(page: Page, pattern: str, method: str = "POST") -> list[int]:
    """The first matching request reaches the server, but its answer is lost on the way
    back (the page sees a network error); later ones go through. Returns the statuses the
    server gave, in order."""
    statuses: list[int] = []
    lost: list[bool] = []

    def handle(route: Route) -> None:
        if route.request.method != method or lost:
            route.continue_()
            return
        lost.append(True)
        statuses.append(route.fetch().status)
        route.abort("connectionreset")

    def answered(response: Any) -> None:
        if response.request.method == method and lost and response.request.url.endswith(
            tuple(pattern.rsplit("*", 1)[-1:])
        ):
            statuses.append(response.status)

    page.route(pattern, handle)
    page.on("response", answered)
    return statuses


def _start(page: Page, url: str):
    """Open ``url``, open the widget and start a conversation; the widget."""
    page.goto(url)
    widget = _widget(page)
    widget.get_by_role("button", name="Open chat").click()
    widget.get_by_role("button", name="Start a conversation").click()
    return widget


def _say(widget, text: str) -> None:
    """The visitor types ``text`` and presses Enter."""
    box = widget.get_by_role("textbox", name="Your message")
    box.fill(text)
    box.press("Enter")


# -- the widget ---------------------------------------------------------------------------------


def test_a_double_click_or_a_lost_answer_on_start_makes_one_session(stack, page):
    bot = stack.chatbot()
    statuses = _lose_first_answer(page, "**/api/widget/*/sessions")
    page.goto(f"{stack.server.base_url}/widget/demo/{bot['public_token']}")
    widget = _widget(page)
    widget.get_by_role("button", name="Open chat").click()
    start = widget.get_by_role("button", name="Start a conversation")
    start.dblclick()
    # The first answer was lost: the widget offers a retry, which sends the same key.
    widget.get_by_role("button", name="Retry").click()
    expect(widget.get_by_role("textbox", name="Your message")).to_be_visible()
    assert _until(page, lambda: len(statuses) == 2)
    assert statuses == [201, 201]  # the second is the stored answer, replayed
    assert _count(stack, sessions) == 1


def test_a_reload_and_a_second_tab_continue_the_same_conversation(stack, page):
    bot = stack.chatbot()
    url = f"{stack.server.base_url}/widget/demo/{bot['public_token']}"
    widget = _start(page, url)
    _say(widget, "Where is my order?")
    expect(widget.locator(".msg.in")).to_have_text(["Where is my order?"])
    page.reload()
    widget.get_by_role("button", name="Open chat").click()
    expect(widget.locator(".msg.in")).to_have_text(["Where is my order?"])
    second = page.context.new_page()
    second.goto(url)
    _widget(second).get_by_role("button", name="Open chat").click()
    expect(_widget(second).locator(".msg.in")).to_have_text(["Where is my order?"])
    assert _count(stack, sessions) == 1


def test_a_double_submit_stores_one_message(stack, page):
    bot = stack.chatbot()
    statuses = _lose_first_answer(page, "**/sessions/*/messages")
    widget = _start(page, f"{stack.server.base_url}/widget/demo/{bot['public_token']}")
    _say(widget, "only once please")
    widget.get_by_role("button", name="Retry").click()
    expect(widget.locator(".msg.in")).to_have_text(["only once please"])
    # The stream may show the message before the resend is answered: wait for the resend.
    assert _until(page, lambda: len(statuses) == 2)
    assert statuses == [201, 200]  # stored, then recognised by its client_message_id
    assert _count(stack, messages, messages.c.direction == "in") == 1


def test_the_widget_on_a_disallowed_site_gets_no_data(stack, page):
    bot = stack.chatbot()
    stack.api.patch(f"/api/chatbots/{bot['id']}",
                    json={"allowed_origins": ["https://shop.example"]})  # fmt: skip
    with other_site(embed(stack.server.base_url, bot["public_token"])) as site:
        page.goto(site)
        widget = _widget(page)
        widget.get_by_role("button", name="Open chat").click()
        # The refusal, not a network error: the page may read the 403 (it holds no data).
        expect(widget.locator(".notice.error")).to_contain_text("not available on this site")
        expect(widget.get_by_role("button", name="Start a conversation")).to_have_count(0)
    assert _count(stack, sessions) == 0


def test_the_widget_works_on_an_allowed_site(stack, page):
    bot = stack.chatbot()
    with other_site(embed(stack.server.base_url, bot["public_token"])) as site:
        stack.api.patch(f"/api/chatbots/{bot['id']}", json={"allowed_origins": [site]})
        widget = _start(page, site)
        _say(widget, "from the shop")
        expect(widget.locator(".msg.in")).to_have_text(["from the shop"])
    # No global names leaked into the host page.
    assert page.evaluate("Object.keys(window).filter(k => /noclash/i.test(k))") == []


def test_unknown_token_and_require_auth_say_so(stack, page):
    page.goto(f"{stack.server.base_url}/widget/demo/{stack.chatbot()['public_token']}")
    # The demo page of an unknown token is a 404; embed it on a site instead.
    with other_site(embed(stack.server.base_url, "3b1f0f0e-0000-4000-8000-000000000000")) as s:
        page.goto(s)
        _widget(page).get_by_role("button", name="Open chat").click()
        expect(_widget(page).locator(".notice.error")).to_contain_text("not available")
    locked = stack.chatbot(require_auth=True)
    with other_site(embed(stack.server.base_url, locked["public_token"])) as s:
        page.goto(s)
        _widget(page).get_by_role("button", name="Open chat").click()
        expect(_widget(page).locator(".notice.error")).to_contain_text("signed-in")


# -- the inbox ----------------------------------------------------------------------------------


def _sign_in(stack: Stack, page: Page, path: str = "/inbox") -> None:
    page.goto(f"{stack.server.base_url}{path}")
    page.get_by_label("API token").fill(stack.token)
    page.get_by_label("API token").press("Enter")
    expect(page.locator("#app-view")).to_be_visible()


def _inbox_at(stack: Stack, page: Page, conversation: dict) -> None:
    """Signed in, on ``conversation``'s page of the inbox."""
    _sign_in(stack, page, f"/inbox/{conversation['chatbot_id']}/{conversation['slug']}")


def _reply(page: Page, text: str) -> None:
    """Type ``text`` into the inbox's reply box and send it with Ctrl+Enter."""
    box = page.get_by_label("Reply")
    box.fill(text)
    box.press("Control+Enter")


def _telegram_customer(stack: Stack, chat_id: int = 5550001) -> tuple[dict, dict]:
    bot = stack.chatbot(name="Support")
    connection, _token = stack.telegram_connection(bot["id"])
    conversation = stack.telegram_customer(connection, chat_id, "my parcel?", update_id=chat_id)
    return connection, conversation


def test_sign_in_keeps_the_token_in_the_tab_and_never_in_a_url(stack, page):
    _connection, conversation = _telegram_customer(stack)
    _sign_in(stack, page)
    assert page.evaluate("sessionStorage.getItem('noclash:token')") == stack.token
    assert page.evaluate("localStorage.length") == 0
    assert stack.token not in page.url
    expect(page.locator("[data-count=OPEN]")).to_have_text("1")
    page.locator("#list a").first.click()
    expect(page).to_have_url(f"{stack.server.base_url}/inbox/{conversation['chatbot_id']}/"
                             f"{conversation['slug']}")  # fmt: skip
    expect(page.locator("#messages .message.in")).to_have_text(["my parcel?"])


def test_a_former_slug_address_shows_the_conversation_at_its_current_one(stack, page):
    _connection, conversation = _telegram_customer(stack)
    renamed = stack.api.patch(f"/api/conversations/{conversation['id']}",
                              json={"title": "Parcel lost in Lyon"}).json()  # fmt: skip
    assert renamed["slug"] != conversation["slug"]
    _inbox_at(stack, page, conversation)
    expect(page.locator("#thread-title")).to_have_text("Parcel lost in Lyon")
    expect(page).to_have_url(f"{stack.server.base_url}/inbox/{conversation['chatbot_id']}/"
                             f"{renamed['slug']}")  # fmt: skip


def test_a_reply_sent_twice_over_a_flaky_network_is_one_reply_delivered_once(stack, page):
    _connection, conversation = _telegram_customer(stack)
    statuses = _lose_first_answer(page, f"**/api/conversations/{conversation['id']}/messages")
    _inbox_at(stack, page, conversation)
    page.get_by_label("Reply").fill("On its way!")
    page.get_by_role("button", name="Send").dblclick()
    expect(page.locator("#thread-alert")).to_contain_text("not sent")
    page.get_by_role("button", name="Send").click()
    expect(page.locator("#messages .message.out .delivery")).to_have_text(["Sent"])
    assert _until(page, lambda: len(statuses) == 2)
    assert statuses == [201, 201]
    assert _count(stack, messages, messages.c.direction == "out") == 1
    time.sleep(0.3)
    assert [m["text"] for m in stack.telegram.delivered()] == ["On its way!"]


def test_a_failed_delivery_shows_the_platforms_error_and_retry_sends_it(stack, page):
    _connection, conversation = _telegram_customer(stack)
    stack.telegram.fail_next(1, *TELEGRAM_BLOCKED)
    _inbox_at(stack, page, conversation)
    _reply(page, "hello?")
    failed = page.locator("#messages .message.out .delivery")
    expect(failed).to_contain_text("Failed: Telegram error 403: Forbidden: bot was blocked")
    failed.get_by_role("button", name="Retry").click()
    expect(failed).to_have_text("Sent")
    assert [m["text"] for m in stack.telegram.delivered()] == ["hello?"]


def test_reopening_beside_another_open_conversation_links_to_it(stack, page):
    connection, first = _telegram_customer(stack)
    stack.api.post(f"/api/conversations/{first['id']}/close")
    second = stack.telegram_customer(connection, 5550001, "me again", update_id=77)
    assert second["id"] != first["id"]
    _sign_in(stack, page, f"/inbox/{first['chatbot_id']}/{first['slug']}")
    page.get_by_role("button", name="Reopen").click()
    alert = page.locator("#thread-alert")
    expect(alert).to_contain_text("Another conversation with this customer is open")
    alert.get_by_role("link", name="Open it").click()
    expect(page).to_have_url(f"{stack.server.base_url}/inbox/{second['chatbot_id']}/"
                             f"{second['slug']}")  # fmt: skip
    expect(page.locator("#messages .message.in")).to_have_text(["me again"])


def test_the_inbox_works_from_the_keyboard_alone(stack, page):
    _telegram_customer(stack)
    page.goto(f"{stack.server.base_url}/inbox")
    page.keyboard.type(stack.token)  # the token field has the focus
    page.keyboard.press("Enter")
    expect(page.locator("#app-view")).to_be_visible()
    link = page.locator("#list a").first
    expect(link).to_be_visible()
    for _ in range(12):  # Tab until the conversation link has the focus
        if page.evaluate("document.activeElement && document.activeElement.matches('#list a')"):
            break
        page.keyboard.press("Tab")
    page.keyboard.press("Enter")
    expect(page.locator("#messages .message.in")).to_have_text(["my parcel?"])
    page.locator("#reply").focus()
    page.keyboard.type("typed, not clicked")
    page.keyboard.press("Control+Enter")
    expect(page.locator("#messages .message.out .text")).to_have_text(["typed, not clicked"])
    assert wait_for(lambda: len(stack.telegram.delivered()) == 1)


# -- live ---------------------------------------------------------------------------------------


def _widget_session(stack: Stack, page: Page, public_token: str, text: str) -> dict:
    widget = _start(page, f"{stack.server.base_url}/widget/demo/{public_token}")
    _say(widget, text)
    expect(widget.locator(".msg.in")).to_have_text([text])
    return page.evaluate(f"JSON.parse(localStorage.getItem('noclash:{public_token}:session'))")


def test_replies_and_visitor_messages_appear_live_within_two_seconds(stack, browser, page):
    """The agent types in the inbox, the visitor sees it in the widget; the visitor writes,
    the agent sees it in the inbox; each within 2 s, pushed by the streams (the periodic
    re-read of this server is 60 s: only a wake-up can deliver in time)."""
    bot = stack.chatbot(name="Live")
    visitor = browser.new_context().new_page()
    session = _widget_session(stack, visitor, bot["public_token"], "hello, anyone?")
    conversation = stack.api.get(f"/api/conversations/{session['conversation_id']}").json()
    _sign_in(stack, page, f"/inbox/{bot['id']}/{conversation['slug']}")
    expect(page.locator("#messages .message.in")).to_have_text(["hello, anyone?"])
    _reply(page, "Hi! I am here.")
    expect(_widget(visitor).locator(".msg.out")).to_have_text(["Hi! I am here."], timeout=2000)
    _say(_widget(visitor), "great, thanks")
    expect(page.locator("#messages .message.in")).to_have_text(
        ["hello, anyone?", "great, thanks"], timeout=2000
    )
    expect(page.locator("[data-count=OPEN]")).to_have_text("1")
    visitor.context.close()


def test_a_reply_arrives_after_the_stream_was_cut_and_restored(stack, page):
    bot = stack.chatbot(name="Flaky")
    session = _widget_session(stack, page, bot["public_token"], "still there?")
    page.context.set_offline(True)
    time.sleep(0.5)
    stack.reply(session["conversation_id"], "yes, answered while you were offline")
    time.sleep(0.5)
    page.context.set_offline(False)
    expect(_widget(page).locator(".msg.out")).to_have_text(
        ["yes, answered while you were offline"], timeout=10_000
    )
    stack.reply(session["conversation_id"], "and this one live")
    expect(_widget(page).locator(".msg.out")).to_have_text(
        ["yes, answered while you were offline", "and this one live"], timeout=5_000
    )
