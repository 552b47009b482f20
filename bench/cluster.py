"""A private local cluster for benchmarks, reached over HTTP, and a memory sampler.

The cluster is private: its own Ray instance (`address="local"`), Serve on port 28000 by
default, and an embedded Redis under a temporary data directory, so nothing collides with
the test suite (ports 18000 and 16379) or another Ray cluster on the machine.
"""

from __future__ import annotations

import contextlib
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import psutil

from bench.common import PORT, clip, log
from tests.synth import write_wav

TERMINAL = ("completed", "failed", "cancelled")
# Ray would reserve 30 % of RAM as shared memory; 60 min of float32 audio is ~230 MiB.
OBJECT_STORE_BYTES = 2 * 2**30


@dataclass
class JobRun:
    id: str
    status: str
    wall_s: float  # submit (upload included) to completed, as a client sees it
    snapshot: dict[str, Any]
    result: dict[str, Any] = field(default_factory=dict)


class Cluster:
    """A private local Ray cluster with the app deployed, reached over HTTP.

    Args:
        settings: app settings (see `bench_settings`).
        port: Serve HTTP port.
        num_cpus: logical CPUs of the Ray node.
    """

    def __init__(self, settings, port: int = PORT, num_cpus: int | None = None) -> None:
        self.settings, self.port, self.num_cpus = settings, port, num_cpus
        self.http = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=900)
        self._stdout = contextlib.redirect_stdout(sys.stderr)

    def __enter__(self) -> Cluster:
        import ray
        from ray import serve

        # Ray prints task errors (e.g. at shutdown) to stdout, which holds only the tables.
        self._stdout.__enter__()
        ray.init(
            address="local",  # always a fresh cluster of our own
            num_cpus=self.num_cpus,
            object_store_memory=OBJECT_STORE_BYTES,
            include_dashboard=False,
            log_to_driver=False,
            configure_logging=False,
        )
        serve.start(http_options={"host": "127.0.0.1", "port": self.port})
        return self

    def __exit__(self, *exc: object) -> None:
        import ray
        from ray import serve

        self.http.close()
        serve.shutdown()
        ray.shutdown()
        self._stdout.__exit__(None, None, None)
        # The embedded Redis is a daemon of its own: stop the one under our data dir.
        pidfile = self.settings.resolved_data_dir / "redis" / "redis.pid"
        with contextlib.suppress(OSError, ValueError, psutil.Error):
            psutil.Process(int(pidfile.read_text())).terminate()

    def deploy(
        self,
        transcriber: dict | None = None,
        diarizer: dict | None = None,
        timeout_s=600,
        models: dict[str, dict] | None = None,
    ) -> float:
        """(Re)deploy the app with deployment overrides and wait until /healthz says 200.

        Returns the seconds from `serve.run` to the first 200.
        """
        from ray import serve

        from serve_app.app import build_app

        t0 = time.monotonic()
        app = build_app(self.settings, transcriber=transcriber, diarizer=diarizer, models=models)
        serve.run(app, name=self.settings.app_name, route_prefix="/")
        while True:
            with contextlib.suppress(httpx.HTTPError):
                if self.http.get("/healthz", timeout=15).status_code == 200:
                    break
            if time.monotonic() - t0 > timeout_s:
                raise TimeoutError(f"app not healthy after {timeout_s} s")
            time.sleep(1)
        ready_s = time.monotonic() - t0
        log(f"app ready in {ready_s:.0f} s")
        return ready_s

    def run_job(self, path: Path, poll_s: float = 0.25, verbose: bool = True, **form) -> JobRun:
        """Submit `path` to POST /v1/jobs with `form` fields and poll until it ends."""
        data = {k: str(v).lower() if isinstance(v, bool) else str(v) for k, v in form.items()}
        t0 = time.monotonic()
        with path.open("rb") as fh:
            r = self.http.post("/v1/jobs", files={"file": (path.name, fh)}, data=data)
        if r.status_code != 202:
            raise RuntimeError(f"POST /v1/jobs: {r.status_code} {r.text}")
        job_id, last = r.json()["id"], None
        while True:
            body = self.http.get(f"/v1/jobs/{job_id}").json()
            if verbose and body["stage"] != last:
                log(f"{time.monotonic() - t0:7.1f}s {body['status']:>12} {body['stage']}")
                last = body["stage"]
            if body["status"] in TERMINAL:
                break
            time.sleep(poll_s)
        run = JobRun(job_id, body["status"], time.monotonic() - t0, body)
        if run.status == "completed":
            run.result = self.http.get(f"/v1/jobs/{job_id}/result").json()
        return run

    def warm_up(self, tmp: Path, seconds: float = 20.0) -> None:
        """One short job, so first-call costs (lazy imports, allocations) are not measured."""
        path = write_wav(clip(seconds), tmp / "warm-up.wav")
        run = self.run_job(path, verbose=False, diarize=True)
        if run.status != "completed":
            raise RuntimeError(f"warm-up job {run.status}: {run.snapshot.get('error')}")


@dataclass
class ProcPeak:
    title: str
    start_rss: int
    peak_rss: int = 0
    peak_uss: int = 0
    peak_anon: int = 0  # anonymous memory: the heap, without object-store (shm) pages


class RssSampler:
    """Peak RSS and USS of this cluster's actor processes, sampled every `interval_s`.

    Only descendants of this process are looked at (our raylet's workers), so another Ray
    cluster on the machine is never measured. RSS also counts object-store pages a process
    touched (shared memory); USS is its private memory, which still counts object-store pages
    only this process touched; "anon" (Anonymous in /proc/PID/smaps_rollup) is the process's
    own heap and stacks, without any shared-memory pages.
    """

    def __init__(self, prefixes=("ray::ServeReplica:",), interval_s=0.5):
        self.prefixes, self.interval_s = prefixes, interval_s
        self.peaks: dict[int, ProcPeak] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> RssSampler:
        self._sample()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self._sample()

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            self._sample()

    def _sample(self) -> None:
        for proc in psutil.Process().children(recursive=True):
            with contextlib.suppress(psutil.Error, IndexError):
                # Ray's process title, e.g. "ray::ServeReplica:speech:JobManager".
                title = proc.cmdline()[0].split()[0].split(".")[0]
                if not title.startswith(self.prefixes):
                    continue
                info = proc.memory_full_info()
                peak = self.peaks.setdefault(proc.pid, ProcPeak(title[5:], info.rss))
                peak.peak_rss = max(peak.peak_rss, info.rss)
                peak.peak_uss = max(peak.peak_uss, info.uss)
                peak.peak_anon = max(peak.peak_anon, _anonymous(proc.pid))


def _anonymous(pid: int) -> int:
    """Bytes of anonymous memory of a process (0 where smaps_rollup is unreadable)."""
    try:
        with open(f"/proc/{pid}/smaps_rollup") as fh:
            for line in fh:
                if line.startswith("Anonymous:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0
