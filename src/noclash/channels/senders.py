"""The outbound adapter of each sending channel, configured from the settings."""

from __future__ import annotations

from noclash.channels.meta import MetaSender
from noclash.channels.sending import Sender
from noclash.channels.telegram import TelegramSender
from noclash.config import Settings
from noclash.db.tables import Channel


def senders(settings: Settings) -> dict[str, Sender]:
    """Messenger and Instagram through the Graph API, Telegram through the Bot API, at the
    URLs the settings name (the platforms' own by default, loopback servers in tests)."""
    graph = settings.meta_graph_url.rstrip("/")
    wait = settings.meta_rate_limit_seconds
    return {
        Channel.MESSENGER: MetaSender(Channel.MESSENGER, graph, wait),
        Channel.INSTAGRAM: MetaSender(Channel.INSTAGRAM, graph, wait),
        Channel.TELEGRAM: TelegramSender(settings.telegram_api_url.rstrip("/")),
    }


__all__ = ["senders"]
