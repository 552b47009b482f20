"""Job metrics end to end: one real job, then a scrape of Ray's Prometheus endpoint.

The job manager records through ray.util.metrics (jobs/integrations/metrics.py); the node's
metrics agent exports them every few seconds on its metrics export port, prefixed with ``ray_``. The
Grafana dashboard's queries must name series this scrape actually shows.
"""

from __future__ import annotations

import json
import re
import time
from collections import defaultdict
from pathlib import Path

import httpx
import pytest

from tests.jobclient import submit, wait_done
from tests.synth import meeting, write_wav

pytestmark = [pytest.mark.ray, pytest.mark.models]

DASHBOARD = Path(__file__).resolve().parents[1] / "deploy" / "grafana" / "speech-cluster.json"

Samples = dict[str, list[tuple[dict[str, str], float]]]


def metrics_urls() -> list[str]:
    import ray

    return [
        f"http://{node['NodeManagerAddress']}:{node['MetricsExportPort']}/metrics"
        for node in ray.nodes()
        if node["Alive"] and node.get("MetricsExportPort")
    ]


def scrape() -> Samples:
    """Every ``ray_speech_*`` sample on every live node: name -> [(labels, value)]."""
    from prometheus_client.parser import text_string_to_metric_families

    samples: Samples = defaultdict(list)
    for url in metrics_urls():
        text = httpx.get(url, timeout=10).text
        for family in text_string_to_metric_families(text):
            for s in family.samples:
                if s.name.startswith("ray_speech_"):
                    samples[s.name].append((s.labels, s.value))
    return samples


def total(samples: Samples, name: str, **labels: str) -> float:
    return sum(
        v for lbl, v in samples.get(name, []) if all(lbl.get(k) == x for k, x in labels.items())
    )


def test_job_metrics_reach_the_prometheus_endpoint(http, tmp_path):
    rec = meeting(6, seed=3)
    path = write_wav(rec.audio, tmp_path / "short.wav")
    status = wait_done(http, submit(http, path, diarize=True, segment_s=10), timeout_s=300)
    assert status["status"] == "completed", status
    duration, n_segments = status["duration"], status["segments_total"]
    assert duration and n_segments >= 1, status

    def problems(s: Samples) -> list[str]:
        checks = {
            "jobs submitted >= 1": total(s, "ray_speech_jobs_submitted_total") >= 1,
            "jobs completed >= 1": total(s, "ray_speech_jobs_finished_total", status="completed")
            >= 1,
            # Per-segment audio, summed: allow for a segment boundary's rounding.
            f"audio seconds >= {duration:.2f}": total(s, "ray_speech_audio_seconds_processed_total")
            >= duration * 0.99,
            "job latency observed": total(
                s, "ray_speech_job_latency_seconds_count", status="completed"
            )
            >= 1,
            "realtime factor observed and > 0": total(s, "ray_speech_job_realtime_factor_count")
            >= 1
            and total(s, "ray_speech_job_realtime_factor_sum") > 0,
            "segments processed": all(
                total(s, "ray_speech_segments_processed_total", part=part) >= n_segments
                for part in ("transcribe", "diarize")
            ),
            "segment latency count >= segments": all(
                total(s, "ray_speech_segment_latency_seconds_count", part=part) >= n_segments
                for part in ("transcribe", "diarize")
            ),
            "gauges present": all(
                name in s
                for name in (
                    "ray_speech_jobs_queued",
                    "ray_speech_jobs_running",
                    "ray_speech_segments_inflight",
                )
            ),
        }
        return [name for name, ok in checks.items() if not ok]

    # The metrics agent exports on an interval (10 s by default): poll for up to a minute.
    deadline, samples, missing = time.monotonic() + 60, {}, ["not scraped yet"]
    while time.monotonic() < deadline:
        samples = scrape()
        missing = problems(samples)
        if not missing:
            break
        time.sleep(2)
    summary = {name: [v for _, v in rows] for name, rows in samples.items() if "bucket" not in name}
    assert not missing, f"{missing}; scraped: {summary}"

    for name in ("ray_speech_jobs_queued", "ray_speech_jobs_running"):
        assert all(v >= 0 for _, v in samples[name]), samples[name]
    assert all(v >= 0 for _, v in samples["ray_speech_segments_inflight"])
    # Histograms export cumulative buckets with +Inf equal to the count.
    inf = total(samples, "ray_speech_job_realtime_factor_bucket", le="+Inf")
    assert inf == total(samples, "ray_speech_job_realtime_factor_count")
    print(f"scraped after the job: {json.dumps(summary, sort_keys=True)}")

    # Every series the Grafana dashboard queries is one Ray actually exports.
    exprs = [t["expr"] for p in json.loads(DASHBOARD.read_text())["panels"] for t in p["targets"]]
    queried = {m for e in exprs for m in re.findall(r"\bray_speech_[a-z_]+", e)}
    assert queried, "dashboard queries no speech metrics"
    # A counter's series appears on its first increment: no retry happened in this job.
    exported = set(samples) | {"ray_speech_segments_retried_total"}
    assert queried <= exported, f"dashboard names unknown series: {queried - exported}"
