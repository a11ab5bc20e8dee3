"""Four dispatchers on one PostgreSQL send 5,000 deliveries, each exactly once.

Four ``noclash worker`` processes (real processes, their own pools) claim from one
database with ``FOR UPDATE SKIP LOCKED``; the loopback Telegram counts what it received.
Every delivery ends ``sent``, the platform received each text once, each customer's in
order, and the work was shared (every worker sent some).
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections import Counter
from pathlib import Path

import pytest
import sqlalchemy as sa

from noclash.db.engine import create_engine
from noclash.db.tables import DeliveryStatus, deliveries
from tests.support.platforms import LoopbackTelegram, running, wait_for
from tests.support.serve import NOCLASH
from tests.test_outbound_crash import _queue_many

TOTAL, CUSTOMERS, WORKERS = 5000, 500, 4


@pytest.mark.slow
def test_four_dispatchers_send_each_delivery_once(database_url, tmp_path: Path):
    if not database_url.startswith("postgresql"):
        pytest.skip("several dispatchers on one database is the PostgreSQL deployment")
    with running(LoopbackTelegram()) as telegram:
        _queue_many(database_url, telegram, customers=CUSTOMERS, per_customer=TOTAL // CUSTOMERS)
        env = os.environ | {
            "NOCLASH_DATABASE_URL": database_url,
            "NOCLASH_TELEGRAM_API_URL": telegram.api_url,
            "NOCLASH_DISPATCHER_CONCURRENCY": "32",
            "NOCLASH_DISPATCHER_POLL_SECONDS": "0.1",
        }
        logs = [tmp_path / f"worker-{i}.err" for i in range(WORKERS)]
        procs = []
        for log in logs:
            with log.open("w") as err:
                procs.append(
                    subprocess.Popen([*NOCLASH, "worker"], env=env, stdout=err, stderr=err)
                )
        try:
            engine = create_engine(database_url)
            try:

                def all_sent() -> bool:
                    with engine.connect() as conn:
                        sent = conn.execute(
                            sa.select(sa.func.count())
                            .select_from(deliveries)
                            .where(deliveries.c.status == DeliveryStatus.SENT)
                        ).scalar()
                    return sent == TOTAL

                started = time.monotonic()
                assert wait_for(all_sent, timeout=180, every=0.5)
                took = time.monotonic() - started
            finally:
                engine.dispose()
        finally:
            for proc in procs:
                proc.send_signal(signal.SIGTERM)
            for proc in procs:
                proc.wait(timeout=30)
        texts = Counter(m["text"] for m in telegram.delivered())
    print(f"\n{TOTAL} deliveries by {WORKERS} workers in {took:.1f} s")
    assert len(texts) == TOTAL and set(texts.values()) == {1}, "each sent exactly once"
    assert all(p.returncode == 0 for p in procs), [log.read_text()[-2000:] for log in logs]
    shares = [log.read_text() for log in logs]
    assert all("stopped:" in text for text in shares), shares
    sent_by = [int(text.rsplit("stopped: ", 1)[1].split()[0]) for text in shares]
    assert sum(sent_by) == TOTAL and all(n > 0 for n in sent_by), sent_by
