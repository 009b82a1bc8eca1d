"""``OPTIONS`` on any route: which methods it takes, in ``Allow`` (a CORS preflight, when origins
are allowed, is answered before it gets here)."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response
from starlette.exceptions import HTTPException
from starlette.routing import Match, Mount

router = APIRouter(include_in_schema=False)


METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE")


@router.options("/{path:path}")
async def allowed_methods(request: Request) -> Response:
    routes = [route for route in request.app.router.routes if not isinstance(route, Mount)]  # the pages' folder takes anything
    allowed = [
        method for method in METHODS
        if any(route.matches(dict(request.scope) | {"method": method})[0] == Match.FULL for route in routes)
    ]  # fmt: skip
    if not allowed:
        raise HTTPException(404, "Not Found")
    return Response(status_code=204, headers={"Allow": ", ".join(sorted({*allowed, "OPTIONS"}))})
