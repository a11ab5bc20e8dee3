"""The pages people use: the embeddable widget and the operator inbox, as package data.

Nothing here is built: ``static/`` holds plain JavaScript and CSS, ``templates/`` the two
HTML pages (Jinja2). :mod:`noclash.api.routes.pages` serves them from the same app as the
API. See docs/pages.md.
"""

from __future__ import annotations

from pathlib import Path

HERE = Path(__file__).parent
STATIC = HERE / "static"
TEMPLATES = HERE / "templates"

__all__ = ["STATIC", "TEMPLATES"]
