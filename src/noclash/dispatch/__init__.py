"""Dispatchers: the outbound half of noclash (see :mod:`noclash.dispatch.dispatcher`).

``noclash serve`` runs one in every process unless ``NOCLASH_DISPATCHER=off``;
``noclash worker`` runs one alone, for deployments that scale senders apart from the API.
"""

from noclash.dispatch.dispatcher import Dispatcher

__all__ = ["Dispatcher"]
