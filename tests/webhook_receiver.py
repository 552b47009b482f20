"""A local webhook receiver for the tests: records every POST, can start later on a port
chosen earlier (to play a receiver that is down at first), and can play a hostile one:
`endless` answers 200 with a body that never ends, `trickle` sends a byte every few
seconds and never finishes its answer."""

from __future__ import annotations

import json
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from tests.conftest import WEBHOOK_HOST


class WebhookReceiver:
    def __init__(self, port: int | None = None, mode: str = "ok") -> None:
        assert mode in ("ok", "endless", "trickle")
        self.port, self.mode = port or _free_port(), mode
        self.url = f"http://{WEBHOOK_HOST}:{self.port}/hook"
        self.received: list[tuple[dict, bytes]] = []  # (headers, body)
        self._server: ThreadingHTTPServer | None = None

    def start(self) -> WebhookReceiver:
        received, lock, mode = self.received, threading.Lock(), self.mode

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers["Content-Length"]))
                with lock:
                    received.append((dict(self.headers), body))
                if mode == "ok":
                    self.send_response(204)
                    self.end_headers()
                    return
                try:
                    if mode == "endless":
                        self.send_response(200)
                        self.end_headers()
                        while True:
                            self.wfile.write(b"x" * 65536)
                    self.wfile.write(b"HTTP/1.1 200 OK\r\nX-Slow: ")
                    while True:  # trickle: a header that never ends, a byte at a time
                        self.wfile.write(b"a")
                        self.wfile.flush()
                        time.sleep(3)
                except OSError:  # the sender hung up
                    pass

            def log_message(self, *args):
                pass

        self._server = ThreadingHTTPServer((WEBHOOK_HOST, self.port), Handler)
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
