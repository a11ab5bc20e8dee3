"""``noclash serve`` sends replies by default; ``NOCLASH_DISPATCHER=off`` leaves them queued.

A real ``serve`` process on a real database, a reply queued through the domain functions
and the loopback Telegram: the default process sends it, an ``off`` one does not (until a
``noclash worker`` runs).
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

from tests.support.platforms import LoopbackTelegram, running, wait_for
from tests.support.serve import NOCLASH, serving
from tests.support.server import free_port
from tests.test_outbound_crash import _queue_many


def test_serve_sends_by_default_and_not_when_off(fresh_sqlite_url, tmp_path: Path):
    from noclash.db.migrate import upgrade

    upgrade(fresh_sqlite_url)
    with running(LoopbackTelegram()) as telegram:
        _queue_many(fresh_sqlite_url, telegram, customers=1, per_customer=1)
        env = {"NOCLASH_TELEGRAM_API_URL": telegram.api_url,
               "NOCLASH_DISPATCHER_POLL_SECONDS": "0.1"}  # fmt: skip
        with serving(fresh_sqlite_url, tmp_path, env=env | {"NOCLASH_DISPATCHER": "off"}):
            time.sleep(1.5)
            assert telegram.delivered() == []
        default = {k: v for k, v in os.environ.items() if k != "NOCLASH_DISPATCHER"}
        proc = subprocess.Popen(
            [*NOCLASH, "serve", "--port", str(free_port())],
            env=default | env | {"NOCLASH_DATABASE_URL": fresh_sqlite_url},
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            assert wait_for(lambda: len(telegram.delivered()) == 1, timeout=20)
        finally:
            proc.send_signal(signal.SIGINT)
            proc.wait(timeout=30)
    assert [m["text"] for m in telegram.delivered()] == ["0/0"]
