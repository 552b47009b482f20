"""Upload size limits enforced while the body streams in, before it is buffered."""

from __future__ import annotations

import json

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from serve_app.errors import shaped
from serve_app.services.context import upload_limit_bytes


class _TooLarge(Exception):
    pass


class BodySizeLimit:
    """ASGI middleware: 413 for bodies over the limit, by header or by counting.

    The limit comes from the installed settings, read per request, so the ingress can set
    it after the app object exists.
    """

    def __init__(self, app: ASGIApp, default_max_bytes: int = 200_000_000) -> None:
        self.app, self.default_max_bytes = app, default_max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] not in ("POST", "PUT", "PATCH"):
            await self.app(scope, receive, send)
            return
        max_bytes = upload_limit_bytes(scope.get("app")) or self.default_max_bytes
        headers = dict(scope.get("headers") or [])
        declared = headers.get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > max_bytes:
            await self._reject(send, max_bytes, scope.get("path", ""))
            return
        seen = 0
        started = exceeded = False

        async def counting_receive() -> Message:
            nonlocal seen, exceeded
            if exceeded:
                raise _TooLarge
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > max_bytes:
                    exceeded = True
                    raise _TooLarge
            return message

        async def guarded_send(message: Message) -> None:
            nonlocal started
            # The app may catch _TooLarge and answer for itself (FastAPI turns any error
            # while parsing a form into 400): once over the limit, only 413 goes out.
            if exceeded:
                return
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, counting_receive, guarded_send)
        except Exception:
            if not exceeded:
                raise
        if exceeded and not started:
            await self._reject(send, max_bytes, scope.get("path", ""))

    @staticmethod
    async def _reject(send: Send, max_bytes: int, path: str) -> None:
        message = f"The upload exceeds the {max_bytes / 1e6:g} MB limit (max_upload_mb)."
        status, payload = shaped(path, 413, "file_too_large", message, "file")
        body = json.dumps(payload).encode()
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode()),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})
