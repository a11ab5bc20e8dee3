"""The pages: ``/widget.js``, ``/widget/demo/{public_token}``, ``/inbox`` and its assets.

Served by the API's own app from package data (:mod:`noclash.web`): no frontend toolchain
at install or run time. Every page sends a Content-Security-Policy that allows scripts
and styles from this origin only (no inline script or style anywhere), and answers
``frame-ancestors 'none'``. The inbox is one page: ``/inbox/{chatbot_id}/{slug}`` serves
the same document, and its script opens the conversation (following a former slug's 308
to the current address). These routes are not part of the API's OpenAPI document.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import FileResponse, HTMLResponse
from fastapi.templating import Jinja2Templates
from starlette.responses import Response

from noclash.api.work import read
from noclash.chat.chatbots import get_chatbot_by_public_token
from noclash.web import STATIC, TEMPLATES

router = APIRouter(include_in_schema=False)
templates = Jinja2Templates(directory=str(TEMPLATES))

STATIC_PATH = "/static"
CSP = "; ".join(
    (
        "default-src 'none'",
        "script-src 'self'",
        "style-src 'self'",
        "connect-src 'self'",
        "img-src 'self' data:",
        "base-uri 'none'",
        "form-action 'self'",
        "frame-ancestors 'none'",
    )
)
PAGE_HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",
}


def _page(request: Request, template: str, **context: Any) -> HTMLResponse:
    return templates.TemplateResponse(
        request,
        template,
        {"static": STATIC_PATH, **context},
        headers=PAGE_HEADERS,
    )


@router.get("/widget.js")
async def widget_js() -> Response:
    """The embeddable widget. Any site may load it (a script tag needs no CORS); what it
    may then ask the API is decided per chatbot (``allowed_origins``)."""
    return FileResponse(
        STATIC / "widget.js",
        media_type="text/javascript; charset=utf-8",
        headers={"Cache-Control": "public, max-age=300", "X-Content-Type-Options": "nosniff"},
    )


@router.get("/widget/demo/{public_token}")
async def widget_demo(request: Request, public_token: str) -> Response:
    """A page with the widget embedded for this chatbot (404 for an unknown token)."""
    chatbot = await read(request, _public_chatbot, public_token)
    origin = str(request.base_url).rstrip("/")
    return _page(request, "demo.html", name=chatbot.name, public_token=public_token, origin=origin)


def _public_chatbot(conn: Any, public_token: str) -> Any:
    return get_chatbot_by_public_token(conn, public_token)


@router.get("/inbox")
@router.get("/inbox/{chatbot_id}/{slug}")
async def inbox(request: Request) -> Response:
    """The operator inbox (sign in with an API token; it stays in this browser tab)."""
    return _page(request, "inbox.html")
