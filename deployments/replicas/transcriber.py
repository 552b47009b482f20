"""Ray Serve deployment: faster-whisper speech-to-text with word timestamps.

Concurrent calls are gathered by `@serve.batch` and decoded together (see whisper_batch).
Resources (`num_cpus`, fractional `num_gpus`), autoscaling and batch knobs come from
serve_config.yaml; `reconfigure` applies batch knobs live.
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
from typing import Any

import numpy as np
from ray import serve

from deployments.core.schemas import TranscribeOptions, Transcription
from deployments.replicas.replica_info import (
    limit_threads,
    parse_options,
    replica_info,
    replica_threads,
    resolve_audio,
    served_by,
)

log = logging.getLogger(__name__)

DEFAULT_DEPLOYMENT = "Transcriber"


def deployment_name(model: str | None, default: str) -> str:
    """The Serve deployment serving `model`: `Transcriber` for the default model,
    `Transcriber-<model>` (e.g. Transcriber-tiny-en) for each other one."""
    if model is None or model == default:
        return DEFAULT_DEPLOYMENT
    return "Transcriber-" + (re.sub(r"[^A-Za-z0-9]+", "-", model).strip("-") or "model")


@serve.deployment  # sized by serve_config.yaml (serve_app/deployment_defaults.py)
class Transcriber:
    def __init__(
        self,
        model: str = "base",
        models_dir: str = "~/.cache/speech-cluster/models",
        allow_downloads: bool = False,
        device: str = "auto",
        cpu_threads: int = 0,
        batch_size: int = 8,
    ) -> None:
        from pathlib import Path

        from deployments.models.model_store import resolve_whisper
        from deployments.models.whisper_batch import WhisperBatchTranscriber

        models_path = Path(models_dir).expanduser()
        resolved = resolve_whisper(model, models_path, allow_downloads)
        self.model_name = model
        self.served_by = served_by()
        threads = cpu_threads or replica_threads()
        self.core = WhisperBatchTranscriber(
            resolved,
            device=device,
            cpu_threads=threads,
            batch_size=batch_size,
            download_root=str(models_path / "hub"),
            local_files_only=not allow_downloads,
        )
        limit_threads(threads)  # numpy's BLAS in feature extraction too
        log.info(
            "Transcriber %s on %s/%s (CUDA_VISIBLE_DEVICES=%s)",
            model,
            self.core.device,
            self.core.compute_type,
            os.environ.get("CUDA_VISIBLE_DEVICES"),
        )

    def reconfigure(self, user_config: dict[str, Any]) -> None:
        """Live batch knobs: max_batch_requests, batch_wait_timeout_s, window_batch_size."""
        if "max_batch_requests" in user_config:
            self._batched.set_max_batch_size(int(user_config["max_batch_requests"]))
        if "batch_wait_timeout_s" in user_config:
            self._batched.set_batch_wait_timeout_s(float(user_config["batch_wait_timeout_s"]))
        if "window_batch_size" in user_config:
            self.core.batch_size = int(user_config["window_batch_size"])

    async def transcribe(
        self, audio: np.ndarray, options: TranscribeOptions | dict | None = None
    ) -> Transcription:
        """Transcribe 16 kHz mono float32 audio; times are relative to its start."""
        return await self._transcribe(audio, options, self._batched)

    async def transcribe_live(
        self, audio: np.ndarray, options: TranscribeOptions | dict | None = None
    ) -> Transcription:
        """`transcribe` for a realtime session's turn: its own batches, which go before
        other work between forward passes (deployments/models/priority_gate.py)."""
        return await self._transcribe(audio, options, self._batched_live)

    async def _transcribe(self, audio, options, lane) -> Transcription:
        audio = await resolve_audio(audio)
        opts = parse_options(TranscribeOptions, options)
        # Rejected alone, before it joins a batch.
        self.core.check_language(opts.language, opts.task)
        result = await lane(audio, opts)
        if isinstance(result, Exception):  # this request's own failure, not its batch's
            raise result
        return result.model_copy(update={"served_by": self.served_by})

    @serve.batch(max_batch_size=8, batch_wait_timeout_s=0.05)
    async def _batched(
        self, audios: list[np.ndarray], options: list[TranscribeOptions]
    ) -> list[Transcription | Exception]:
        # Inference blocks for seconds; keep it off the replica's event loop.
        return await asyncio.to_thread(self.core.transcribe_many, audios, options)

    @serve.batch(max_batch_size=8, batch_wait_timeout_s=0.01)
    async def _batched_live(
        self, audios: list[np.ndarray], options: list[TranscribeOptions]
    ) -> list[Transcription | Exception]:
        return await asyncio.to_thread(self.core.transcribe_many, audios, options, True)

    def info(self) -> dict[str, Any]:
        return replica_info(
            model=self.model_name,
            device=self.core.device,
            compute_type=self.core.compute_type,
            languages=self.core.languages,
            multilingual=self.core.multilingual,
        )

    def check_health(self) -> None:
        if self.core.model is None:
            raise RuntimeError("model not loaded")
