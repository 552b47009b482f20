"""What a replica knows about where it runs: node, GPUs Ray assigned, threads it may use."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
from pydantic import ValidationError

from deployments.core.schemas import InputRejected

T = TypeVar("T")


def replica_threads() -> int:
    """Compute threads matching the CPUs Ray reserved for this replica (at least 1)."""
    import ray

    try:
        cpus = ray.get_runtime_context().get_assigned_resources().get("CPU", 1.0)
    except Exception:  # not inside a Ray worker (plain tests)
        cpus = 1.0
    return max(1, round(cpus))


def limit_threads(threads: int) -> dict[str, int]:
    """Cap this process's compute thread pools at `threads`: torch's intra-op pool and every
    OpenMP and BLAS library loaded (numpy's and scipy's included, used by clustering).

    Left at their defaults each pool starts one thread per core of the machine, so replicas
    sharing it oversubscribe the cores (measured on a 16-core GPU host: 4 replicas at the
    default collapsed to a third of the throughput of 4 x 2 threads). Call it after the
    models are loaded: only libraries already loaded can be limited.
    """
    from threadpoolctl import threadpool_limits

    torch = sys.modules.get("torch")  # only where the replica uses torch
    if torch is not None:
        torch.set_num_threads(threads)
    threadpool_limits(limits=threads)
    return thread_pools()


def thread_pools() -> dict[str, int]:
    """Threads of each compute pool in this process (torch, OpenMP and BLAS libraries)."""
    from threadpoolctl import threadpool_info

    pools = {
        f"{pool['internal_api']}:{Path(pool['filepath']).name}": int(pool["num_threads"])
        for pool in threadpool_info()
    }
    torch = sys.modules.get("torch")
    if torch is not None:
        pools["torch"] = torch.get_num_threads()
    return pools


def replica_info(**extra: Any) -> dict[str, Any]:
    import ray

    ctx = ray.get_runtime_context()
    try:
        replica_id = serve_replica_id()
    except Exception:
        replica_id = None
    return {
        "node_id": ctx.get_node_id(),
        "actor_id": ctx.get_actor_id(),
        "replica_id": replica_id,
        "pid": os.getpid(),
        "gpu_ids": [str(g) for g in ray.get_gpu_ids()],
        "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES"),
        "assigned_resources": ctx.get_assigned_resources(),
        "thread_pools": thread_pools(),
        **extra,
    }


def serve_replica_id() -> str:
    from ray import serve

    return serve.get_replica_context().replica_id.unique_id


def served_by():
    """This replica's ServedBy stamp (None outside Ray Serve)."""
    import ray

    from deployments.core.schemas import ServedBy

    try:
        return ServedBy(
            node_id=ray.get_runtime_context().get_node_id(), replica_id=serve_replica_id()
        )
    except Exception:
        return None


async def resolve_audio(audio) -> np.ndarray:
    """A request's audio as flat float32: inline, or an ObjectRef into the object store."""
    import ray

    if isinstance(audio, ray.ObjectRef):
        audio = await audio
    try:
        samples = np.asarray(audio, dtype=np.float32).reshape(-1)
    except (TypeError, ValueError):
        raise InputRejected("the audio is not an array of samples") from None
    if not np.isfinite(samples).all():
        raise InputRejected("the audio holds non-finite samples (NaN or infinity)")
    return samples


def parse_options(model: type[T], options) -> T:
    """Validate request options; a bad value is the caller's error, never worth a retry."""
    try:
        return model.model_validate(options or {})
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(x) for x in first.get("loc", ())) or "options"
        raise InputRejected(f"invalid {where}: {first.get('msg', 'bad value')}") from None
