"""Secure by default: an app reachable from other machines does not start without API keys.

Serve's HTTP proxy address is set outside the app (serve_config.yaml `http_options.host`),
so the check reads what the running Serve instance actually binds.
"""

from __future__ import annotations

import ipaddress
import logging

from serve_app.settings import Settings

log = logging.getLogger(__name__)

LOOPBACK_NAMES = {"localhost", "localhost.localdomain", "ip6-localhost"}


class ExposedWithoutKeys(RuntimeError):
    pass


def is_loopback(host: str) -> bool:
    host = host.strip().strip("[]").lower()
    if host in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # a name or 0.0.0.0-like wildcard: treat as reachable


def serve_http_host() -> str | None:
    """The address Serve's HTTP proxies bind, or None when no Serve instance is reachable
    (e.g. `serve build`, which only writes a config)."""
    try:
        from ray.serve.context import _get_global_client

        client = _get_global_client(raise_if_no_controller_running=False)
    except Exception:  # no Ray connection here
        log.debug("no Serve controller to read the HTTP host from", exc_info=True)
        return None
    if client is None:
        return None
    return client.http_config.host


def check_exposure(settings: Settings, host: str | None) -> None:
    """Refuse to serve an open API on a non-loopback address unless the operator opted in."""
    if host is None or settings.keys_required or settings.allow_unauthenticated:
        return
    if is_loopback(host):
        return
    raise ExposedWithoutKeys(
        f"Refusing to start: Serve's HTTP proxy binds {host!r}, which other machines can "
        "reach, and no API keys are configured. Set api_keys (env SPEECH_API_KEYS, a JSON "
        "list such as '[\"key-1\"]'), bind 127.0.0.1 (http_options.host), or set "
        "allow_unauthenticated: true (SPEECH_ALLOW_UNAUTHENTICATED=true) for a network "
        "you control."
    )
