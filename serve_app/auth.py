"""API keys. With keys, every /v1 route needs one and each job belongs to the key that
created it. Without keys the API is open, which serve_app/exposure.py allows only on a
loopback bind (or by the operator's explicit allow_unauthenticated)."""

from __future__ import annotations

import hashlib
import hmac
from typing import Annotated

from fastapi import Depends, Header

from serve_app.errors import ApiError
from serve_app.services.context import Services, get_services


def owner_id(key: str) -> str:
    """A stable, non-secret id for a key (stored with jobs instead of the key itself)."""
    return hashlib.sha256(key.encode()).hexdigest()[:24]


def _presented_key(authorization: str | None, x_api_key: str | None) -> str | None:
    if x_api_key:
        return x_api_key.strip()
    if authorization and authorization.lower().startswith("bearer "):
        return authorization[7:].strip()
    return None


async def caller(
    services: Annotated[Services, Depends(get_services)],
    authorization: Annotated[str | None, Header(include_in_schema=False)] = None,
    x_api_key: Annotated[str | None, Header(include_in_schema=False)] = None,
) -> str | None:
    """The caller's owner id, or None when API keys are off. 401 for a missing/bad key."""
    keys = services.settings.api_keys
    if not keys:
        return None
    presented = _presented_key(authorization, x_api_key)
    if presented is None:
        raise ApiError(
            401,
            "missing_api_key",
            "An API key is required: send 'Authorization: Bearer <key>'.",
            headers={"WWW-Authenticate": "Bearer"},
        )
    for key in keys:
        if hmac.compare_digest(presented.encode(), key.get_secret_value().encode()):
            return owner_id(presented)
    raise ApiError(
        401, "invalid_api_key", "The API key is not valid.", headers={"WWW-Authenticate": "Bearer"}
    )


Caller = Annotated[str | None, Depends(caller)]
