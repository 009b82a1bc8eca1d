"""``/v1/me``: whose key this is; a client checks its key with it."""

from __future__ import annotations

from fastapi import APIRouter

from rap.server.auth import CurrentUser
from rap.server.routes import ERRORS
from rap.server.schemas import UserOut

router = APIRouter(prefix="/v1", tags=["users"], responses=ERRORS)


@router.get("/me", response_model=UserOut, summary="The user this API key belongs to")
async def me(user: CurrentUser) -> dict:
    return {"user": user.name}
