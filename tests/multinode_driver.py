"""Driver for the two-node test, run in its own process (the test process is already a
driver of the session's single-node cluster).

    python tests/multinode_driver.py ADDRESS HTTP_PORT REDIS_URL DATA_DIR AUDIO KEY_PREFIX

Deploys the app onto the cluster at ADDRESS, runs one multi-segment job through HTTP and
prints a JSON report: the cluster's nodes, where each segment ran, the job's final status.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import httpx
import ray
import redis
from ray import serve

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from serve_app.app import build_app
from serve_app.settings import Settings

REPORT_PREFIX = "MULTINODE-REPORT "


def _status(http: httpx.Client, job: str) -> dict:
    """The job's status; while a lost node's ingress or proxy is being replaced, 'unknown'."""
    try:
        r = http.get(f"/v1/jobs/{job}")
    except httpx.HTTPError as exc:
        return {"status": "unknown", "error": repr(exc)}
    return r.json() if r.status_code == 200 else {"status": "unknown", "error": r.text}


def main() -> int:
    address, port, redis_url, data_dir, audio, prefix = sys.argv[1:7]
    ray.init(address=address, log_to_driver=False)
    deadline = time.monotonic() + 60
    while len([n for n in ray.nodes() if n["Alive"]]) < 2:
        assert time.monotonic() < deadline, "the worker node never joined"
        time.sleep(0.5)
    nodes = {n["NodeID"]: n["Resources"] for n in ray.nodes() if n["Alive"]}
    settings = Settings(
        data_dir=Path(data_dir),
        models_dir=Settings().resolved_models_dir,
        redis_url=redis_url,
        redis_key_prefix=prefix,
        app_name="multi",
        # The session app's model (tests/conftest.py), so words compare; one model only.
        whisper_model="tiny.en",
        extra_whisper_models=[],
    )
    serve.start(proxy_location="HeadOnly", http_options={"host": "127.0.0.1", "port": int(port)})
    app = build_app(
        settings,
        # One transcriber replica per node; the diarizer needs a GPU, which only the worker has.
        transcriber={
            "num_replicas": 2,
            "autoscaling_config": None,
            "max_replicas_per_node": 1,
            "ray_actor_options": {"num_cpus": 1, "num_gpus": 0},
        },
        diarizer={
            "num_replicas": 1,
            "autoscaling_config": None,
            "ray_actor_options": {"num_cpus": 0, "num_gpus": 1},
        },
    )
    serve.run(app, name="multi", route_prefix="/")
    url = f"http://127.0.0.1:{port}"
    with httpx.Client(base_url=url, timeout=120) as http:
        while (health := http.get("/healthz")).status_code != 200:
            assert time.monotonic() < deadline + 120, f"app not healthy: {health.text}"
            time.sleep(1)
        with open(audio, "rb") as fh:
            job = http.post(
                "/v1/jobs",
                files={"file": ("m.wav", fh)},
                data={"diarize": "true", "segment_s": "10"},
            ).json()["id"]
        job_deadline = time.monotonic() + 300
        while (status := _status(http, job))["status"] not in ("completed", "failed", "cancelled"):
            assert time.monotonic() < job_deadline, f"job not finished in 300 s: {status}"
            time.sleep(0.5)
        final = http.get(f"/v1/jobs/{job}/result", params={"format": "json"})
        job_result = final.json() if final.status_code == 200 else None
    ckpt = redis.Redis.from_url(redis_url, decode_responses=True).hgetall(f"{prefix}job:{job}:ckpt")
    placements = {key: json.loads(value)["served_by"]["node_id"] for key, value in ckpt.items()}
    report = {
        "nodes": nodes,
        "nodes_at_end": [n["NodeID"] for n in ray.nodes() if n["Alive"]],
        "status": status,
        "placements": placements,
        "result": job_result,
    }
    # Ray may print its own lines to stdout during shutdown: mark ours.
    print(REPORT_PREFIX + json.dumps(report), flush=True)
    serve.shutdown()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
