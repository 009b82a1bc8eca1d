"""``rap serve``: rap as an HTTP API for many users, each with their own concepts.

A thin layer over the same core API the command line uses (the ``serve``
extra: FastAPI, uvicorn). :func:`create_app` builds the app.
"""

from __future__ import annotations

from rap.server.app import create_app

__all__ = ["create_app"]
