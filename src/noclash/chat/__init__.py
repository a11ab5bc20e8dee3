"""Domain operations: users, chatbots, connections, conversations, messages, sessions.

Functions here take a SQLAlchemy connection (inside the caller's transaction) or an engine
(when they own the transaction), use the primitives in :mod:`noclash.unique` and return
plain rows or dataclasses. They know nothing of HTTP.
"""
