"""The app factory: one FastAPI app over one :class:`~rap.server.runtime.Runtime`."""

from __future__ import annotations

import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import FastAPI
from fastapi.staticfiles import StaticFiles

from rap import __version__
from rap.server import errors
from rap.server.headers import SecurityHeadersMiddleware
from rap.server.limits import BodyLimitMiddleware, TimeoutMiddleware
from rap.server.metrics import MetricsMiddleware
from rap.server.routes import account, assistant, chat, concepts, health
from rap.server.runtime import Runtime
from rap.settings import Settings, resolve

STATIC = Path(__file__).parent / "static"
DESCRIPTION = """rap's HTTP API: each user's concepts, retrieval and personalized answers.

Every `/v1/` route needs `Authorization: Bearer <key>` (from `rap users add NAME`).
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
    errors.install(app)
    for module in (account, concepts, assistant, chat, health):
        app.include_router(module.router)
    app.add_middleware(TimeoutMiddleware, seconds=settings.request_timeout)
    # every image at its limit, plus room for the form's text fields
    app.add_middleware(BodyLimitMiddleware, max_bytes=settings.max_upload_bytes * settings.max_images_per_request + 2**20)
    app.add_middleware(MetricsMiddleware, metrics=runtime.metrics)
    app.add_middleware(SecurityHeadersMiddleware)
    if STATIC.is_dir():
        app.mount("/", StaticFiles(directory=STATIC, html=True), name="static")
    return app
