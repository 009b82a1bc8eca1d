"""The app factory: one FastAPI app over one :class:`~rap.server.runtime.Runtime`."""

from __future__ import annotations

import logging
import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware
from fastapi.staticfiles import StaticFiles

from rap import __version__
from rap.server import errors
from rap.server.access_log import REDACT_QUERIES
from rap.server.guard import OriginGuard
from rap.server.headers import SecurityHeadersMiddleware
from rap.server.limits import BodyLimitMiddleware, TimeoutMiddleware
from rap.server.metrics import MetricsMiddleware
from rap.server.schema_limits import limited_openapi
from rap.server.routes import account, assistant, chat, concepts, health, options, photos
from rap.server.runtime import Runtime
from rap.settings import Settings, resolve

STATIC = Path(__file__).parent / "static"
DESCRIPTION = """rap's HTTP API: each user's concepts, retrieval and personalized answers.

Every `/v1/` route needs `Authorization: Bearer <key>` (from `rap users add NAME`); a key is
never taken from the query string. A browser page may write only from the service's own site
(or an origin the operator allowed); the `Host` must be one the service answers to.
Errors are `{"error": {"code", "message"}}` with a 4xx status for bad input."""


def create_app(settings: Settings | None = None, *, auth: bool = True) -> FastAPI:
    """The API with the given settings (default: those in force); ``auth=False`` serves the one local user."""
    settings = settings or resolve().settings
    runtime = Runtime(settings, auth=auth)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        # Models load in the background: /healthz answers at once, /readyz once they are in.
        threading.Thread(target=runtime.load, name="rap-load-models", daemon=True).start()
        yield
        runtime.close()

    app = FastAPI(
        title="rap",
        version=__version__,
        description=DESCRIPTION,
        lifespan=lifespan,
        # a text field may hold max_text_chars characters of up to 4 bytes each
        form_limits={"max_files": settings.max_images_per_request, "max_part_size": settings.max_text_chars * 4},
    )
    app.state.runtime = runtime
    app.openapi = limited_openapi(app, settings)  # type: ignore[method-assign]
    errors.install(app)
    for module in (account, concepts, photos, assistant, chat, health, options):
        app.include_router(module.router)
    app.add_middleware(TimeoutMiddleware, seconds=settings.request_timeout)
    app.add_middleware(BodyLimitMiddleware, settings=settings)
    if settings.cors_origins:
        app.add_middleware(
            CORSMiddleware, allow_origins=settings.cors_origins, allow_methods=["*"],
            allow_headers=["Authorization", "Content-Type"], expose_headers=["Retry-After", "X-Request-ID"],
        )  # fmt: skip
    app.add_middleware(OriginGuard, allowed_hosts=settings.allowed_hosts, cors_origins=settings.cors_origins)
    app.add_middleware(MetricsMiddleware, metrics=runtime.metrics)
    app.add_middleware(SecurityHeadersMiddleware)
    logging.getLogger("uvicorn.access").addFilter(REDACT_QUERIES)
    if STATIC.is_dir():
        app.mount("/", StaticFiles(directory=STATIC, html=True), name="static")
    return app
