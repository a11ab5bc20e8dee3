"""The widget is not a platform adapter: its rules live in :mod:`noclash.chat.sessions`.

Only :data:`MAX_CLIENT_MESSAGE_ID_LENGTH` is re-exported here, for ``noclash.api`` which
still imports it from this module. Delete this module (and the import-linter exception
``noclash.channels.widget -> noclash.chat.sessions`` in pyproject.toml) once api imports it
from :mod:`noclash.chat.sessions`.
"""

from __future__ import annotations

from noclash.chat.sessions import MAX_CLIENT_MESSAGE_ID_LENGTH

__all__ = ["MAX_CLIENT_MESSAGE_ID_LENGTH"]
