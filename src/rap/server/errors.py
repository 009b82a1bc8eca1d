"""Every error becomes ``{"error": {"code", "message"}}`` with the right status, never a stack trace.

A :class:`~rap.errors.RapError` carries its HTTP status; its code is its class
name in snake case (``concept_not_found``). FastAPI's own validation errors
(a missing field, a malformed body) become 422 ``invalid_request`` with the
first problem in words. Anything else is a bug: logged with its traceback on
the server, answered with a bare 500 ``internal_error``.
"""

from __future__ import annotations

import logging
import re
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException

from rap.errors import NotReady, RapError

log = logging.getLogger(__name__)


def error_code(error: RapError) -> str:
    """``ConceptNotFound`` -> ``concept_not_found``."""
    return re.sub(r"(?<!^)(?=[A-Z])", "_", type(error).__name__).lower()


def error_body(code: str, message: str) -> dict[str, Any]:
    return {"error": {"code": code, "message": message}}


def rap_error_response(error: RapError) -> JSONResponse:
    headers = {}
    retry_after = getattr(error, "retry_after", None)
    if retry_after is not None:
        headers["Retry-After"] = str(int(retry_after))
    if error.http_status >= 500 and not isinstance(error, NotReady):  # "still loading" is expected, not a fault
        log.warning("%s: %s", type(error).__name__, error.message)
    return JSONResponse(error_body(error_code(error), error.message), error.http_status, headers=headers)


def _validation_message(exc: RequestValidationError) -> str:
    first = exc.errors()[0]
    where = ".".join(str(part) for part in first.get("loc", ()) if part != "body") or "request"
    return f"{where}: {first.get('msg', 'invalid')}"


def install(app: FastAPI) -> None:
    """Register the handlers that turn every exception into the JSON error body."""

    async def rap_error(_: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, RapError)
        return rap_error_response(exc)

    async def invalid(_: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, RequestValidationError)
        return JSONResponse(error_body("invalid_request", _validation_message(exc)), 422)

    async def http_error(_: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, HTTPException)
        code = {400: "invalid_input", 401: "unauthorized", 404: "not_found", 405: "method_not_allowed", 413: "payload_too_large"}.get(
            exc.status_code, "http_error"
        )
        return JSONResponse(error_body(code, str(exc.detail)), exc.status_code, headers=getattr(exc, "headers", None))

    async def bug(_: Request, exc: Exception) -> JSONResponse:
        log.error("unexpected error", exc_info=exc)
        return JSONResponse(error_body("internal_error", "the server failed; the error is in its log"), 500)

    app.add_exception_handler(RapError, rap_error)
    app.add_exception_handler(RequestValidationError, invalid)
    app.add_exception_handler(HTTPException, http_error)
    app.add_exception_handler(Exception, bug)
