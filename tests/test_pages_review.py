"""The pages' answers to a review, in a real Chromium (on SQLite: see pytestmark below).

Each test is one defect the review reproduced (tests/test_pages_browser.py has the set-up:
the app, a real dispatcher, the loopback Telegram and Debian's chromium): a reply refused
once stays sendable, the inbox lists more than one page of conversations, text typed or
corrected around a send is never lost, a refused widget stream is told apart (a session
that is gone, too many tabs), the thread is not rebuilt while a reply waits, Retry keeps
the keyboard focus, a second tab follows a conversation started in the first, and a long
title stays in the sidebar.
"""

from __future__ import annotations

from typing import Any

import pytest
import sqlalchemy as sa
from playwright.sync_api import Page, Route, expect

from noclash.db.tables import messages, sessions
from tests import test_pages_browser as pages
from tests.support.platforms import TELEGRAM_BLOCKED, telegram_error
from tests.test_pages_browser import (
    _count,
    _inbox_at,
    _lose_first_answer,
    _reply,
    _say,
    _sign_in,
    _start,
    _telegram_customer,
    _until,
    _widget,
    _widget_session,
)

# On SQLite alone: what these check is the pages' own behaviour (their scripts, against
# the same API), which the engine does not change; tests/test_pages_browser.py runs the
# issue's scenarios on both engines, and the API's answers are tested on both elsewhere.
pytestmark = pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)

# The fixtures of tests/test_pages_browser.py, here by the same names.
browser, stack, page = pages.browser, pages.stack, pages.page

# The answer to a message POST comes 1.5 s after the server gave it: a slow network.
SLOW_SENDS = """(() => { const f = window.fetch;
  window.fetch = async (u, o) => { const r = await f(u, o);
    if (o && o.method === 'POST' && String(u).endsWith('/messages'))
      await new Promise((x) => setTimeout(x, 1500));
    return r; }; })();"""


def _texts(stack, direction: str) -> list[str]:
    with stack.server.engine.connect() as conn:
        rows = conn.execute(
            sa.select(messages.c.text)
            .where(messages.c.direction == direction)
            .order_by(messages.c.id)
        )
        return [row.text for row in rows]


def _posts(page: Page, suffix: str = "/messages") -> list[int]:
    """The statuses of the page's POSTs to a URL ending with ``suffix``, as they come."""
    statuses: list[int] = []

    def answered(response: Any) -> None:
        if response.request.method == "POST" and response.url.endswith(suffix):
            statuses.append(response.status)

    page.on("response", answered)
    return statuses


# -- the inbox ----------------------------------------------------------------------------------


def test_a_reply_refused_because_the_conversation_was_closed_can_be_sent_after_reopening(
    stack, page
):
    _connection, conversation = _telegram_customer(stack)
    page.route("**/api/stream*", lambda route: route.abort())  # the close is not announced
    _inbox_at(stack, page, conversation)
    expect(page.locator("#messages .message.in")).to_have_text(["my parcel?"])
    stack.api.post(f"/api/conversations/{conversation['id']}/close")  # closed elsewhere
    statuses = _posts(page)
    page.get_by_label("Reply").fill("Sorry for the wait!")
    page.get_by_role("button", name="Send").click()
    expect(page.locator("#thread-alert")).to_contain_text("closed")
    # The 409 made the page read the conversation again: it shows it closed, with Reopen.
    expect(page.locator("#thread-status")).to_have_text("CLOSED")
    page.get_by_role("button", name="Reopen").click()
    expect(page.get_by_label("Reply")).to_have_value("Sorry for the wait!")
    page.get_by_role("button", name="Send").click()
    expect(page.locator("#messages .message.out .text")).to_have_text(["Sorry for the wait!"])
    # A new key for the new attempt: not the stored 409 replayed.
    assert _until(page, lambda: len(statuses) == 2)
    assert statuses == [409, 201]
    assert _texts(stack, "out") == ["Sorry for the wait!"]


def test_an_edited_reply_after_a_lost_answer_is_a_new_reply(stack, page):
    _connection, conversation = _telegram_customer(stack)
    statuses = _lose_first_answer(page, f"**/api/conversations/{conversation['id']}/messages")
    _inbox_at(stack, page, conversation)
    page.get_by_label("Reply").fill("On its way")
    page.get_by_role("button", name="Send").click()
    expect(page.locator("#thread-alert")).to_contain_text("not sent")
    # The agent corrects the text before sending again: another reply, with another key
    # (the first key is the first text's: reused, the server would refuse it with a 422).
    page.get_by_label("Reply").fill("On its way! Tracking number 42.")
    page.get_by_role("button", name="Send").click()
    expect(page.locator("#messages .message.out .text")).to_have_text(
        ["On its way", "On its way! Tracking number 42."]
    )
    assert _until(page, lambda: len(statuses) == 2)
    assert statuses == [201, 201]
    assert _texts(stack, "out") == ["On its way", "On its way! Tracking number 42."]


def test_the_list_shows_the_newest_of_more_than_200_conversations(stack, page):
    bot = stack.chatbot(name="Busy")
    created = [
        stack.api.post(
            f"/api/chatbots/{bot['id']}/conversations", json={"title": f"customer {i}"}
        ).json()
        for i in range(205)
    ]
    _sign_in(stack, page)
    page.locator("#chatbot").select_option(bot["id"])
    expect(page.locator("[data-count=OPEN]")).to_have_text("205")
    expect(page.locator("#list a")).to_have_count(205)
    # Newest activity first: the last created (on the API's second page) on top.
    expect(page.locator("#list a").first).to_have_attribute("data-id", created[-1]["id"])


def test_a_reply_typed_on_while_the_previous_one_is_sent_is_kept(stack, page):
    _connection, conversation = _telegram_customer(stack)
    page.add_init_script(SLOW_SENDS)
    _inbox_at(stack, page, conversation)
    expect(page.locator("#messages .message.in")).to_have_text(["my parcel?"])
    box = page.get_by_label("Reply")
    box.fill("Let me check.")
    box.press("Control+Enter")
    box.press("End")
    box.type(" It left our warehouse on Monday.", delay=5)
    expect(page.locator("#messages .message.out .text")).to_have_text(["Let me check."])
    expect(box).to_have_value("It left our warehouse on Monday.")
    assert _texts(stack, "out") == ["Let me check."]


def test_the_thread_is_not_rebuilt_while_a_reply_is_queued(stack, page):
    _connection, conversation = _telegram_customer(stack)
    # The platform rate-limits the reply for two minutes: it stays queued.
    stack.telegram.fail_next(
        1, 429, telegram_error(429, "Too Many Requests: retry after 120", retry_after=120)
    )
    _inbox_at(stack, page, conversation)
    _reply(page, "Let me check")
    expect(page.locator("#messages .message.out .delivery")).to_have_text("Queued")
    page.wait_for_timeout(500)
    # Messages added to the list (a rebuild re-adds every one). Not the subtree: the
    # delivery line may change once, legitimately, when the 429's outcome is settled.
    page.evaluate("""() => { window.__added = 0;
      new MutationObserver((ms) => ms.forEach((m) => { window.__added += m.addedNodes.length; }))
        .observe(document.getElementById('messages'), { childList: true });
      const text = document.querySelector('#messages .message.in .text');
      const range = document.createRange(); range.selectNodeContents(text);
      getSelection().removeAllRanges(); getSelection().addRange(range); }""")
    reads: list[str] = []
    page.on("request", lambda r: reads.append(r.url) if r.method == "GET" and
            r.url.split("?")[0].endswith("/messages") else None)  # fmt: skip
    page.wait_for_timeout(6000)
    expect(page.locator("#messages .message.out .delivery")).to_have_text("Queued")
    assert page.evaluate("window.__added") == 0  # nothing re-announced
    assert page.evaluate("getSelection().toString()") == "my parcel?"
    assert len(reads) <= 4, reads  # backing off (1, 2, 4 s...), not every second


def test_retry_pressed_with_enter_keeps_the_keyboard_focus(stack, page):
    _connection, conversation = _telegram_customer(stack)
    stack.telegram.fail_next(1, *TELEGRAM_BLOCKED)
    _inbox_at(stack, page, conversation)
    _reply(page, "hello?")
    delivery = page.locator("#messages .message.out .delivery")
    expect(delivery).to_contain_text("Failed")
    retry = delivery.get_by_role("button", name="Retry")
    retry.focus()
    page.wait_for_timeout(1200)  # re-renders meanwhile do not take the focus away
    expect(retry).to_be_focused()
    page.keyboard.press("Enter")
    expect(delivery).to_have_text("Sent")
    # The Retry is gone with the failure: the focus is on the delivery that replaced it.
    assert page.evaluate(
        "!!(document.activeElement && document.activeElement.closest('#messages .message.out'))"
    )


def test_a_long_title_stays_inside_the_sidebar(stack, page):
    _connection, conversation = _telegram_customer(stack)
    stack.api.patch(f"/api/conversations/{conversation['id']}", json={"title": "A" * 300})
    _sign_in(stack, page)
    expect(page.locator("#list a .title")).to_have_text("A" * 300)
    width, visible = page.evaluate(
        "(() => { const s = document.querySelector('nav.side');"
        " return [s.scrollWidth, s.clientWidth]; })()"
    )
    assert width <= visible


# -- the widget ---------------------------------------------------------------------------------


def test_a_corrected_resend_after_a_lost_answer_is_stored(stack, page):
    bot = stack.chatbot()
    statuses = _lose_first_answer(page, "**/sessions/*/messages")
    widget = _start(page, f"{stack.server.base_url}/widget/demo/{bot['public_token']}")
    _say(widget, "I ordered 5 chairs")
    expect(widget.get_by_role("button", name="Retry")).to_be_visible()
    # The text is back in the box; the visitor corrects it and sends again.
    _say(widget, "I ordered 6 chairs, not 5")
    assert _until(page, lambda: len(statuses) == 2)
    assert statuses == [201, 201]  # a new message, not a duplicate of the first
    expect(widget.locator(".msg.in")).to_have_text(
        ["I ordered 5 chairs", "I ordered 6 chairs, not 5"]
    )
    assert _texts(stack, "in") == ["I ordered 5 chairs", "I ordered 6 chairs, not 5"]


def test_text_typed_while_a_message_is_sent_is_kept_and_sent(stack, page):
    bot = stack.chatbot()
    page.add_init_script(SLOW_SENDS)
    statuses = _posts(page)
    widget = _start(page, f"{stack.server.base_url}/widget/demo/{bot['public_token']}")
    box = widget.get_by_role("textbox", name="Your message")
    _say(widget, "Hello")
    box.type("my order number is 1234", delay=5)  # typed while "Hello" is on its way
    page.wait_for_timeout(2500)  # the answer has come
    expect(widget.locator(".msg.in")).to_have_text(["Hello"])
    expect(box).to_have_value("my order number is 1234")
    # Enter again while a message is on its way: sent after it, not dropped as a duplicate.
    box.press("Enter")
    box.type("and a third", delay=5)
    box.press("Enter")
    expect(box).to_have_value("")
    expect(widget.locator(".msg.in")).to_have_text(
        ["Hello", "my order number is 1234", "and a third"], timeout=10_000
    )
    expect(box).to_have_value("")
    assert _until(page, lambda: len(statuses) == 3)
    assert statuses == [201, 201, 201]  # none taken for a duplicate
    assert _texts(stack, "in") == ["Hello", "my order number is 1234", "and a third"]


def test_a_fifth_tab_whose_stream_is_refused_still_shows_replies(stack, page):
    bot = stack.chatbot()
    url = f"{stack.server.base_url}/widget/demo/{bot['public_token']}"
    session = _widget_session(stack, page, bot["public_token"], "hi")
    tabs = [page]
    for _ in range(4):  # the server keeps 4 streams per session: the 5th tab is refused
        tab = page.context.new_page()
        tab.goto(url)
        _widget(tab).get_by_role("button", name="Open chat").click()
        expect(_widget(tab).locator(".msg.in")).to_have_text(["hi"])
        tabs.append(tab)
    tabs[-1].wait_for_timeout(1500)
    stack.reply(session["conversation_id"], "An agent answers")
    for tab in tabs:
        expect(_widget(tab).locator(".msg.out")).to_have_text(["An agent answers"],
                                                              timeout=10_000)  # fmt: skip
    expect(_widget(tabs[-1]).locator(".notice")).to_have_count(0)


def test_a_deleted_chatbot_ends_the_chat_instead_of_reconnecting_forever(stack, page):
    bot = stack.chatbot()
    deleted: list[bool] = []
    attempts: list[int] = []

    def cut(route: Route) -> None:
        # Until the chatbot is deleted, every stream ends at once (a flaky connection):
        # the widget has to connect again and again, and then meets the deletion.
        if deleted:
            route.continue_()
        else:
            route.fulfill(status=200, content_type="text/event-stream", body="retry: 300\n\n")

    page.route("**/stream*", cut)
    page.on("response", lambda r: attempts.append(r.status)
            if r.url.split("?")[0].endswith("/stream") else None)  # fmt: skip
    _widget_session(stack, page, bot["public_token"], "hi")
    widget = _widget(page)
    assert stack.api.delete(f"/api/chatbots/{bot['id']}").status_code == 204
    deleted.append(True)
    expect(widget.locator(".notice").first).to_have_text("This chat has ended.", timeout=10_000)
    expect(widget.locator(".notice")).to_have_text(
        ["This chat has ended.", "This chat is not available."]
    )  # no "Reconnecting…" left behind
    expect(widget.get_by_role("textbox", name="Your message")).to_be_hidden()
    assert 404 in attempts
    assert page.evaluate(f"localStorage.getItem('noclash:{bot['public_token']}:session')") is None
    seen = len(attempts)
    page.wait_for_timeout(4000)
    assert len(attempts) == seen  # and it stops asking


def test_a_second_tab_follows_a_conversation_started_while_its_panel_was_hidden(stack, page):
    bot = stack.chatbot()
    url = f"{stack.server.base_url}/widget/demo/{bot['public_token']}"
    other = page.context.new_page()
    other.goto(url)
    page.goto(url)
    _widget(other).get_by_role("button", name="Open chat").click()
    expect(_widget(other).get_by_role("button", name="Start a conversation")).to_be_visible()
    _widget(other).get_by_role("button", name="Close chat").first.click()
    widget = _start(page, url)
    _say(widget, "from the first tab")
    expect(widget.locator(".msg.in")).to_have_text(["from the first tab"])
    other.bring_to_front()
    _widget(other).get_by_role("button", name="Open chat").click()
    expect(_widget(other).locator(".msg.in")).to_have_text(["from the first tab"])
    expect(_widget(other).get_by_role("button", name="Start a conversation")).to_have_count(0)
    assert _count(stack, sessions) == 1
