"""What keeps other web pages out: the ``Host`` a request names, and where a write comes from.

A page on another site cannot read the service's answers (the browser's
same-origin policy), but it can still reach it in two ways. By DNS rebinding:
its own name is made to resolve to the service's address, so the browser
takes the service for that page's site and lets the page read it; the request
then names the page's host in ``Host``. And by writes: a browser sends a form
(a multipart upload, a DELETE by fetch with no preflight, ...) to any address
a page chooses, with the page's ``Origin``. Both hold with or without API keys
(a key kept in a page's storage is sent by that page only, but ``--no-auth``
has no key at all).

So every request must name a host the service answers to: the address it was
reached at (the listening socket's), ``localhost`` on loopback, or one of
``allowed_hosts``. And a write (anything but GET, HEAD, OPTIONS) must come
from the service's own pages or one of ``cors_origins``, by its ``Origin``,
else by ``Sec-Fetch-Site``, else by ``Referer``; a request with none of them
is not a browser's and passes (curl, SDKs, the CLI).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Awaitable, Callable, Sequence
from typing import Any
from urllib.parse import urlsplit

from starlette.datastructures import Headers

from rap.errors import CrossSiteRequest, InvalidHost, RapError
from rap.server.errors import rap_error_response
from rap.server.metrics import ASGIApp, Scope

SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
LOOPBACK_NAMES = frozenset({"localhost", "127.0.0.1", "::1"})
DEFAULT_PORTS = {"http": 80, "https": 443, "ws": 80, "wss": 443}


def _split(netloc: str, scheme: str) -> tuple[str, int | None]:
    """``host[:port]`` (IPv6 in brackets) as a lower-case host name and a port, the scheme's default filled in."""
    try:
        parts = urlsplit(f"//{netloc}")
        return (parts.hostname or "").lower(), parts.port or DEFAULT_PORTS.get(scheme)
    except ValueError:
        return "", None


def _same_address(name: str, address: str) -> bool:
    try:
        return ipaddress.ip_address(name) == ipaddress.ip_address(address)
    except ValueError:
        return name == address.lower()


def _loopback(address: str) -> bool:
    try:
        return ipaddress.ip_address(address).is_loopback
    except ValueError:
        return address.lower() == "localhost"


class OriginGuard:
    """Refuses a ``Host`` the service does not answer to (400) and a write from another site (403)."""

    def __init__(self, app: ASGIApp, allowed_hosts: Sequence[str], cors_origins: Sequence[str]) -> None:
        self.app = app
        self.any_host = "*" in allowed_hosts
        self.allowed_hosts = {host.lower().strip("[]") for host in allowed_hosts}
        self.origins = {origin.rstrip("/").lower() for origin in cors_origins}

    def host_allowed(self, host: str, scope: Scope) -> bool:
        name, _ = _split(host, scope.get("scheme", "http"))
        if not name:
            return False
        if self.any_host or name in self.allowed_hosts:
            return True
        server = scope.get("server")
        listening = str(server[0]) if server else ""
        if listening and _same_address(name, listening):
            return True
        return _loopback(listening) and name in LOOPBACK_NAMES

    def _own(self, url: str, host: str, scope: Scope) -> bool:
        """Whether ``url`` (an origin or a referrer) is the service's own site, or an allowed origin."""
        parts = urlsplit(url)
        if f"{parts.scheme}://{parts.netloc}".lower() in self.origins:
            return True
        # the scheme is not compared: behind a TLS proxy the service sees http for an https page
        return bool(parts.netloc) and _split(parts.netloc, parts.scheme) == _split(host, parts.scheme)

    def write_allowed(self, headers: Headers, scope: Scope) -> bool:
        host = headers.get("host", "")
        if "origin" in headers:
            return self._own(headers["origin"], host, scope)
        if "sec-fetch-site" in headers:
            return headers["sec-fetch-site"] in ("same-origin", "none")
        if "referer" in headers:
            return self._own(headers["referer"], host, scope)
        return True

    def _refusal(self, scope: Scope, headers: Headers) -> RapError | None:
        host = headers.get("host", "")
        if not self.host_allowed(host, scope):
            return InvalidHost(
                f"this service does not answer to the host {host!r}; its operator can add it to allowed_hosts (RAP_ALLOWED_HOSTS)"
            )
        if scope["method"] not in SAFE_METHODS and not self.write_allowed(headers, scope):
            return CrossSiteRequest(
                "a write from another site's page is refused; its operator can allow that origin in cors_origins (RAP_CORS_ORIGINS)"
            )
        return None

    async def __call__(self, scope: Scope, receive: Callable[[], Awaitable[Any]], send: Callable[[Any], Awaitable[None]]) -> None:
        if scope["type"] == "http":
            refusal = self._refusal(scope, Headers(scope=scope))
            if refusal is not None:
                await rap_error_response(refusal)(scope, receive, send)
                return
        await self.app(scope, receive, send)
