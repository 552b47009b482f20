"""Webhook delivery: the job summary POSTed to the caller's URL, signed, retried, isolated.

The signature is HMAC-SHA256 over "<timestamp>.<body>" with the configured secret, sent as
`X-Speech-Signature: t=<timestamp>,v1=<hex>`; receivers recompute it and may reject stale
timestamps. A receiver that is down is retried with exponential backoff and never affects
the job itself.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import logging
import time

import httpx

log = logging.getLogger(__name__)

SIGNATURE_HEADER = "X-Speech-Signature"


def sign(secret: str, timestamp: int, body: bytes) -> str:
    mac = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256)
    return f"t={timestamp},v1={mac.hexdigest()}"


def verify(secret: str, header: str, body: bytes, tolerance_s: float = 300) -> bool:
    """Check a signature header as a receiver would (also used by the tests)."""
    try:
        parts = dict(item.split("=", 1) for item in header.split(","))
        timestamp = int(parts["t"])
    except (KeyError, ValueError):
        return False
    if abs(time.time() - timestamp) > tolerance_s:
        return False
    return hmac.compare_digest(sign(secret, timestamp, body), header)


async def deliver(
    url: str,
    payload: dict,
    secret: str | None,
    max_attempts: int = 6,
    base_delay_s: float = 1.0,
    timeout_s: float = 10.0,
) -> dict:
    """POST `payload` until a 2xx arrives or attempts run out; returns a delivery report."""
    body = json.dumps(payload, separators=(",", ":")).encode()
    last_error = ""
    async with httpx.AsyncClient(timeout=timeout_s, follow_redirects=False) as client:
        for attempt in range(1, max_attempts + 1):
            headers = {"Content-Type": "application/json", "User-Agent": "speech-cluster"}
            if secret:
                headers[SIGNATURE_HEADER] = sign(secret, int(time.time()), body)
            try:
                response = await client.post(url, content=body, headers=headers)
                if 200 <= response.status_code < 300:
                    return {"delivered": True, "attempts": attempt, "status": response.status_code}
                last_error = f"HTTP {response.status_code}"
            except httpx.HTTPError as exc:
                last_error = f"{type(exc).__name__}: {exc}"
            log.warning("webhook %s attempt %d failed: %s", url, attempt, last_error)
            if attempt < max_attempts:
                await asyncio.sleep(min(base_delay_s * 2 ** (attempt - 1), 300.0))
    return {"delivered": False, "attempts": max_attempts, "error": last_error}
