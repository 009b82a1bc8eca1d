"""Who is asking: the ``Authorization: Bearer <key>`` of every ``/v1/`` request, and their rate limit."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from rap.errors import Unauthorized
from rap.server.runtime import LOCAL, Runtime
from rap.server.users import User

bearer = HTTPBearer(auto_error=False, description="the key `rap users add NAME` printed")


def runtime(request: Request) -> Runtime:
    return request.app.state.runtime


def current_user(
    request: Request, credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)]
) -> User:
    """The user whose key the request carries (the local user under ``--no-auth``); spends one
    request of their rate limit. Wrong keys are counted per client address: past
    ``failed_signins``, that address is refused without its key being looked at."""
    rt = runtime(request)
    if rt.users is None:
        user = LOCAL
    else:
        address = request.client.host if request.client else "unknown"
        rt.signins.refuse_if_spent(address)
        if credentials is None or not credentials.credentials:
            raise Unauthorized("send your API key as 'Authorization: Bearer <key>'; 'rap users add NAME' makes one")
        found = rt.users.authenticate(credentials.credentials)
        if found is None:
            rt.signins.hit(address)
            raise Unauthorized("the API key is unknown or revoked")
        user = found
    rt.limiter.check(str(user.id))
    return user


CurrentUser = Annotated[User, Depends(current_user)]
RuntimeDep = Annotated[Runtime, Depends(runtime)]
