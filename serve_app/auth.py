"""API keys. With keys, every /v1 route needs one and each job belongs to the caller's
tenant: the one api_key_tenants names for the key, else the key itself (a hash of it).
Without keys the API is open, which serve_app/exposure.py allows only on a loopback bind
(or by the operator's explicit allow_unauthenticated).

`python -m serve_app.auth KEY` prints the tenant id a key listed in api_keys has."""

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


def presented_key(authorization: str | None, x_api_key: str | None) -> str | None:
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
    return tenant_for(services.settings, presented_key(authorization, x_api_key))


def tenant_for(settings, presented: str | None) -> str | None:
    """The owner id of a presented key (None when keys are off); 401 ApiError otherwise."""
    if not settings.keys_required:
        return None
    if presented is None:
        raise ApiError(
            401,
            "missing_api_key",
            "An API key is required: send 'Authorization: Bearer <key>'.",
            headers={"WWW-Authenticate": "Bearer"},
        )
    tenant = None
    # Every key is compared (no early exit), so timing does not tell which matched.
    for name, keys in settings.api_key_tenants.items():
        for key in keys:
            if hmac.compare_digest(presented.encode(), key.get_secret_value().encode()):
                tenant = tenant or name
    for key in settings.api_keys:
        if hmac.compare_digest(presented.encode(), key.get_secret_value().encode()):
            tenant = tenant or owner_id(presented)
    if tenant is None:
        raise ApiError(
            401,
            "invalid_api_key",
            "The API key is not valid.",
            headers={"WWW-Authenticate": "Bearer"},
        )
    return tenant


Caller = Annotated[str | None, Depends(caller)]


if __name__ == "__main__":
    import sys

    for arg in sys.argv[1:] or [sys.stdin.readline().strip()]:
        print(owner_id(arg))
