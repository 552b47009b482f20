"""Where a stretch of a recording may hold two languages: the language of each stretch of
speech on its own, and cuts between stretches sure of different ones.

A 30 s window is decoded in one language, the one its detection ranks first. When a short
turn in another language shares a window with a longer one (a meeting without diarization,
or a turn too short for the voice-change cuts), the window is sure of the longer turn's
language and the short turn comes out in it, translated or garbled. Whisper's detection on
one prompt of 1.5 s or more was right for 80 of 81 prompts of the tune voices, so each
region of speech between pauses is probed on its own (an encoder pass and a detection, no
decoding), and a cut goes where two sure regions disagree. Each window then holds one
language and is decoded in it. Cost: one encoder pass per region probed, paid only by
requests that ask for it (a job's pass over segments of a recording in several languages).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from deployments.core.window_language import SURE_PROBABILITY, parse_detection
from deployments.models.priority_gate import PriorityGate

SAMPLE_RATE = 16_000
# A region shorter than this is not probed: too little speech to tell its language.
PROBE_MIN_S = 1.0
PROBE_BATCH = 8
# The encoder is given 10 s of features, not Whisper's 30: on the 136 regions of 1 s or more
# of the tune voices' meeting (Whisper base, CPU) that took 16 s instead of 97, and the
# detections stayed as good (sure and right 115 against 121, sure and wrong 1 against 2).
PROBE_FRAMES = 1000


def region_languages(
    model,
    audio: np.ndarray,
    regions: Sequence[tuple[int, int]],
    gate: PriorityGate,
    live: bool = False,
    min_s: float = PROBE_MIN_S,
) -> list[dict[str, float] | None]:
    """Per region (samples of `audio`): its top language probabilities, or None where it is
    shorter than `min_s`. `model` is a faster_whisper WhisperModel; each batch is one pass
    through the replica's `gate` (a live request waits for one batch, not the whole probe)."""
    out: list[dict[str, float] | None] = [None] * len(regions)
    probed = [i for i, (a, b) in enumerate(regions) if b - a >= min_s * SAMPLE_RATE]
    extractor = model.feature_extractor
    at = 0
    while at < len(probed):
        size = gate.batch_size(PROBE_BATCH, live)
        batch = probed[at : at + size]
        at += size
        with gate.hold(live):
            features = np.stack([_features(extractor, audio[slice(*regions[i])]) for i in batch])
            found = model.model.detect_language(model.encode(features))
        for i, detection in zip(batch, found, strict=True):
            out[i] = parse_detection(detection)
    return out


def _features(extractor, audio: np.ndarray) -> np.ndarray:
    """Log-mel features of a region's first 10 s, padded to 10 s."""
    mel = extractor(audio[: PROBE_FRAMES * extractor.hop_length])[:, :PROBE_FRAMES]
    return np.pad(mel, ((0, 0), (0, PROBE_FRAMES - mel.shape[1]))).astype(np.float32)


def language_cuts(
    regions: Sequence[tuple[int, int]],
    detections: Sequence[dict[str, float] | None],
    candidates: Sequence[str] = (),
    threshold: float = SURE_PROBABILITY,
) -> tuple[float, ...]:
    """Seconds where the language changes: before the first region sure of a language other
    than the last sure region's, in the middle of the pause before it. Regions unsure of
    their language (or not probed) stay with what precedes them. With `candidates` (the
    languages the recording is sure of), a region sure of another language counts as unsure:
    a stray detection should not cut a turn in two."""
    cuts: list[float] = []
    last: str | None = None
    for k, ((start, _), found) in enumerate(zip(regions, detections, strict=True)):
        if not found:
            continue
        language = max(found, key=found.__getitem__)
        if found[language] < threshold or (candidates and language not in candidates):
            continue
        if last is not None and language != last:
            cuts.append(round((regions[k - 1][1] + start) / 2 / SAMPLE_RATE, 3))
        last = language
    return tuple(cuts)
