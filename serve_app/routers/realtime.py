"""`/v1/realtime?intent=transcription`: OpenAI's realtime transcription protocol over a
WebSocket (the session itself: jobs/live/realtime_session.py), and `/live`, a page that
captions the microphone through it.

Keys: `Authorization: Bearer <key>` (or `X-API-Key`), or, for browsers, which cannot set
headers on a WebSocket, the subprotocol `openai-insecure-api-key.<key>` as OpenAI accepts.
Limits: `realtime_sessions_per_key` open sessions per key (and the ingress's held-request
caps), `realtime_idle_s` without a client event, `realtime_max_session_s` in all,
`realtime_max_buffer_s` of uncommitted audio without server VAD.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections import Counter
from pathlib import Path

from fastapi import APIRouter, WebSocket, WebSocketDisconnect
from fastapi.responses import HTMLResponse

from jobs.live.realtime_session import RealtimeSession
from jobs.live.turns import silero_probabilities
from serve_app.auth import presented_key, tenant_for
from serve_app.errors import ApiError
from serve_app.services.context import get_services_for
from serve_app.services.realtime import ServiceBackend

router = APIRouter(tags=["realtime"])
log = logging.getLogger(__name__)

KEY_PROTOCOL = "openai-insecure-api-key."
POLICY_VIOLATION, TRY_AGAIN_LATER = 1008, 1013
_open: Counter[str | None] = Counter()  # sessions per owner in this ingress replica
LIVE_PAGE = Path(__file__).resolve().parent.parent / "static" / "live.html"


def _key(ws: WebSocket) -> tuple[str | None, str | None]:
    """(presented key, subprotocol to accept) from the headers or the subprotocols."""
    protocols = [p.strip() for p in ws.headers.get("sec-websocket-protocol", "").split(",")]
    from_protocol = next(
        (p[len(KEY_PROTOCOL) :] for p in protocols if p.startswith(KEY_PROTOCOL)), None
    )
    presented = presented_key(ws.headers.get("authorization"), ws.headers.get("x-api-key"))
    accept = "realtime" if "realtime" in protocols else None
    return presented or from_protocol, accept


async def _refuse(ws: WebSocket, code: str, message: str, close_code: int) -> None:
    error = {"type": "invalid_request_error", "code": code, "message": message, "param": None}
    await ws.send_json({"type": "error", "event_id": "event_refused", "error": error})
    await ws.close(close_code, message[:120])


@router.websocket("/v1/realtime")
async def realtime(ws: WebSocket, intent: str | None = None) -> None:
    services = get_services_for(ws.app)
    presented, subprotocol = _key(ws)
    await ws.accept(subprotocol=subprotocol)
    if services is None:
        await _refuse(ws, "not_ready", "the service is starting; retry shortly", TRY_AGAIN_LATER)
        return
    settings = services.settings
    try:
        owner = tenant_for(settings, presented)
    except ApiError as exc:
        await _refuse(ws, exc.code, exc.message, POLICY_VIOLATION)
        return
    if intent not in (None, "transcription"):
        await _refuse(
            ws, "invalid_intent", "this server runs transcription sessions: intent=transcription",
            POLICY_VIOLATION,
        )  # fmt: skip
        return
    if _open[owner] >= settings.realtime_sessions_per_key:
        await _refuse(
            ws,
            "too_many_sessions",
            f"this API key already has {settings.realtime_sessions_per_key} realtime sessions "
            "open (realtime_sessions_per_key)",
            TRY_AGAIN_LATER,
        )
        return
    held = services.held_requests()
    try:
        held.acquire(owner)
    except ApiError as exc:
        await _refuse(ws, exc.code, exc.message, TRY_AGAIN_LATER)
        return
    _open[owner] += 1
    try:
        await _run(ws, services, owner)
    finally:
        _open[owner] -= 1
        if _open[owner] <= 0:
            del _open[owner]
        held.release(owner)


async def _run(ws: WebSocket, services, owner: str | None) -> None:
    settings = services.settings
    lock = asyncio.Lock()
    closed = False

    async def send(event: dict) -> None:
        if closed:
            return
        async with lock:  # turns finish concurrently; frames go out one at a time
            await ws.send_text(json.dumps(event, ensure_ascii=False))

    probs = await asyncio.to_thread(silero_probabilities)
    session = RealtimeSession(
        send, ServiceBackend(services, owner), probs, max_buffer_s=settings.realtime_max_buffer_s
    )
    loop = asyncio.get_running_loop()
    deadline = loop.time() + settings.realtime_max_session_s
    try:
        await session.start()
        while True:
            timeout = min(settings.realtime_idle_s, deadline - loop.time())
            if timeout <= 0:
                await session.error("session_expired", "the session reached its time limit")
                break
            try:
                message = await asyncio.wait_for(ws.receive(), timeout)
            except TimeoutError:
                if loop.time() >= deadline:
                    await session.error("session_expired", "the session reached its time limit")
                else:
                    await session.error("idle_timeout", "no client event for realtime_idle_s")
                break
            if message["type"] == "websocket.disconnect":
                return
            text = message.get("text")
            try:
                event = json.loads(text) if text is not None else None
            except ValueError:
                event = None
            if not isinstance(event, dict):
                await session.error("invalid_json", "each message must be one JSON event object")
                continue
            await session.handle(event)
        await session.drain()  # the turns already committed still arrive
        await ws.close(1000)
    except WebSocketDisconnect:
        pass
    except Exception:
        log.exception("realtime session %s failed", session.id)
        await session.error("server_error", "the session failed; start a new one")
    finally:
        closed = True
        await session.close()


@router.get("/live", response_class=HTMLResponse, include_in_schema=False)
async def live_page() -> HTMLResponse:
    """Live captions of the microphone, with speakers, through /v1/realtime."""
    return HTMLResponse(await asyncio.to_thread(LIVE_PAGE.read_text))
