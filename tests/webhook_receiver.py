"""A local webhook receiver for the tests: records every POST, can start later on a port
chosen earlier (to play a receiver that is down at first)."""

from __future__ import annotations

import json
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, HTTPServer

from tests.conftest import WEBHOOK_HOST


class WebhookReceiver:
    def __init__(self, port: int | None = None) -> None:
        self.port = port or _free_port()
        self.url = f"http://{WEBHOOK_HOST}:{self.port}/hook"
        self.received: list[tuple[dict, bytes]] = []  # (headers, body)
        self._server: HTTPServer | None = None

    def start(self) -> WebhookReceiver:
        received, lock = self.received, threading.Lock()

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers["Content-Length"]))
                with lock:
                    received.append((dict(self.headers), body))
                self.send_response(204)
                self.end_headers()

            def log_message(self, *args):
                pass

        self._server = HTTPServer((WEBHOOK_HOST, self.port), Handler)
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def __enter__(self) -> WebhookReceiver:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def payloads(self) -> list[dict]:
        return [json.loads(body) for _, body in self.received]

    def wait(self, done, timeout_s: float = 30) -> bool:
        """Wait until done(payloads) is true; returns whether it became true."""
        deadline = time.monotonic() + timeout_s
        while not done(self.payloads()):
            if time.monotonic() > deadline:
                return False
            time.sleep(0.2)
        return True


def _free_port() -> int:
    with socket.socket() as s:
        s.bind((WEBHOOK_HOST, 0))
        return s.getsockname()[1]
