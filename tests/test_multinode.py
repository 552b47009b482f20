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


@pytest.fixture()
def two_nodes(tmp_path):
    port = _free_port()
    head = _start(
        tmp_path / "head.log",
        "--head",
        f"--port={port}",
        "--node-ip-address=127.0.0.1",
        "--num-cpus=2",
        "--num-gpus=0",
        "--include-dashboard=false",
        '--resources={"head": 1}',
    )
    time.sleep(3)
    worker = _start(
        tmp_path / "worker.log",
        f"--address=127.0.0.1:{port}",
        "--node-ip-address=127.0.0.1",
        "--num-cpus=2",
        "--num-gpus=2",
        '--resources={"gpu_worker": 1}',
    )
    try:
        yield f"127.0.0.1:{port}"
    finally:
        _stop(worker)
        _stop(head)


def test_job_segments_run_on_both_nodes(two_nodes, redis_server, tmp_path):
    rec = meeting(24, seed=13)
    audio = write_wav(rec.audio, tmp_path / "meeting.wav")
    proc = subprocess.run(
        [
            sys.executable,
            str(Path(__file__).with_name("multinode_driver.py")),
            two_nodes,
            str(_free_port()),
            redis_server.url,
            str(tmp_path / "data"),
            str(audio),
        ],
        capture_output=True,
        text=True,
        timeout=480,
        env={**ENV, "RAY_ADDRESS": two_nodes},
    )
    logs = "".join(p.read_text()[-1500:] for p in tmp_path.glob("*.log"))
    assert proc.returncode == 0, proc.stderr[-3000:] + logs
    from tests.multinode_driver import REPORT_PREFIX

    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith(REPORT_PREFIX)]
    assert lines, proc.stdout[-3000:] + proc.stderr[-3000:] + logs
    report = json.loads(lines[-1].removeprefix(REPORT_PREFIX))
    assert len(report["nodes"]) == 2
    gpu_nodes = {n for n, res in report["nodes"].items() if res.get("GPU")}
    assert report["status"]["status"] == "completed", report["status"]
    assert report["status"]["segments_total"] >= 6
    transcribed_on = {node for key, node in report["placements"].items() if key.endswith(":t")}
    diarized_on = {node for key, node in report["placements"].items() if key.endswith(":d")}
    assert transcribed_on == set(report["nodes"]), "segments did not run on both nodes"
    assert diarized_on <= gpu_nodes and diarized_on  # the GPU replica sat on the GPU worker
