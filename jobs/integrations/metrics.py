"""Job and segment metrics through Ray's metrics API, scraped from each node's metrics port.

The metric objects are created lazily, once per process, on the first recording call made
inside a connected Ray process (the job manager replica); outside Ray every function here is a
no-op. A metrics failure never reaches the caller: metrics must not break a job.

In Prometheus, Ray prefixes every name with ``ray_``; counters gain ``_total`` and
histograms ``_bucket``/``_sum``/``_count`` (see deploy/grafana/speech-cluster.json):

=====================================  ===========  ==============================
ray.util.metrics name                  type         tags
=====================================  ===========  ==============================
speech_jobs_submitted                  counter      -
speech_jobs_finished                   counter      status: completed|failed|cancelled
speech_segments_processed              counter      part: transcribe|diarize
speech_segments_retried                counter      part
speech_audio_seconds_processed         counter      - (transcribed segment audio)
speech_job_latency_seconds             histogram    status (created -> finished)
speech_segment_latency_seconds         histogram    part (one successful model call)
speech_job_realtime_factor             histogram    - (audio s / processing wall s)
speech_jobs_queued                     gauge        -
speech_jobs_running                    gauge        -
speech_segments_inflight               gauge        -
=====================================  ===========  ==============================
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

log = logging.getLogger(__name__)

PART_NAMES = {"t": "transcribe", "d": "diarize"}

JOB_LATENCY_BUCKETS = [
    1, 2, 5, 10, 20, 30, 60, 120, 300, 600, 1200, 1800, 3600, 7200, 14400, 21600, 43200,
]  # fmt: skip
SEGMENT_LATENCY_BUCKETS = [0.1, 0.25, 0.5, 1, 2, 3, 5, 7.5, 10, 15, 20, 30, 45, 60, 120, 300]
REALTIME_FACTOR_BUCKETS = [0.1, 0.25, 0.5, 0.75, 1, 1.5, 2, 3, 5, 7.5, 10, 15, 20, 30, 50, 100, 200]

_lock = threading.Lock()
_metrics: dict[str, Any] | None = None
_warned = False
_inflight = 0


def _create() -> dict[str, Any]:
    from ray.util.metrics import Counter, Gauge, Histogram

    return {
        "submitted": Counter("speech_jobs_submitted", "Jobs accepted and queued."),
        "finished": Counter(
            "speech_jobs_finished",
            "Jobs that reached a terminal state, by status.",
            tag_keys=("status",),
        ),
        "segments": Counter(
            "speech_segments_processed",
            "Segment model calls that succeeded, by part.",
            tag_keys=("part",),
        ),
        "retried": Counter(
            "speech_segments_retried",
            "Segment model calls that failed and were retried, by part.",
            tag_keys=("part",),
        ),
        "audio": Counter(
            "speech_audio_seconds_processed", "Seconds of audio transcribed (per segment)."
        ),
        "job_latency": Histogram(
            "speech_job_latency_seconds",
            "Seconds from job creation to its terminal state, by status.",
            boundaries=JOB_LATENCY_BUCKETS,
            tag_keys=("status",),
        ),
        "segment_latency": Histogram(
            "speech_segment_latency_seconds",
            "Seconds per successful segment model call, by part.",
            boundaries=SEGMENT_LATENCY_BUCKETS,
            tag_keys=("part",),
        ),
        "rtf": Histogram(
            "speech_job_realtime_factor",
            "Completed jobs: audio seconds / processing wall seconds (started -> finished).",
            boundaries=REALTIME_FACTOR_BUCKETS,
        ),
        "queued": Gauge("speech_jobs_queued", "Jobs waiting for a job slot."),
        "running": Gauge("speech_jobs_running", "Jobs holding a job slot."),
        "inflight": Gauge("speech_segments_inflight", "Segments sent to the model replicas."),
    }


def _get() -> dict[str, Any] | None:
    """The process's metric objects; None outside a connected Ray process."""
    global _metrics, _warned
    if _metrics is not None:
        return _metrics
    with _lock:
        if _metrics is None:
            try:
                import ray

                if not ray.is_initialized():
                    return None
                _metrics = _create()
            except Exception:
                if not _warned:
                    _warned = True
                    log.warning("metrics unavailable", exc_info=True)
                return None
    return _metrics


def _safe(fn):
    def wrapper(*args, **kwargs) -> None:
        global _warned
        try:
            m = _get()
            if m is not None:
                fn(m, *args, **kwargs)
        except Exception:
            if not _warned:
                _warned = True
                log.warning("recording metric %s failed", fn.__name__, exc_info=True)

    wrapper.__name__ = wrapper.__qualname__ = fn.__name__
    wrapper.__doc__ = fn.__doc__
    return wrapper


def _part(part: str) -> str:
    return PART_NAMES.get(part, part)


@_safe
def job_submitted(m) -> None:
    m["submitted"].inc()


@_safe
def job_finished(m, record) -> None:
    """A job reached a terminal state: count it; latency, and realtime factor if completed."""
    status = getattr(record.status, "value", str(record.status))
    m["finished"].inc(tags={"status": status})
    finished = record.finished_at or time.time()
    m["job_latency"].observe(max(0.0, finished - record.created_at), tags={"status": status})
    if status == "completed" and record.duration:
        wall = finished - (record.started_at or record.created_at)
        if wall > 0:
            m["rtf"].observe(record.duration / wall)


@_safe
def segment_done(m, part: str, seconds: float, audio_s: float = 0.0) -> None:
    """One successful model call for a segment; audio seconds count for transcription only."""
    m["segments"].inc(tags={"part": _part(part)})
    m["segment_latency"].observe(max(0.0, seconds), tags={"part": _part(part)})
    if audio_s > 0 and _part(part) == "transcribe":
        m["audio"].inc(audio_s)


@_safe
def segment_retry(m, part: str) -> None:
    m["retried"].inc(tags={"part": _part(part)})


@_safe
def set_inflight(m, n: int) -> None:
    m["inflight"].set(max(0, n))


def inflight_add(delta: int) -> None:
    """Adjust this process's in-flight segment count and publish it."""
    global _inflight
    _inflight = max(0, _inflight + delta)
    set_inflight(_inflight)


@_safe
def set_jobs(m, queued: int, running: int) -> None:
    m["queued"].set(max(0, queued))
    m["running"].set(max(0, running))
