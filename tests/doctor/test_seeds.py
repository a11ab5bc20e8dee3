"""Every seed fixture end to end: doctor finds it, repair fixes it, nothing else changes."""

from __future__ import annotations

import pytest

from noclash.doctor import fixtures
from noclash.doctor.context import Options
from noclash.doctor.diagnose import diagnose
from noclash.doctor.intent import KeySpec
from noclash.doctor.repairs import repair
from tests.doctor.helpers import snapshot

# fixture -> (expected (check, table, columns) at error level, columns the repair may change)
EXPECTED = {
    "short-tokens": (
        {("weak-tokens", "chatbots", ("public_token",))},
        {"chatbots": {"public_token", "public_token_legacy"}},
    ),
    "closed-chat": (
        {("lifecycle-unique", "conversations", ("instagramConnectionId", "psid"))},
        {},
    ),
    "closed-chat-unguarded": (
        {("duplicate-keys", "support_conversations", ("page_connection_id", "psid"))},
        {"support_conversations": {"status"}},
    ),
    "null-session-ids": (
        {("null-keys", "chat_sessions", ("session_id",))},
        {"chat_sessions": {"session_id"}},
    ),
    "colliding-slugs": (
        {("duplicate-keys", "chat_threads", ("slug",))},
        {"chat_threads": {"slug"}},
    ),
    "sequence-behind": (
        {
            ("sequence-behind", "tickets", ("id",)),
            ("sequence-behind", "imports", ("id",)),
        },
        {},
    ),
}


# Keys no index declares (the seeds' own "fixes" dropped them): a person states them.
OPTIONS = {
    "closed-chat-unguarded": Options(
        keys=(KeySpec.parse("support_conversations.page_connection_id,psid"),)
    ),
    "colliding-slugs": Options(keys=(KeySpec.parse("chat_threads.slug"),)),
}


def _errors(report) -> set[tuple[str, str | None, tuple[str, ...]]]:
    return {(f.check, f.table, f.columns) for f in report.findings if f.severity == "error"}


@pytest.mark.parametrize("name", list(EXPECTED))
def test_seed_round_trip(name: str, empty_url: str) -> None:
    if name == "sequence-behind" and empty_url.startswith("sqlite"):
        pytest.skip("SQLite has no sequences: AUTOINCREMENT never hands out a taken rowid")
    expected, touched = EXPECTED[name]
    options = OPTIONS.get(name, Options())
    fixtures.build(empty_url, name)

    before = diagnose(empty_url, options)
    assert _errors(before) == expected
    assert before.exit_code == 1

    plan = repair(empty_url, options)
    assert not plan.applied and plan.actions
    assert snapshot(empty_url) == snapshot(empty_url)  # the dry run changed nothing
    data_before = snapshot(empty_url)

    result = repair(empty_url, options, apply=True)
    assert result.applied
    after = diagnose(empty_url, options)
    assert after.findings == [], [f.message for f in after.findings]
    assert after.exit_code == 0

    data_after = snapshot(empty_url)
    assert set(data_after) == set(data_before)
    for table, cols in data_before.items():
        assert data_after[table]["__rows__"] == cols["__rows__"], table
        for col, checksum in cols.items():
            if col not in touched.get(table, set()):
                assert data_after[table][col] == checksum, f"{table}.{col} changed"

    again = repair(empty_url, options, apply=True)
    assert again.actions == []
    assert snapshot(empty_url) == data_after


def test_unguarded_lifecycle_policy(empty_url: str) -> None:
    """Active duplicates: the latest activity stays active, the others close; none deleted."""
    import sqlalchemy as sa

    from noclash.config import normalise_database_url

    fixtures.build(empty_url, "closed-chat-unguarded")
    repair(empty_url, OPTIONS["closed-chat-unguarded"], apply=True)
    engine = sa.create_engine(normalise_database_url(empty_url))
    with engine.connect() as conn:
        status = dict(conn.exec_driver_sql("SELECT id, status FROM support_conversations").all())
        per_conv = dict(
            conn.exec_driver_sql(
                "SELECT conversation_id, count(*) FROM support_messages GROUP BY 1"
            ).all()
        )
    engine.dispose()
    # psid 2001 on page1: 3 (latest) stays OPEN, 2 closes; page2/2003: 8 (latest) stays.
    assert status == {
        1: "CLOSED",
        2: "CLOSED",
        3: "OPEN",
        4: "CLOSED",
        5: "CLOSED",
        6: "OPEN",
        7: "OPEN",
        8: "SNOOZED",
        9: "CLOSED",
    }
    assert per_conv == {i: 3 for i in range(1, 10)}
