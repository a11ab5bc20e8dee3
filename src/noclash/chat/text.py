"""Character classes that must mean the same in every regex dialect noclash's rules meet.

Why: a rule on text is checked in Python (``str.strip``, ``re``), by pydantic (Rust regexes)
and, once published in the OpenAPI document, by every client's JSON Schema validator
(ECMA-262 regexes). The three disagree on ``\\s``: Python counts ``\\x1c``-``\\x1f`` and
``\\x85`` as whitespace, ECMA does not but counts the BOM (``\\ufeff``), Rust differs again.
A pattern written with :data:`WHITESPACE` instead of ``\\s`` accepts the same strings in
all three, so the document refuses exactly what noclash refuses.
"""

from __future__ import annotations

# Exactly the characters str.isspace() is true for (what str.strip() removes), as a
# character-class body: every one of them is escaped the same way in the three dialects.
WHITESPACE = r"\t\n\v\f\r \x1c-\x1f\x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000"

__all__ = ["WHITESPACE"]
