"""What a bot's answer can do to the sender: against real loopback servers.

A bot's server is not noclash's: it can answer with a body of any size, or trickle its
answer for as long as it likes. The sender reads only an excerpt of a refusal's body (it
goes into the delivery's ``last_error``), keeps the connection of a short answer for the
next event, and bounds the whole exchange, answer included, by the timeout.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

from noclash.channels.sending import Outcome
from noclash.channels.webhooks import EXCERPT_BYTES, EventPost, WebhookSender, client

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]
EVENT = {"id": "0193a7f0-0000-7000-8000-000000000001", "type": "message.created", "data": {}}


@asynccontextmanager
async def bot(handler: Handler) -> AsyncIterator[tuple[str, list[int]]]:
    """A bot on a loopback port; yields its URL and one entry per connection it accepted."""
    accepted: list[int] = []

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        accepted.append(1)
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = next(
                    int(line.split(b":", 1)[1])
                    for line in head.split(b"\r\n")
                    if line.lower().startswith(b"content-length:")
                )
                await reader.readexactly(length)
                await handler(reader, writer)
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}/hook", accepted
    finally:
        server.close()


def _answer(status: str, body: bytes) -> bytes:
    return b"HTTP/1.1 %s\r\nContent-Length: %d\r\n\r\n%s" % (status.encode(), len(body), body)


def test_a_refusal_keeps_an_excerpt_of_a_large_body_and_a_short_answer_its_connection():
    big = b"no " * 2_000_000  # 6 MB: read no further than the excerpt

    async def refuse_then_accept(_reader, writer) -> None:
        calls.append(1)
        writer.write(_answer("500 Internal Server Error", big) if len(calls) == 1 else
                     _answer("200 OK", b'{"ok": true}'))  # fmt: skip
        await writer.drain()

    calls: list[int] = []

    async def main() -> None:
        sender = WebhookSender(timeout=5.0)
        async with bot(refuse_then_accept) as (url, accepted):
            async with client(timeout=5.0, max_connections=1, allow_private=True) as http:
                refused = await sender.send(http, EventPost(url, "whsec_x", EVENT))
                assert refused.outcome == Outcome.RETRY
                assert refused.error.startswith("the webhook answered 500: no no")
                assert len(refused.error) < EXCERPT_BYTES + 40
                for _ in range(3):
                    sent = await sender.send(http, EventPost(url, "whsec_x", EVENT))
                    assert sent.outcome == Outcome.SENT
            # The refusal's connection was dropped unread; the short answers shared one.
            assert len(accepted) == 2

    asyncio.run(main())


def test_a_bot_that_trickles_its_answer_holds_the_send_no_longer_than_the_timeout():
    async def trickle(_reader, writer) -> None:
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n")
        for _ in range(1000):  # a byte every 50 ms: each read is quick, the whole is not
            writer.write(b"x")
            await writer.drain()
            await asyncio.sleep(0.05)

    async def main() -> None:
        sender = WebhookSender(timeout=1.0)
        async with (
            bot(trickle) as (url, _accepted),
            client(timeout=1.0, max_connections=1, allow_private=True) as http,
        ):
            started = time.monotonic()
            result = await sender.send(http, EventPost(url, None, EVENT))
            took = time.monotonic() - started
        assert result.outcome == Outcome.RETRY
        assert result.error == "no answer within 1 s"
        assert 0.9 < took < 2.0

    asyncio.run(main())
