"""Shared pieces of the benchmark scripts: options, settings, recordings, in-process
baselines and result tables (the private cluster and the memory sampler are in cluster.py).

Every script runs the cluster and its baselines in the same run on the same machine, so
CPU numbers are meant to be read as ratios.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import platform
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
import psutil

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from deployments.core.schemas import SAMPLE_RATE
from serve_app.deployment_defaults import SERVE_CONFIG, config_deployments
from tests.realvoices import real_speech  # noqa: F401  (the benches' real speech)
from tests.synth import Recording, concat, meeting

DEFAULT_CONFIG = SERVE_CONFIG  # what `serve run` deploys

PORT = 28000  # the test suite uses 18000 (and Redis 16379)
MIB = 2**20
SECONDS_PER_TURN = 4.0  # rough length of one synthetic turn (sentence + pause)


def log(message: str) -> None:
    """Progress goes to stderr so stdout holds only the result tables."""
    print(message, file=sys.stderr, flush=True)


class _Help(argparse.RawDescriptionHelpFormatter, argparse.ArgumentDefaultsHelpFormatter):
    pass


def make_parser(doc: str | None) -> argparse.ArgumentParser:
    """An argument parser whose --help shows the script's docstring and every default."""
    return argparse.ArgumentParser(description=doc, formatter_class=_Help)


def add_common_args(parser: argparse.ArgumentParser, threads: int | None = None) -> None:
    """Options every script shares (model, GPU share, threads, port, JSON output)."""
    group = parser.add_argument_group("cluster and models")
    group.add_argument(
        "--whisper-model",
        help="Whisper model of the cluster and the baselines (unset: SPEECH_WHISPER_MODEL "
        "or base; hub names such as large-v3 need SPEECH_ALLOW_DOWNLOADS=true)",
    )
    group.add_argument(
        "--num-gpus",
        type=float,
        default=0.0,
        help="GPU share per transcriber replica, e.g. 0.5 (0: CPU)",
    )
    group.add_argument(
        "--diarizer-num-gpus",
        type=float,
        default=0.0,
        help="GPU share per diarizer replica, e.g. 0.25 (0: CPU)",
    )
    group.add_argument(
        "--threads",
        type=int,
        default=threads or os.cpu_count(),
        help="CPU threads of the in-process baselines",
    )
    group.add_argument(
        "--replica-threads",
        type=int,
        default=0,
        help="CPU threads per replica (Settings.cpu_threads; 0 = its num_cpus, 1)",
    )
    group.add_argument(
        "--ray-cpus",
        type=int,
        help="logical CPUs of the private Ray cluster (unset: the machine's cores, "
        "raised to what the replicas ask for)",
    )
    group.add_argument("--language", default="en", help="language of every request")
    group.add_argument("--port", type=int, default=PORT, help="Serve HTTP port")
    group.add_argument("--json", type=Path, metavar="PATH", help="also write results as JSON")


def bench_settings(data_dir: Path, args: argparse.Namespace):
    """Settings for a private app: its own data dir and embedded Redis, bundled models dir."""
    from serve_app.settings import Settings

    model = {"whisper_model": args.whisper_model} if args.whisper_model else {}
    return Settings(
        data_dir=data_dir,
        models_dir=Settings().resolved_models_dir,
        redis_url=None,  # never an outside Redis, even if REDIS_URL is set
        cpu_threads=args.replica_threads,
        **model,
    )


def replica_options(num_gpus: float, replicas: int | None = None) -> dict[str, Any]:
    """Deployment overrides: a GPU share (with 1 CPU) and/or a fixed replica count."""
    options: dict[str, Any] = {}
    if num_gpus:
        options["ray_actor_options"] = {"num_cpus": 1, "num_gpus": num_gpus}
    if replicas:
        options |= {"num_replicas": replicas, "autoscaling_config": None}
    return options


def deployment_options(args: argparse.Namespace, transcribers: int | None = None) -> dict:
    """`Cluster.deploy` keyword arguments from --num-gpus / --diarizer-num-gpus."""
    return {
        "transcriber": replica_options(args.num_gpus, transcribers),
        "diarizer": replica_options(args.diarizer_num_gpus),
    }


@lru_cache
def _block(turns: int, seed: int) -> Recording:
    return meeting(turns, seed=seed)


def build_recording(minutes: float, seed: int = 1) -> Recording:
    """A three-voice meeting of about `minutes`, cut between turns so the reference is exact.

    Longer recordings repeat one ~10 min block (150 turns), as bench/long_job.py always did.
    """
    target = minutes * 60
    block = _block(max(2, min(150, math.ceil(target / SECONDS_PER_TURN) + 1)), seed)
    rec = concat(*[block] * max(1, math.ceil(target / block.duration)))
    keep = [i for i, (_, end, _) in enumerate(rec.turns) if end <= target] or [0]
    end = min(len(rec.audio), int((rec.turns[keep[-1]][1] + 0.5) * SAMPLE_RATE))
    return Recording(rec.audio[:end], [rec.turns[i] for i in keep], [rec.texts[i] for i in keep])


def clip(seconds: float, seed: int = 7) -> np.ndarray:
    """Exactly `seconds` of synthetic speech (whole sentences, zero-padded)."""
    rec = _block(max(2, math.ceil(seconds / 3)), seed)
    n = int(seconds * SAMPLE_RATE)
    return np.pad(rec.audio[:n], (0, max(0, n - len(rec.audio))))


@contextlib.contextmanager
def workspace() -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix="speech-bench-") as tmp:
        yield Path(tmp)


def ray_cpus(args: argparse.Namespace, needed: int = 2) -> int:
    return args.ray_cpus or max(os.cpu_count() or 1, needed)


def load_whisper(settings, threads: int):
    """A faster-whisper `WhisperModel` loaded the way the Transcriber replica loads it."""
    from faster_whisper import WhisperModel

    from deployments.models.model_store import resolve_whisper
    from deployments.models.whisper_batch import pick_device

    device, compute_type = pick_device(settings.device)
    return WhisperModel(
        resolve_whisper(
            settings.whisper_model, settings.resolved_models_dir, settings.allow_downloads
        ),
        device=device,
        compute_type=compute_type,
        cpu_threads=threads,
        download_root=str(settings.resolved_models_dir / "hub"),
        local_files_only=not settings.allow_downloads,
    )


def load_core(settings, threads: int, batch_size: int | None = None):
    """The replica's own engine (`WhisperBatchTranscriber`), in this process."""
    from deployments.models.model_store import resolve_whisper
    from deployments.models.whisper_batch import WhisperBatchTranscriber

    return WhisperBatchTranscriber(
        resolve_whisper(
            settings.whisper_model, settings.resolved_models_dir, settings.allow_downloads
        ),
        device=settings.device,
        cpu_threads=threads,
        batch_size=batch_size or settings.transcriber_batch_size,
        download_root=str(settings.resolved_models_dir / "hub"),
        local_files_only=not settings.allow_downloads,
    )


def traced(fn: Callable[[], Any]) -> tuple[Any, int, float]:
    """(result, peak bytes of Python allocations, seconds) of one call of `fn`."""
    import tracemalloc

    tracemalloc.start()
    t0 = time.perf_counter()
    try:
        result = fn()
        elapsed = time.perf_counter() - t0
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    return result, peak, elapsed


def timed(fn: Callable[[], Any]) -> tuple[Any, float]:
    t0 = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t0


def machine() -> dict[str, Any]:
    """What the numbers were measured on."""
    gpus = 0
    with contextlib.suppress(Exception):
        import ctranslate2

        gpus = ctranslate2.get_cuda_device_count()
    cpu = platform.processor() or platform.machine()
    with contextlib.suppress(OSError):
        names = [ln for ln in Path("/proc/cpuinfo").read_text().splitlines() if "model name" in ln]
        cpu = names[0].split(":", 1)[1].strip() if names else cpu
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "ram_gib": round(psutil.virtual_memory().total / 2**30, 1),
        "cuda_devices": gpus,
        "python": platform.python_version(),
    }


def fmt(value: Any, digits: int = 2) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "n/a"
    return f"{value:.{digits}f}" if isinstance(value, float) else str(value)


def config_options(path: Path = DEFAULT_CONFIG) -> dict[str, dict]:
    """Deployment options of a Serve config's application, keyed by deployment name."""
    return config_deployments(path)


def default_deploy(path: Path = DEFAULT_CONFIG) -> dict[str, dict | None]:
    """`Cluster.deploy` keyword arguments that deploy the app as `serve run path` does."""
    options = config_options(path)
    models = {name: opts for name, opts in options.items() if name.startswith("Transcriber-")}
    return {
        "transcriber": options.get("Transcriber"),
        "diarizer": options.get("Diarizer"),
        "models": models,
    }


def ratio(a: float | None, b: float | None) -> float | None:
    return a / b if a is not None and b else None


def table(title: str, headers: list[str], rows: list[list[Any]], digits: int = 2) -> dict:
    """Print a markdown table to stdout and return it as a JSON-ready dict."""
    lines = [f"### {title}", "", "| " + " | ".join(headers) + " |"]
    lines.append("|" + "|".join("---" for _ in headers) + "|")
    lines += ["| " + " | ".join(fmt(c, digits) for c in row) + " |" for row in rows]
    print("\n".join(lines) + "\n", flush=True)
    return {"title": title, "rows": [dict(zip(headers, r, strict=True)) for r in rows]}


def write_json(path: Path | None, args: argparse.Namespace, tables: list[dict]) -> None:
    """With --json PATH: the tables plus the machine and the arguments that produced them."""
    if path:
        payload = {"machine": machine(), "args": vars(args), "tables": tables}
        path.write_text(json.dumps(payload, indent=2, default=str))
        log(f"wrote {path}")
