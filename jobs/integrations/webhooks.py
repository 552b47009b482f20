"""Webhook delivery: signed, sent only to public addresses, one attempt per call.

The signature is HMAC-SHA256 over "<timestamp>.<body>" with the job's secret (the configured
one, or one made for the job and returned at submit), sent as
`X-Speech-Signature: t=<timestamp>,v1=<hex>`; receivers recompute it and may reject stale
timestamps. `X-Speech-Event-Id` is the same on every retry of one event, so a receiver can
drop a repeat.

Server-side request forgery: a caller must not make the service POST to Redis on
127.0.0.1, a cloud metadata address or an internal host. The name is resolved at delivery,
every address must be public (or allow-listed by the operator), and the request goes to the
address that was checked, so a DNS answer cannot change between check and connect.
Redirects are never followed.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import ipaddress
import json
import logging
import re
import socket
import time
from collections.abc import Sequence
from urllib.parse import urlsplit, urlunsplit

import httpx

log = logging.getLogger(__name__)

SIGNATURE_HEADER = "X-Speech-Signature"
EVENT_HEADER = "X-Speech-Event-Id"
IP = ipaddress.IPv4Address | ipaddress.IPv6Address


class WebhookRefused(ValueError):
    """The URL points somewhere the service must not send requests."""


class WebhookUnresolved(OSError):
    """The host name did not resolve this time (DNS down or the name unknown): retried."""


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


# IPv6 forms that carry an IPv4 address a gateway may deliver to: NAT64 (RFC 6052's
# well-known prefix) and the deprecated IPv4-compatible form keep it in the low 32 bits.
_LOW32 = (ipaddress.ip_network("64:ff9b::/96"), ipaddress.ip_network("::/96"))
_NAT64_LOCAL = ipaddress.ip_network("64:ff9b:1::/48")  # local-use: embeds it anywhere


def _public(ip: IP) -> bool:
    if isinstance(ip, ipaddress.IPv6Address):
        if ip in _NAT64_LOCAL:
            return False
        inner = [ip.ipv4_mapped, ip.sixtofour, *(ip.teredo or ())]
        if any(ip in net for net in _LOW32):
            inner.append(ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF))
        if any(v4 is not None and not _public(v4) for v4 in inner):
            return False
    return ip.is_global and not ip.is_multicast


def _allowed(host: str, ip: IP, allow: Sequence[str]) -> bool:
    for entry in allow:
        entry = entry.strip().lower()
        if not entry:
            continue
        try:
            if ip in ipaddress.ip_network(entry, strict=False):
                return True
        except ValueError:
            try:
                name = _ascii_host(entry.rstrip("."))
            except WebhookRefused:
                continue
            if host.lower().rstrip(".") == name:
                return True
    return _public(ip)


def _split(url: str) -> tuple[str, str, int]:
    """(scheme, host in its ASCII form, port); internationalised names become IDNA."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise WebhookRefused("webhook_url must be an http(s) URL with a host")
    if parts.username or parts.password:
        raise WebhookRefused("webhook_url must not carry credentials")
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError:
        raise WebhookRefused("webhook_url has an invalid port") from None
    return parts.scheme, _ascii_host(parts.hostname), port


def _ascii_host(host: str) -> str:
    if host.isascii():
        return host
    try:
        return host.encode("idna").decode("ascii")
    except UnicodeError:
        raise WebhookRefused("webhook_url has a host name that is not valid IDNA") from None


_LEGACY_V4 = re.compile(r"^[0-9a-fA-FxX.]+$")


def _literal(host: str) -> IP | None:
    """The address `host` names literally, in any form a resolver accepts: besides
    dotted quads, the legacy forms 2130706433, 0x7f000001, 0177.0.0.1 and 127.1."""
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        pass
    if _LEGACY_V4.match(host):
        try:
            return ipaddress.IPv4Address(socket.inet_aton(host))
        except OSError:
            return None
    if host.lower().rstrip(".") in ("localhost", "localhost.localdomain"):
        return ipaddress.IPv4Address("127.0.0.1")  # whatever a resolver's hosts file says
    return None


def check_url(url: str, allow: Sequence[str]) -> None:
    """Submit-time check without DNS: refuse literal internal addresses and bad URLs."""
    _, host, _ = _split(url)
    ip = _literal(host)
    if ip is not None and not _allowed(host, ip, allow):
        raise WebhookRefused(
            f"webhook_url: {host} is a private, loopback, link-local or reserved address; "
            "add it to webhook_allow if it is your own receiver"
        )


async def resolve_checked(url: str, allow: Sequence[str], resolver=None) -> tuple[str, IP]:
    """(host, the address to connect to), after checking every address the name has."""
    _, host, port = _split(url)
    ip = _literal(host)
    if ip is not None:
        addresses = [ip]
    else:
        resolve = resolver or _getaddrinfo
        try:
            addresses = await resolve(host, port)
        except OSError as exc:  # often temporary: the delivery is tried again later
            raise WebhookUnresolved(f"webhook host {host} did not resolve ({exc})") from None
    refused = [str(a) for a in addresses if not _allowed(host, a, allow)]
    if refused or not addresses:
        raise WebhookRefused(f"webhook host {host} resolves to a non-public address {refused}")
    return host, addresses[0]


async def _getaddrinfo(host: str, port: int) -> list[IP]:
    infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return list(dict.fromkeys(ipaddress.ip_address(info[4][0]) for info in infos))


def _pinned(url: str, ip: IP) -> str:
    parts = urlsplit(url)
    netloc = f"[{ip}]" if ip.version == 6 else str(ip)
    if parts.port:
        netloc += f":{parts.port}"
    return urlunsplit((parts.scheme, netloc, parts.path or "/", parts.query, ""))


async def post_once(
    url: str,
    payload: dict,
    secret: str | None,
    event_id: str,
    allow: Sequence[str] = (),
    timeout_s: float = 10.0,
    resolver=None,
) -> tuple[bool, str]:
    """One signed delivery attempt: (delivered, what happened). Never raises.

    `timeout_s` bounds the whole attempt (name lookup, connect, upload, response headers),
    not each read, so a receiver that trickles bytes cannot hold it; the response body is
    never read, so an endless one costs nothing."""
    try:
        async with asyncio.timeout(timeout_s):
            return await _post(url, payload, secret, event_id, allow, timeout_s, resolver)
    except TimeoutError:
        return False, f"no response within {timeout_s:g} s"
    except httpx.HTTPError as exc:
        return False, f"{type(exc).__name__}: {exc}"
    except Exception as exc:  # a receiver must never take the delivery loop down
        log.warning("webhook to %s failed", url, exc_info=True)
        return False, f"delivery failed ({type(exc).__name__})"


async def _post(url, payload, secret, event_id, allow, timeout_s, resolver) -> tuple[bool, str]:
    body = json.dumps(payload, separators=(",", ":")).encode()
    try:
        host, ip = await resolve_checked(url, allow, resolver)
    except WebhookRefused as exc:
        return False, f"refused: {exc}"  # the address policy: never tried again
    except WebhookUnresolved as exc:
        return False, str(exc)
    port = urlsplit(url).port
    name = f"[{host}]" if ":" in host else host  # an IPv6 literal
    headers = {
        "Content-Type": "application/json",
        "User-Agent": "speech-cluster",
        "Host": f"{name}:{port}" if port else name,
        EVENT_HEADER: event_id,
    }
    if secret:
        headers[SIGNATURE_HEADER] = sign(secret, int(time.time()), body)
    async with httpx.AsyncClient(timeout=timeout_s, follow_redirects=False) as client:
        request = client.build_request(
            "POST",
            _pinned(url, ip),
            content=body,
            headers=headers,
            extensions={"sni_hostname": host},  # TLS still verifies the name
        )
        response = await client.send(request, stream=True)  # the body is never read
        await response.aclose()
    return 200 <= response.status_code < 300, f"HTTP {response.status_code}"
