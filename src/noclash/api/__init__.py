"""The HTTP API: a thin front over :mod:`noclash.chat`."""
