"""The API's routes, one module per area; each is a thin layer over the core API."""

from __future__ import annotations

from typing import Any

from rap.server.schemas import ErrorBody

ERRORS: dict[int | str, dict[str, Any]] = {
    status: {"model": ErrorBody, "description": description}
    for status, description in {
        400: "bad input: a bad name, an empty question, malformed JSON; or a Host the service does not answer to",
        401: "no API key, or an unknown or revoked one",
        403: "a write from another site's web page (see cors_origins)",
        404: "no such concept or image (among this user's)",
        409: "a concept of that name exists",
        413: "an upload or a text is larger than the service accepts",
        422: "a missing or malformed field, or not a usable image",
        429: "too many requests from this key, or too many wrong keys from this address; see Retry-After",
        504: "the request ran past the service's deadline",
    }.items()
}
"""The error answers every ``/v1/`` route may give, all with the same body."""

BUSY: dict[int | str, dict[str, Any]] = {
    503: {"model": ErrorBody, "description": "the generation queue is full; see Retry-After"},
    502: {"model": ErrorBody, "description": "the model server failed"},
}
"""The extra answers of routes that generate."""
