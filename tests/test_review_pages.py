"""The pages against today's server behaviours, in a real Chromium (on SQLite alone).

The server changed: a reply longer than its platform carries is a 422 naming ``text``; a
retry that could only fail again is a 409 naming ``connection_id`` or ``access_token``; a
customer's message that wakes a snoozed conversation announces SNOOZED to OPEN; an empty
``allowed_origins`` takes the widget off every site. Each test is a way the pages got one
of them wrong, reproduced through the real pages, the real API, a real dispatcher and the
loopback platforms (the set-up of tests/test_pages_browser.py); nothing is mocked.
"""

from __future__ import annotations

import time

import pytest
from playwright.sync_api import expect

from tests import test_pages_browser as pages
from tests.support.browser import embed, other_site
from tests.support.platforms import TELEGRAM_BLOCKED
from tests.test_pages_browser import (
    _inbox_at,
    _reply,
    _say,
    _start,
    _telegram_customer,
    _until,
    _widget,
)

pytestmark = pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)

# The fixtures of tests/test_pages_browser.py, here by the same names.
browser, stack, page = pages.browser, pages.stack, pages.page


def _messenger_customer(stack, psid: str = "2400000000000001") -> dict:
    bot = stack.chatbot(name="Shop")
    stack.meta_connection(bot["id"])
    return stack.meta_customer("104871234567890", psid, "hello?", "m_first")


# -- the inbox: a reply longer than the platform carries -----------------------------------------


def test_a_reply_too_long_for_messenger_says_the_limit_and_keeps_the_text(stack, page):
    """Messenger carries 2000 characters: the 422 names ``text`` and the limit. The inbox
    shows that detail, keeps the draft, puts the focus back in the box marked invalid and
    described by the alert, and a shortened reply goes."""
    conversation = _messenger_customer(stack)
    _inbox_at(stack, page, conversation)
    expect(page.locator("#messages .message.in")).to_have_text(["hello?"])
    too_long = "x" * 2001
    box = page.get_by_label("Reply")
    box.fill(too_long)
    page.get_by_role("button", name="Send").click()
    alert = page.get_by_role("alert").filter(has_text="not sent")
    expect(alert).to_contain_text("longer than the 2000 a Messenger message carries")
    expect(box).to_have_value(too_long)
    expect(box).to_be_focused()
    expect(box).to_have_attribute("aria-invalid", "true")
    expect(box).to_have_attribute("aria-describedby", "thread-alert")
    expect(page.locator("#messages .message.out")).to_have_count(0)
    box.fill("x" * 2000)
    expect(box).not_to_have_attribute("aria-invalid", "true")
    page.get_by_role("button", name="Send").click()
    expect(page.locator("#messages .message.out .delivery")).to_have_text(["Sent"])
    expect(page.locator("#thread-alert")).to_be_hidden()


def test_a_telegram_reply_is_never_cut_by_the_reply_box(stack, page):
    """Telegram carries 4096 UTF-16 code units. The reply box had ``maxlength=4000``
    (UTF-16 units, the server's own limit counts characters): a pasted 2049-emoji reply
    (4098 units, 2049 characters) was silently cut to 2000 emoji and sent cut, so the
    customer got part of it and the agent never knew. The box keeps all of it and the
    server's 422 says why it cannot go."""
    _connection, conversation = _telegram_customer(stack)
    _inbox_at(stack, page, conversation)
    expect(page.locator("#messages .message.in")).to_have_text(["my parcel?"])
    too_long = "\U0001f600" * 2049
    box = page.get_by_label("Reply")
    box.focus()
    page.keyboard.insert_text(too_long)  # as a paste does: maxlength applies
    expect(box).to_have_value(too_long)
    box.press("Control+Enter")
    expect(page.locator("#thread-alert")).to_contain_text(
        "4098 UTF-16 code units, longer than the 4096 a Telegram message carries"
    )
    expect(box).to_have_value(too_long)
    expect(page.locator("#messages .message.out")).to_have_count(0)
    assert stack.telegram.delivered() == []


# -- the inbox: Retry that could only fail again ------------------------------------------------


def _a_failed_reply(stack, page, conversation: dict):
    """The inbox open at ``conversation`` with a reply the platform refused for good
    (Telegram 403); its delivery line."""
    stack.telegram.fail_next(1, *TELEGRAM_BLOCKED)
    _inbox_at(stack, page, conversation)
    _reply(page, "hello?")
    failed = page.locator("#messages .message.out .delivery")
    expect(failed).to_contain_text("Failed: Telegram error 403")
    return failed


def test_retry_of_a_reply_whose_connection_was_deleted_says_why(stack, page):
    """The 409 naming ``connection_id`` was swallowed: Retry looked like it did nothing.
    The inbox says why it cannot be sent again, and the focus stays on Retry."""
    connection, conversation = _telegram_customer(stack)
    failed = _a_failed_reply(stack, page, conversation)
    assert stack.api.delete(f"/api/connections/{connection['id']}").status_code == 204
    retry = failed.get_by_role("button", name="Retry")
    retry.focus()
    retry.press("Enter")
    alert = page.get_by_role("alert").filter(has_text="connection was deleted")
    expect(alert).to_be_visible()
    expect(failed.get_by_role("button", name="Retry")).to_be_focused()
    assert stack.telegram.delivered() == []


def test_retry_of_a_reply_without_an_access_token_says_why(stack, page):
    connection, conversation = _telegram_customer(stack)
    failed = _a_failed_reply(stack, page, conversation)
    cleared = stack.api.patch(f"/api/connections/{connection['id']}", json={"access_token": None})
    assert cleared.status_code == 200, cleared.text
    failed.get_by_role("button", name="Retry").click()
    expect(page.locator("#thread-alert")).to_contain_text("no access_token")


# -- the inbox: a snoozed conversation woken by its customer -------------------------------------


def test_a_customer_waking_a_snoozed_conversation_shows_it_open_live(stack, page):
    connection, conversation = _telegram_customer(stack)
    snoozed = stack.api.post(f"/api/conversations/{conversation['id']}/snooze", json={})
    assert snoozed.status_code == 200, snoozed.text
    _inbox_at(stack, page, conversation)
    expect(page.locator("#thread-status")).to_have_text("SNOOZED")
    expect(page.locator("[data-count=SNOOZED]")).to_have_text("1")
    expect(page.locator("#list a")).to_have_count(0)  # the Open tab
    stack.telegram_customer(connection, 5550001, "hello again", update_id=2)
    expect(page.locator("#messages .message.in")).to_have_text(["my parcel?", "hello again"])
    expect(page.locator("#thread-status")).to_have_text("OPEN")
    expect(page.get_by_role("button", name="Reopen")).to_be_hidden()
    expect(page.locator("[data-count=OPEN]")).to_have_text("1")
    expect(page.locator("[data-count=SNOOZED]")).to_have_text("0")
    expect(page.locator("#list a")).to_have_count(1)


# -- the widget: allowed_origins [] --------------------------------------------------------------


def test_an_empty_allowed_origins_takes_the_widget_off_a_site(stack, page):
    bot = stack.chatbot()
    stack.api.patch(f"/api/chatbots/{bot['id']}", json={"allowed_origins": []})
    with other_site(embed(stack.server.base_url, bot["public_token"])) as site:
        page.goto(site)
        widget = _widget(page)
        widget.get_by_role("button", name="Open chat").click()
        expect(widget.locator(".notice.error")).to_contain_text("not available on this site")
        expect(widget.get_by_role("button", name="Start a conversation")).to_have_count(0)


def test_emptying_allowed_origins_during_a_chat_ends_it_on_that_site(stack, page):
    """The owner empties the list while a visitor chats: the widget's stream, its reads
    and its sends are 403s (or refused preflights). It said "Reconnecting…" forever and
    offered a Retry that could never work; it says the chat is not available here."""
    bot = stack.chatbot()
    with other_site(embed(stack.server.base_url, bot["public_token"])) as site:
        widget = _start(page, site)
        _say(widget, "first")
        expect(widget.locator(".msg.in")).to_have_text(["first"])
        stack.api.patch(f"/api/chatbots/{bot['id']}", json={"allowed_origins": []})
        _say(widget, "second")
        expect(widget.locator(".notice.error")).to_contain_text("not available on this site")
        expect(widget.get_by_role("textbox", name="Your message")).to_be_hidden()
        expect(widget.locator(".msg.pending")).to_have_count(0)  # not left "sending"
        page.wait_for_timeout(3000)
        expect(widget.locator(".notice")).not_to_contain_text(["Reconnecting"])


# -- the inbox: a draft belongs to its conversation ----------------------------------------------


def test_a_draft_stays_with_its_conversation(stack, page):
    """A reply typed in one conversation stayed in the box when the agent opened another,
    where Ctrl+Enter sent it to the wrong customer; coming back, it was gone. Each
    conversation keeps its own draft."""
    connection, first = _telegram_customer(stack)
    second = stack.telegram_customer(connection, 5550002, "and mine?", update_id=2)
    _inbox_at(stack, page, first)
    expect(page.locator("#messages .message.in")).to_have_text(["my parcel?"])
    box = page.get_by_label("Reply")
    box.fill("Your parcel left Lyon today.")
    page.locator(f"#list a[data-id='{second['id']}']").click()
    expect(page.locator("#messages .message.in")).to_have_text(["and mine?"])
    expect(box).to_have_value("")
    box.press("Control+Enter")  # nothing to send here
    page.locator(f"#list a[data-id='{first['id']}']").click()
    expect(page.locator("#messages .message.in")).to_have_text(["my parcel?"])
    expect(box).to_have_value("Your parcel left Lyon today.")
    page.go_back()
    expect(page.locator("#messages .message.in")).to_have_text(["and mine?"])
    expect(box).to_have_value("")
    items = stack.api.get(f"/api/conversations/{second['id']}/messages").json()["items"]
    assert [m["direction"] for m in items] == ["in"]  # nothing was sent to the second


# -- the widget: a message longer than the server takes ------------------------------------------


def test_a_visitor_message_longer_than_the_server_takes_says_so_and_stays(stack, page):
    """The message box had ``maxLength=4000``: a longer paste was cut without a word and
    the cut text sent. Now the box keeps it all, the 422's detail is said (no Retry that
    the same refusal would answer again), and the text is back in the box."""
    bot = stack.chatbot()
    widget = _start(page, f"{stack.server.base_url}/widget/demo/{bot['public_token']}")
    box = widget.get_by_role("textbox", name="Your message")
    too_long = "y" * 4001
    box.focus()
    page.keyboard.insert_text(too_long)  # as a paste does: maxLength applies
    box.press("Enter")
    error = widget.locator(".notice.error")
    expect(error).to_contain_text("longer than 4000 characters")
    expect(error.get_by_role("button", name="Retry")).to_have_count(0)
    expect(box).to_have_value(too_long)
    expect(box).to_be_focused()
    expect(widget.locator(".msg.in")).to_have_count(0)


# -- the inbox: the list is a live region --------------------------------------------------------

COUNT_ADDED = """(() => { window.__added = 0;
  new MutationObserver((records) => { for (const r of records) window.__added +=
    [...r.addedNodes].filter((n) => n.nodeName === 'LI').length; })
    .observe(document.getElementById('list'), { childList: true }); })()"""


def test_new_messages_do_not_rebuild_the_conversation_list(stack, page):
    """The list (``aria-live="polite"``) was rebuilt on every event: each customer message
    had a screen reader read every conversation again, and a focused link in it was
    replaced (the focus fell to the page). Messages to the conversation on top change its
    line, nothing is added, and the focus stays on the link."""
    connection, _first = _telegram_customer(stack)
    stack.telegram_customer(connection, 5550002, "second customer", update_id=2)
    time.sleep(1.1)  # Telegram dates are in seconds: this one is the newest, on top
    top = stack.telegram_customer(connection, 5550003, "third customer", update_id=3)
    _inbox_at(stack, page, top)
    expect(page.locator("#list a")).to_have_count(3)
    expect(page.locator("#list a").first).to_have_attribute("data-id", top["id"])
    page.evaluate(COUNT_ADDED)
    reads: list[str] = []
    page.on("request", lambda r: reads.append(r.url) if "/api/conversations?" in r.url else None)
    page.locator(f"#list a[data-id='{top['id']}']").focus()
    for i in range(3):
        stack.telegram_customer(connection, 5550003, f"more {i}", update_id=10 + i)
    expect(page.locator("#messages .message.in")).to_have_count(4)
    assert _until(page, lambda: len(reads) >= 1)  # the list was read again
    page.wait_for_timeout(500)
    assert page.evaluate("window.__added") == 0
    expect(page.locator(f"#list a[data-id='{top['id']}']")).to_be_focused()
    expect(page.locator("#list a")).to_have_count(3)
