"""Ray Serve deployment: speaker diarization (who spoke when) with per-speaker embeddings.

The default backend is offline (segmentation-3.0 + CAM++, see the diarization package). A
pyannote hub pipeline can be configured instead; it needs downloads and a token.
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import Any

import numpy as np
from ray import serve

from deployments.core.schemas import (
    SAMPLE_RATE,
    Diarization,
    DiarizeOptions,
    InputRejected,
    SpeakerChanges,
    SpeakerTrack,
    SpeakerTurn,
    VoiceSample,
    voice_sample,
)
from deployments.models.model_store import (
    BUNDLED_DIARIZER,
    ModelUnavailableError,
    resolve_bundled_diarization,
)
from deployments.models.priority_gate import AsyncPriorityLock
from deployments.replicas.replica_info import (
    limit_threads,
    parse_options,
    replica_info,
    replica_threads,
    resolve_audio,
    served_by,
)

log = logging.getLogger(__name__)


class HubPipelineDiarizer:
    """Adapter for a pyannote.audio hub pipeline (e.g. speaker-diarization-community-1)."""

    def __init__(self, name: str, token: str | None, device: str) -> None:
        import torch

        from deployments.models.quiet import silence_torchcodec_warning

        silence_torchcodec_warning()
        from pyannote.audio import Pipeline

        self.pipeline = Pipeline.from_pretrained(name, token=token)
        if self.pipeline is None:
            raise ModelUnavailableError(f"pyannote pipeline {name!r} could not be loaded")
        self.pipeline.to(torch.device(device))

    def __call__(self, audio: np.ndarray, options: DiarizeOptions) -> Diarization:
        import torch

        output = self.pipeline(
            {"waveform": torch.from_numpy(audio)[None], "sample_rate": SAMPLE_RATE},
            num_speakers=options.num_speakers,
            min_speakers=options.min_speakers,
            max_speakers=options.max_speakers,
        )
        labels = output.speaker_diarization.labels()
        vectors = np.asarray(output.speaker_embeddings, dtype=np.float64)
        norms = np.linalg.norm(vectors, axis=1, keepdims=True)
        vectors = vectors / np.where(norms > 0, norms, 1.0)

        def turns(annotation) -> list[SpeakerTurn]:
            return [
                SpeakerTurn(start=s.start, end=s.end, speaker=str(label))
                for s, _, label in annotation.itertracks(yield_label=True)
            ]

        exclusive = turns(output.exclusive_speaker_diarization)
        all_turns = turns(output.speaker_diarization)
        names = [str(label) for label in labels]
        # One track per speaker, so the job manager links segments as for the bundled model.
        tracks = [
            SpeakerTrack(
                id=i,
                speaker=name,
                embedding=vectors[i].tolist(),
                weight=sum(t.end - t.start for t in exclusive if t.speaker == name),
                cannot_link=[j for j in range(len(names)) if j != i],
                turns=[(t.start, t.end) for t in all_turns if t.speaker == name],
                exclusive_turns=[(t.start, t.end) for t in exclusive if t.speaker == name],
            )
            for i, name in enumerate(names)
        ]
        return Diarization(
            duration=len(audio) / SAMPLE_RATE,
            turns=all_turns,
            exclusive_turns=exclusive,
            speakers=names,
            embeddings={n: v.tolist() for n, v in zip(names, vectors, strict=True)},
            tracks=tracks,
        )


def load_diarizer(
    model: str,
    models_dir: Path,
    allow_downloads: bool,
    hf_token: str | None,
    device: str,
    threads: int,
    step: float | None = None,
    half: bool = False,
):
    import torch

    torch.set_num_threads(threads)
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if half and not device.startswith("cuda"):
        log.warning("diarization_half applies on CUDA only: %s runs float32", device)
        half = False
    if model == BUNDLED_DIARIZER:
        from deployments.models.diarization.pipeline import SEGMENTATION_STEP, SpeakerDiarizer

        segmentation, embedding = resolve_bundled_diarization(models_dir)
        return SpeakerDiarizer(
            segmentation,
            embedding,
            device=device,
            num_threads=threads,
            step=step or SEGMENTATION_STEP,
            half=half,
        )
    if not allow_downloads or not hf_token:
        raise ModelUnavailableError(
            f"Diarization model {model!r} comes from the Hugging Face hub: set "
            "SPEECH_ALLOW_DOWNLOADS=true and SPEECH_HF_TOKEN on a machine with internet "
            "access, or use diarization_model='bundled' (offline)."
        )
    return HubPipelineDiarizer(model, hf_token, device)


def _rejected_or(seconds: float, fn, *args):
    """`fn(*args)`, or InputRejected when the audio (`seconds` long) is what fails: the same
    audio and options fail again, so the caller should not retry."""
    try:
        return fn(*args)
    except (ValueError, IndexError) as exc:
        log.exception("diarizer failed on %.1f s of audio", seconds)
        return InputRejected(
            "the diarizer could not process this audio "
            f"({type(exc).__name__}; details are in the replica log)"
        )


@serve.deployment  # sized by serve_config.yaml (serve_app/deployment_defaults.py)
class Diarizer:
    def __init__(
        self,
        model: str = BUNDLED_DIARIZER,
        models_dir: str = "~/.cache/speech-cluster/models",
        allow_downloads: bool = False,
        hf_token: str | None = None,
        device: str = "auto",
        cpu_threads: int = 0,
        segmentation_step: float | None = None,
        half: bool = False,
    ) -> None:
        self.model_name = model
        self.served_by = served_by()
        self.threads = cpu_threads or replica_threads()
        self.backend = load_diarizer(
            model,
            Path(models_dir).expanduser(),
            allow_downloads,
            hf_token,
            device,
            self.threads,
            segmentation_step,
            half,
        )
        limit_threads(self.threads)  # numpy's BLAS in the clustering too
        # One inference at a time per replica: torch already uses every reserved thread.
        # Realtime turns' voiceprints go first (priority_gate).
        self._lock = AsyncPriorityLock()
        self.largest_batch = 0

    def reconfigure(self, user_config: dict[str, Any]) -> None:
        """Live batch knobs: max_batch_requests (segments per model call),
        batch_wait_timeout_s, window_batch_size (segmentation windows per forward pass)."""
        if "max_batch_requests" in user_config:
            self._batched.set_max_batch_size(int(user_config["max_batch_requests"]))
        if "batch_wait_timeout_s" in user_config:
            self._batched.set_batch_wait_timeout_s(float(user_config["batch_wait_timeout_s"]))
        if "window_batch_size" in user_config and hasattr(self.backend, "segmenter"):
            self.backend.segmenter.batch_size = int(user_config["window_batch_size"])

    async def diarize(
        self, audio: np.ndarray, options: DiarizeOptions | dict | None = None
    ) -> Diarization:
        """Diarize 16 kHz mono float32 audio; times are relative to its start."""
        audio = await resolve_audio(audio)
        opts = parse_options(DiarizeOptions, options)
        result = await self._batched(audio, opts)
        if isinstance(result, Exception):  # this request's own failure, not its batch's
            raise result
        return result.model_copy(update={"served_by": self.served_by})

    @serve.batch(max_batch_size=1, batch_wait_timeout_s=0.0)
    async def _batched(
        self, audios: list[np.ndarray], options: list[DiarizeOptions]
    ) -> list[Diarization | Exception]:
        """Segments of any jobs that arrive together share the models' forward passes."""
        self.largest_batch = max(self.largest_batch, len(audios))
        async with self._lock.hold():
            return await asyncio.to_thread(self._diarize_many, audios, options)

    def _diarize_many(self, audios, options) -> list[Diarization | Exception]:
        if len(audios) > 1 and hasattr(self.backend, "analyse_many"):
            try:
                analyses = self.backend.analyse_many(audios)
            except (ValueError, IndexError):  # one bad segment: find it, alone
                log.warning("a batch of %d segments failed; diarizing each alone", len(audios))
            else:
                return [
                    _rejected_or(len(x) / SAMPLE_RATE, self.backend.finish, a, o)
                    for a, o, x in zip(analyses, options, audios, strict=True)
                ]
        return [
            _rejected_or(len(a) / SAMPLE_RATE, self.backend, a, o)
            for a, o in zip(audios, options, strict=True)
        ]

    async def changes(self, audio: np.ndarray, options: Any = None) -> SpeakerChanges:
        """Where the voice changes in 16 kHz mono float32 audio (segmentation only with the
        bundled model; a hub pipeline diarizes). `options` is accepted and unused."""
        audio = await resolve_audio(audio)
        if hasattr(self.backend, "speaker_changes"):
            turns = await self._run(self.backend.speaker_changes, audio)
        else:
            turns = (await self._run(self.backend, audio, DiarizeOptions())).exclusive_turns
        duration = len(audio) / SAMPLE_RATE
        return SpeakerChanges(served_by=self.served_by, duration=duration, turns=turns)

    async def _run(self, fn, audio: np.ndarray, *args):
        async with self._lock.hold():
            result = await asyncio.to_thread(
                _rejected_or, len(audio) / SAMPLE_RATE, fn, audio, *args
            )
        if isinstance(result, Exception):
            raise result
        return result

    async def voiceprint(self, audio: np.ndarray) -> VoiceSample:
        """The main voice of a short sample (speaker enrollment): its embedding and how much
        speech of it, and of any other voice, the sample holds."""
        return voice_sample(await self.diarize(audio, DiarizeOptions()))

    async def voiceprint_live(self, audio: np.ndarray) -> VoiceSample:
        """`voiceprint` of a realtime turn: it waits only for the call in progress, not
        behind queued job segments."""
        audio = await resolve_audio(audio)
        async with self._lock.hold(live=True):
            result = await asyncio.to_thread(
                _rejected_or, len(audio) / SAMPLE_RATE, self.backend, audio, DiarizeOptions()
            )
        if isinstance(result, Exception):
            raise result
        return voice_sample(result)

    def info(self) -> dict[str, Any]:
        embedder = getattr(self.backend, "embedder", None)
        return replica_info(
            model=self.model_name,
            threads=self.threads,
            largest_batch=self.largest_batch,
            embedding_dtype=str(embedder.dtype).removeprefix("torch.") if embedder else None,
        )
