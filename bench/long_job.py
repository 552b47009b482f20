"""One long recording end to end through HTTP, with the job manager's peak RSS.

    .venv/bin/python bench/long_job.py --minutes 60 [--no-diarize] [--segment-s 30]

Starts a local Ray cluster and the app (embedded Redis), synthesizes a multi-speaker
recording of the given length, submits it to /v1/jobs, follows progress, and prints the
realtime factor and the peak RSS of the job manager actor sampled every 0.5 s.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx
import psutil

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import contextlib

from tests.synth import concat, meeting, write_wav


def build_recording(minutes: float, tmp: Path) -> tuple[Path, float]:
    block = meeting(150, seed=1)  # ~10 min of three voices
    parts = [block] * max(1, round(minutes * 60 / block.duration))
    rec = concat(*parts)
    audio = rec.audio[: int(minutes * 60 * 16000)]
    return write_wav(audio, tmp / "long.wav"), len(audio) / 16000


def sample_memory(pid: int, stop: threading.Event, peak: list[int]) -> None:
    """Peak RSS and USS. RSS also counts object-store pages the actor touched (shared
    memory, reclaimed by Ray); USS is the actor's private memory."""
    proc = psutil.Process(pid)
    while not stop.is_set():
        with contextlib.suppress(psutil.Error):
            info = proc.memory_full_info()
            peak[0], peak[1] = max(peak[0], info.rss), max(peak[1], info.uss)
        time.sleep(0.5)


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--minutes", type=float, default=60)
    parser.add_argument("--segment-s", type=float, default=30)
    parser.add_argument("--no-diarize", action="store_true")
    parser.add_argument("--port", type=int, default=18100)
    args = parser.parse_args()

    import ray
    from ray import serve

    from jobs.manager import MANAGER_NAME, NAMESPACE
    from serve_app.app import build_app
    from serve_app.settings import Settings

    with tempfile.TemporaryDirectory() as tmpdir:
        tmp = Path(tmpdir)
        path, duration = build_recording(args.minutes, tmp)
        settings = Settings(data_dir=tmp / "data", models_dir=Settings().resolved_models_dir)
        ray.init(address="local", include_dashboard=False, log_to_driver=False)
        serve.start(http_options={"host": "127.0.0.1", "port": args.port})
        serve.run(build_app(settings), name="speech", route_prefix="/")
        url = f"http://127.0.0.1:{args.port}"
        with httpx.Client(base_url=url, timeout=300) as http:
            while http.get("/healthz").status_code != 200:
                time.sleep(1)
            manager = ray.get_actor(MANAGER_NAME, namespace=NAMESPACE)
            pid = ray.get(manager.ping.remote())["pid"]
            base = psutil.Process(pid).memory_full_info()
            peak, stop = [base.rss, base.uss], threading.Event()
            threading.Thread(target=sample_memory, args=(pid, stop, peak), daemon=True).start()
            t0 = time.monotonic()
            with path.open("rb") as fh:
                r = http.post(
                    "/v1/jobs",
                    files={"file": ("long.wav", fh)},
                    data={
                        "diarize": str(not args.no_diarize).lower(),
                        "segment_s": str(args.segment_s),
                    },
                )
            job = r.json()["id"]
            last = None
            while True:
                body = http.get(f"/v1/jobs/{job}").json()
                if body["stage"] != last:
                    print(f"{time.monotonic() - t0:7.1f}s {body['status']:>12} {body['stage']}")
                    last = body["stage"]
                if body["status"] in ("completed", "failed", "cancelled"):
                    break
                time.sleep(1)
            wall = time.monotonic() - t0
            stop.set()
            result = (
                http.get(f"/v1/jobs/{job}/result").json() if body["status"] == "completed" else {}
            )
        words = sum(len(s["words"]) for s in result.get("segments", []))
        print(
            f"status={body['status']} audio={duration / 60:.1f} min wall={wall:.0f}s "
            f"realtime x{duration / wall:.1f} segments={body['segments_total']} words={words} "
            f"speakers={len(result.get('speakers', []))}"
        )
        mib = 2**20
        print(
            f"manager RSS: start {base.rss / mib:.0f} MiB, peak {peak[0] / mib:.0f} MiB; "
            f"USS (private): start {base.uss / mib:.0f} MiB, peak {peak[1] / mib:.0f} MiB; "
            f"the audio itself is {duration * 16000 * 4 / mib:.0f} MiB as float32"
        )
        serve.shutdown()
        ray.shutdown()

        # Stop the bench's own embedded Redis.
        pidfile = settings.resolved_data_dir / "redis" / "redis.pid"
        if pidfile.exists():
            psutil.Process(int(pidfile.read_text())).terminate()
    return 0 if body["status"] == "completed" else 1


if __name__ == "__main__":
    raise SystemExit(main())
