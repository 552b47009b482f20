"""faster-whisper inference that batches 30 s windows from many requests into one pass.

Each request is cut into windows at silences (Silero VAD). The windows of all requests in a
batch are laid end to end in one buffer and decoded together by `BatchedInferencePipeline`
with explicit clip timestamps; results are then mapped back to their request. One decoder
pass over several requests keeps the CPU/GPU busy between calls.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from deployments.schemas import (
    SAMPLE_RATE,
    InputRejected,
    TranscribeOptions,
    Transcription,
    TranscriptSegment,
    Word,
)

log = logging.getLogger(__name__)

WINDOW_S = 30.0


def pick_device(requested: str) -> tuple[str, str]:
    """(device, compute_type): CUDA with float16 when a GPU is visible, else CPU int8."""
    import ctranslate2

    if requested == "cpu":
        return "cpu", "int8"
    has_gpu = ctranslate2.get_cuda_device_count() > 0
    if requested == "cuda" and not has_gpu:
        raise RuntimeError(
            f"device='cuda' was requested but no CUDA device is visible "
            f"(CUDA_VISIBLE_DEVICES={os.environ.get('CUDA_VISIBLE_DEVICES')!r})"
        )
    return ("cuda", "float16") if has_gpu else ("cpu", "int8")


def speech_windows(audio: np.ndarray, vad_filter: bool) -> list[tuple[int, int]]:
    """Sample ranges of at most 30 s that start and end in silence where VAD allows."""
    n = len(audio)
    limit = int(WINDOW_S * SAMPLE_RATE)
    if not vad_filter:
        return [(s, min(s + limit, n)) for s in range(0, n, limit)]
    from faster_whisper.vad import VadOptions, get_speech_timestamps

    speech = get_speech_timestamps(
        audio, VadOptions(max_speech_duration_s=WINDOW_S - 1, min_silence_duration_ms=160)
    )
    windows: list[tuple[int, int]] = []
    for region in speech:
        start, end = int(region["start"]), int(region["end"])
        if windows and end - windows[-1][0] <= limit:
            windows[-1] = (windows[-1][0], end)
        else:
            windows.append((start, end))
    return windows


@dataclass
class _Placed:
    request: int
    offset: int  # where this request's audio starts in the shared buffer (samples)


class WhisperBatchTranscriber:
    """Plain (Ray-free) batched transcriber around one loaded WhisperModel."""

    def __init__(
        self,
        model_path: str,
        device: str = "auto",
        cpu_threads: int = 0,
        batch_size: int = 8,
        download_root: str | None = None,
        local_files_only: bool = True,
    ) -> None:
        from faster_whisper import BatchedInferencePipeline, WhisperModel

        self.device, self.compute_type = pick_device(device)
        self.model = WhisperModel(
            model_path,
            device=self.device,
            compute_type=self.compute_type,
            cpu_threads=cpu_threads,
            download_root=download_root,
            local_files_only=local_files_only,
        )
        self.pipeline = BatchedInferencePipeline(self.model)
        self.batch_size = batch_size

    @property
    def multilingual(self) -> bool:
        return bool(self.model.model.is_multilingual)

    @property
    def languages(self) -> list[str]:
        return list(self.model.supported_languages)

    def check_language(self, language: str | None) -> None:
        """An unknown code is the caller's error, caught before it can join a batch."""
        if language is not None and language not in self.languages:
            allowed = ", ".join(self.languages)
            raise InputRejected(f"language {language!r} is not one of this model's: {allowed}")

    def _language(self, audio: np.ndarray, options: TranscribeOptions) -> tuple[str, float]:
        if options.language:
            return options.language, 1.0
        if not self.multilingual:
            return "en", 1.0
        language, probability, _ = self.model.detect_language(audio)
        return language, float(probability)

    def transcribe_many(
        self, audios: Sequence[np.ndarray], options: Sequence[TranscribeOptions]
    ) -> list[Transcription | Exception]:
        """Transcribe several requests; those with equal options share decoder batches.

        One request's failure is its own: a failed shared batch is redone one request at a
        time, and each gets its own result or exception.
        """
        results: list[Transcription | Exception | None] = [None] * len(audios)
        languages: list[tuple[str, float] | None] = [None] * len(audios)
        for i, (audio, opt) in enumerate(zip(audios, options, strict=True)):
            try:
                self.check_language(opt.language)
                languages[i] = self._language(audio, opt)
            except Exception as exc:
                results[i] = exc
        groups: dict[tuple, list[int]] = {}
        for i, (opt, lang) in enumerate(zip(options, languages, strict=True)):
            if lang is not None:
                groups.setdefault((opt, lang[0]), []).append(i)
        for (opt, lang), members in groups.items():
            try:
                decoded = self._decode_group([audios[i] for i in members], opt, lang)
            except Exception as exc:
                log.warning("a batch of %d failed; redoing it one by one", len(members))
                for i in members:
                    one = len(members) == 1
                    results[i] = exc if one else self._decode_one(audios[i], opt, languages[i])
                continue
            for i, segs in zip(members, decoded, strict=True):
                results[i] = self._result(audios[i], segs, languages[i])
        return [r if r is not None else RuntimeError("no result") for r in results]

    def _decode_one(self, audio, opt, language) -> Transcription | Exception:
        try:
            segs = self._decode_group([audio], opt, language[0])[0]
        except Exception as exc:
            log.exception("transcription failed")
            return exc
        return self._result(audio, segs, language)

    @staticmethod
    def _result(audio, segs, language) -> Transcription:
        return Transcription(
            language=language[0],
            language_probability=language[1],
            duration=len(audio) / SAMPLE_RATE,
            segments=segs,
        )

    def _decode_group(
        self, audios: list[np.ndarray], opt: TranscribeOptions, language: str
    ) -> list[list[TranscriptSegment]]:
        clips: list[dict[str, float]] = []
        placed: list[_Placed] = []
        offset = 0
        for i, audio in enumerate(audios):
            placed.append(_Placed(i, offset))
            for start, end in speech_windows(audio, opt.vad_filter):
                clips.append(
                    {"start": (offset + start) / SAMPLE_RATE, "end": (offset + end) / SAMPLE_RATE}
                )
            offset += len(audio)
        out: list[list[TranscriptSegment]] = [[] for _ in audios]
        if not clips:
            return out
        buffer = np.concatenate(audios).astype(np.float32, copy=False)
        segments, _ = self.pipeline.transcribe(
            buffer,
            language=language,
            clip_timestamps=clips,
            batch_size=self.batch_size,
            beam_size=opt.beam_size,
            word_timestamps=opt.word_timestamps,
            initial_prompt=opt.initial_prompt,
            temperature=opt.temperature,
            without_timestamps=True,
            vad_filter=False,
        )
        starts = np.array([p.offset for p in placed]) / SAMPLE_RATE
        for seg in segments:
            # Owner by the segment's midpoint: its start is rounded to 1 ms, so a clip that
            # begins at a request's first sample can round to just before that request.
            owner = int(np.searchsorted(starts, (seg.start + seg.end) / 2, side="right") - 1)
            base = starts[owner]
            duration = len(audios[owner]) / SAMPLE_RATE
            out[owner].append(_to_segment(seg, base, duration))
        return out


def _clamp(t: float, duration: float) -> float:
    return round(min(max(t, 0.0), duration), 3)


def _to_segment(seg, base: float, duration: float) -> TranscriptSegment:
    words = [
        Word(
            start=_clamp(w.start - base, duration),
            end=_clamp(w.end - base, duration),
            text=w.word,
            probability=min(max(float(w.probability), 0.0), 1.0),
        )
        for w in (seg.words or [])
    ]
    start, end = _clamp(seg.start - base, duration), _clamp(seg.end - base, duration)
    if words:  # keep segment bounds consistent with the words they hold
        start, end = min(start, words[0].start), max(end, words[-1].end)
    return TranscriptSegment(
        start=start,
        end=end,
        text=seg.text.strip(),
        words=words,
        avg_logprob=float(seg.avg_logprob),
        no_speech_prob=float(seg.no_speech_prob),
    )
