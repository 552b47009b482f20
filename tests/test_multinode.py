"""Two Ray nodes on loopback (two `ray start` processes): the app deploys across them and a
job's segments run on both. GCS listens on a free port, never Redis's 6379."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.synth import meeting, write_wav

pytestmark = [pytest.mark.ray, pytest.mark.models]

RAY = str(Path(sys.executable).parent / "ray")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# Ray 2.60 turns token authentication on by default; these throwaway loopback nodes and
# their driver run without it (a real cluster keeps it: see cluster.yaml).
ENV = {**os.environ, "RAY_AUTH_MODE": "disabled"}


def _start(log: Path, *args: str) -> subprocess.Popen:
    # --block keeps the node's processes tied to this one: killing its group stops exactly
    # this node (`ray stop` would stop every Ray process on the machine).
    with log.open("w") as out:
        return subprocess.Popen(
            [RAY, "start", "--block", "--disable-usage-stats", *args],
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            env=ENV,
        )


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(5)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)  # the node's raylet, GCS and workers
    proc.wait()


WORKER_ARGS = ("--num-cpus=2", "--num-gpus=2", '--resources={"gpu_worker": 1}')


class TwoNodes:
    """A head and a GPU worker on loopback; the worker can be stopped and replaced."""

    def __init__(self, tmp_path: Path) -> None:
        self.tmp_path, self.port = tmp_path, _free_port()
        self.address = f"127.0.0.1:{self.port}"
        self.procs = [
            _start(
                tmp_path / "head.log",
                "--head",
                f"--port={self.port}",
                "--node-ip-address=127.0.0.1",
                "--num-cpus=2",
                "--num-gpus=0",
                "--include-dashboard=false",
                '--resources={"head": 1}',
            )
        ]
        time.sleep(3)
        self.worker = self.add_worker()

    def add_worker(self) -> subprocess.Popen:
        log = self.tmp_path / f"worker{len(self.procs)}.log"
        proc = _start(log, f"--address={self.address}", "--node-ip-address=127.0.0.1", *WORKER_ARGS)
        self.procs.append(proc)
        return proc

    def stop_worker(self) -> None:
        """SIGKILL the worker's raylet, object store and workers at once: a node lost."""
        os.killpg(self.worker.pid, signal.SIGKILL)
        self.worker.wait()

    def close(self) -> None:
        for proc in reversed(self.procs):
            _stop(proc)
        # `ray start --head` recorded this cluster as the machine's current one; left behind,
        # a later `serve run` or `ray.init()` would try to join the dead cluster and hang.
        from ray._common.utils import get_ray_address_file

        address_file = Path(get_ray_address_file(None))
        if address_file.exists() and address_file.read_text().strip().endswith(f":{self.port}"):
            address_file.unlink(missing_ok=True)


@pytest.fixture()
def two_nodes(tmp_path):
    cluster = TwoNodes(tmp_path)
    try:
        yield cluster
    finally:
        cluster.close()


def _driver(cluster: TwoNodes, redis_url: str, audio: Path, prefix: str) -> subprocess.Popen:
    return subprocess.Popen(
        [
            sys.executable,
            str(Path(__file__).with_name("multinode_driver.py")),
            cluster.address,
            str(_free_port()),
            redis_url,
            str(cluster.tmp_path / "data"),
            str(audio),
            prefix,
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**ENV, "RAY_ADDRESS": cluster.address},
    )


def _report(cluster: TwoNodes, proc: subprocess.Popen) -> dict:
    from tests.multinode_driver import REPORT_PREFIX

    try:
        stdout, stderr = proc.communicate(timeout=480)
    except subprocess.TimeoutExpired:
        proc.kill()
        stdout, stderr = proc.communicate()
    logs = "".join(p.read_text()[-1500:] for p in cluster.tmp_path.glob("*.log"))
    lines = [ln for ln in stdout.splitlines() if ln.startswith(REPORT_PREFIX)]
    assert proc.returncode == 0 and lines, stdout[-2000:] + stderr[-3000:] + logs
    return json.loads(lines[-1].removeprefix(REPORT_PREFIX))


def test_job_segments_run_on_both_nodes(two_nodes, redis_server, tmp_path):
    rec = meeting(24, seed=13)
    audio = write_wav(rec.audio, tmp_path / "meeting.wav")
    report = _report(two_nodes, _driver(two_nodes, redis_server.url, audio, "multinode:"))
    assert len(report["nodes"]) == 2
    gpu_nodes = {n for n, res in report["nodes"].items() if res.get("GPU")}
    assert report["status"]["status"] == "completed", report["status"]
    assert report["status"]["segments_total"] >= 6
    transcribed_on = {node for key, node in report["placements"].items() if key.endswith(":t")}
    diarized_on = {node for key, node in report["placements"].items() if key.endswith(":d")}
    assert transcribed_on == set(report["nodes"]), "segments did not run on both nodes"
    assert diarized_on <= gpu_nodes and diarized_on  # the GPU replica sat on the GPU worker


def test_losing_the_worker_node_mid_job_loses_nothing(two_nodes, redis_server, tmp_path, http):
    """The GPU worker dies mid-job; a replacement joins (as the autoscaler would add one);
    the job completes with the same words and speakers as on the single-node app."""
    import redis

    rec = meeting(24, seed=13)
    audio = write_wav(rec.audio, tmp_path / "meeting.wav")
    prefix = "nodeloss:"
    driver = _driver(two_nodes, redis_server.url, audio, prefix)
    client = redis.Redis.from_url(redis_server.url, decode_responses=True)
    deadline = time.monotonic() + 300
    while not any(client.hlen(k) >= 3 for k in client.scan_iter(f"{prefix}job:*:ckpt")):
        assert driver.poll() is None, driver.communicate()
        assert time.monotonic() < deadline, "no checkpoints in 300 s"
        time.sleep(0.1)
    two_nodes.stop_worker()
    time.sleep(2)
    two_nodes.worker = two_nodes.add_worker()
    report = _report(two_nodes, driver)
    assert report["status"]["status"] == "completed", report["status"]
    replacement = set(report["nodes_at_end"]) - set(report["nodes"])
    assert replacement & set(report["placements"].values()), "no work ran on the new node"
    assert len(report["placements"]) == 2 * report["status"]["segments_total"]

    from tests.jobclient import result, submit, wait_done

    job = submit(http, audio, diarize=True, segment_s=10)
    assert wait_done(http, job)["status"] == "completed"
    single = result(http, job)

    def words(res: dict) -> list[str]:
        return [w["text"].strip().lower() for s in res["segments"] for w in s["words"]]

    assert words(report["result"]) == words(single)
    assert len(report["result"]["speakers"]) == len(single["speakers"])
