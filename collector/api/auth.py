"""Bearer-token authentication for /v1: every call, constant-time comparison, several valid
tokens at once so they can be rotated."""

from __future__ import annotations

import hmac
from typing import Annotated

from fastapi import Depends, HTTPException, Request, status
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

_bearer = HTTPBearer(auto_error=False, description="A token from COLLECTOR_API_TOKENS.")


def token_matches(presented: str, accepted: list[bytes]) -> bool:
    """True when ``presented`` equals one of ``accepted``, in time that does not depend on
    which one or on how many leading characters agree."""
    candidate = presented.encode()
    found = False
    for token in accepted:
        # No early exit: every configured token is compared every time.
        found |= hmac.compare_digest(candidate, token)
    return found


def authorized(header: str | None, accepted: list[bytes]) -> bool:
    """True when an Authorization header carries an accepted bearer token."""
    if header is None:
        return False
    scheme, _, token = header.partition(" ")
    return scheme.lower() == "bearer" and bool(token) and token_matches(token.strip(), accepted)


async def require_token(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> None:
    """Reject the request with 401 unless it carries an accepted bearer token."""
    accepted: list[bytes] = request.app.state.api_tokens
    if credentials is None or not token_matches(credentials.credentials, accepted):
        raise HTTPException(
            status_code=status.HTTP_401_UNAUTHORIZED,
            detail="missing or invalid bearer token",
            headers={"WWW-Authenticate": "Bearer"},
        )
