"""Security headers on every response the service gives: the page, its scripts, and the API.

The page holds an API key (in the tab's ``sessionStorage``), so nothing but the
page's own code may run in it: the Content-Security-Policy allows scripts,
styles, images and connections from the page's own origin only (images also
from ``blob:`` and ``data:``, which is how photos and thumbnails are shown),
and no inline script. ``frame-ancestors 'none'`` keeps other sites from
framing it; ``no-referrer`` keeps its address out of other servers' logs.
FastAPI's own ``/docs`` and ``/redoc`` pages load their scripts from a CDN
with an inline script, so they get every header but the policy.
"""

from __future__ import annotations

from starlette.types import ASGIApp, Message, Receive, Scope, Send

CSP = "; ".join(
    [
        "default-src 'self'",
        "script-src 'self'",
        "style-src 'self'",
        "img-src 'self' blob: data:",
        "connect-src 'self'",
        "object-src 'none'",
        "base-uri 'none'",
        "form-action 'self'",
        "frame-ancestors 'none'",
    ]
)
POLICY = (b"content-security-policy", CSP.encode())
HEADERS = [
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
    (b"x-frame-options", b"DENY"),
]


class SecurityHeadersMiddleware:
    """Adds :data:`POLICY` and :data:`HEADERS` to every HTTP response (pure ASGI, so streamed answers stay streamed)."""

    def __init__(self, app: ASGIApp, unguarded: tuple[str, ...] = ("/docs", "/redoc")) -> None:
        self.app = app
        self.unguarded = unguarded

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)

        extra = HEADERS if scope["path"].startswith(self.unguarded) else [POLICY, *HEADERS]

        async def with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                present = {name.lower() for name, _ in message.get("headers", [])}
                message["headers"] = [*message.get("headers", []), *(h for h in extra if h[0] not in present)]
            await send(message)

        await self.app(scope, receive, with_headers)
