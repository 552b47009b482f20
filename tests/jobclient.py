"""Small HTTP and Redis helpers shared by the end-to-end job tests."""

from __future__ import annotations

import itertools
import time
from pathlib import Path

import redis

from tests.conftest import normalize_text

TERMINAL = ("completed", "failed", "cancelled")


def submit(http, path: Path, headers: dict | None = None, **form) -> str:
    with path.open("rb") as fh:
        r = http.post(
            "/v1/jobs",
            files={"file": (path.name, fh)},
            headers=headers or {},
            data={k: str(v).lower() if isinstance(v, bool) else str(v) for k, v in form.items()},
        )
    assert r.status_code == 202, r.text
    return r.json()["id"]


def wait_done(http, job_id: str, timeout_s: float = 900) -> dict:
    deadline, seen = time.monotonic() + timeout_s, []
    while time.monotonic() < deadline:
        r = http.get(f"/v1/jobs/{job_id}")
        if r.status_code == 200:
            body = r.json()
            seen.append((body["status"], body["stage"]))
            if body["status"] in TERMINAL:
                body["history"] = seen
                return body
        time.sleep(0.5)
    raise AssertionError(f"job {job_id} not finished in {timeout_s}s; last: {seen[-3:]}")


def result(http, job_id: str) -> dict:
    r = http.get(f"/v1/jobs/{job_id}/result", params={"format": "json"})
    assert r.status_code == 200, r.text
    return r.json()


def redis_client(app_settings) -> redis.Redis:
    return redis.Redis.from_url(app_settings.redis_url, decode_responses=True)


def checkpoints(app_settings, job_id: str) -> dict[str, str]:
    return redis_client(app_settings).hgetall(f"{app_settings.redis_key_prefix}job:{job_id}:ckpt")


def calls(app_settings, job_id: str) -> dict[str, int]:
    """Model calls made per "{plan}:{part}" (one hash field per call)."""
    from collections import Counter

    key = f"{app_settings.redis_key_prefix}job:{job_id}:calls"
    return dict(Counter(f.split("#", 1)[0] for f in redis_client(app_settings).hkeys(key)))


def jobs_created(app_settings) -> int:
    return redis_client(app_settings).zcard(f"{app_settings.redis_key_prefix}jobs:created")


def wait_checkpoints(app_settings, job_id: str, at_least: int, timeout_s: float = 300) -> dict:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        ckpt = checkpoints(app_settings, job_id)
        if len(ckpt) >= at_least:
            return ckpt
        time.sleep(0.05)
    raise AssertionError(f"fewer than {at_least} checkpoints after {timeout_s}s")


def assert_words_global_and_monotonic(res: dict, duration: float) -> list[dict]:
    words = [w for seg in res["segments"] for w in seg["words"]]
    starts = [w["start"] for w in words]
    assert starts == sorted(starts)
    assert all(0 <= w["start"] <= w["end"] <= duration + 0.01 for w in words)
    assert words[-1]["end"] > duration - 30, "timestamps are not global"
    for a, b in itertools.pairwise(words):  # no word doubled at a cut
        same = normalize_text(a["text"]) == normalize_text(b["text"]) != ""
        assert not (same and b["start"] - a["start"] < 0.3), (a, b)
    return words


def replica_actors(deployment: str, app: str = "speech") -> list[tuple[str, str]]:
    """(name, namespace) of the live Serve replicas of one deployment of one app."""
    import ray

    return [
        (a["name"], a["namespace"])
        for a in ray.util.list_named_actors(all_namespaces=True)
        if a["name"].startswith(f"SERVE_REPLICA::{app}#{deployment}#")
    ]


def replica_infos(handle, expected: int, timeout_s: float = 60) -> dict[str, dict]:
    """`info()` of a deployment's replicas by replica id, until `expected` have answered."""
    seen: dict[str, dict] = {}
    deadline = time.monotonic() + timeout_s
    while len(seen) < expected and time.monotonic() < deadline:
        info = handle.info.remote().result()
        seen[info["replica_id"]] = info
    return seen


def kill_replica(deployment: str, app: str = "speech") -> None:
    """SIGKILL-like: the replica dies at once and Serve starts another."""
    import ray

    name, namespace = replica_actors(deployment, app)[0]
    ray.kill(ray.get_actor(name, namespace=namespace), no_restart=True)


def manager(app: str = "speech"):
    """The application's job manager (a Serve deployment)."""
    from ray import serve

    return serve.get_deployment_handle("JobManager", app_name=app)
