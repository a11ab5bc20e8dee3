"""The screenshots of the widget and the inbox in docs/, taken by the suite's own machinery.

    make screenshots            # or: python -m tests.screenshots docs/screenshots

A throwaway SQLite database, the real app, a real dispatcher and the loopback Telegram
(tests/support/outbound.py); a customer writes on Telegram and through the widget, an
agent answers, one reply fails at the platform. Then Debian's chromium (the same launch
as the browser tests) takes the pictures.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

from playwright.sync_api import sync_playwright

from noclash.db.migrate import upgrade
from tests.support.browser import ARGS, chromium_path
from tests.support.outbound import outbound_stack
from tests.support.platforms import TELEGRAM_BLOCKED, wait_for


def take(target: Path) -> list[Path]:
    target.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        url = f"sqlite:///{tmp}/screenshots.db"
        upgrade(url)
        with outbound_stack(url) as stack, sync_playwright() as playwright:
            bot = stack.chatbot(name="Acme Support")
            connection, _ = stack.telegram_connection(bot["id"])
            ada = stack.telegram_customer(connection, 5550101, "Hi! Where is my parcel?", 1)
            stack.telegram_customer(connection, 5550102, "Can I change my address?", 2)
            sent = stack.reply(ada["id"], "It left our warehouse this morning.").json()
            stack.wait_delivery(ada["id"], sent["id"], "sent")
            stack.telegram.fail_next(1, *TELEGRAM_BLOCKED)
            failed = stack.reply(ada["id"], "Tracking number: 1Z999AA10123456784").json()
            stack.wait_delivery(ada["id"], failed["id"], "failed")

            browser = playwright.chromium.launch(executable_path=chromium_path(), args=ARGS)
            page = browser.new_page(viewport={"width": 1100, "height": 640})
            page.goto(f"{stack.server.base_url}/inbox/{bot['id']}/{ada['slug']}")
            page.get_by_label("API token").fill(stack.token)
            page.get_by_label("API token").press("Enter")
            page.locator("#messages .delivery.failed").wait_for()
            page.get_by_label("Reply").fill("Sorry, one more try:")
            inbox = target / "inbox.png"
            page.screenshot(path=str(inbox))

            widget_page = browser.new_page(viewport={"width": 760, "height": 620})
            widget_page.goto(f"{stack.server.base_url}/widget/demo/{bot['public_token']}")
            widget = widget_page.locator("[data-noclash-widget]")
            widget.get_by_role("button", name="Open chat").click()
            widget.get_by_role("button", name="Start a conversation").click()
            box = widget.get_by_role("textbox", name="Your message")
            box.fill("Do you ship to Norway?")
            box.press("Enter")
            widget.locator(".msg.in").wait_for()
            session = widget_page.evaluate(
                f"JSON.parse(localStorage.getItem('noclash:{bot['public_token']}:session'))"
            )
            stack.reply(session["conversation_id"], "We do! Delivery takes 3 to 5 days.")
            assert wait_for(lambda: widget.locator(".msg.out").count() == 1, timeout=10)
            shot = target / "widget.png"
            widget_page.screenshot(path=str(shot))
            browser.close()
    return [inbox, shot]


def main() -> None:
    target = Path(sys.argv[1] if len(sys.argv) > 1 else "docs/screenshots")
    for path in take(target):
        print(path)


if __name__ == "__main__":
    main()
