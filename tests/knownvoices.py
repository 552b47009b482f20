"""Known-speaker test material from real voices: enrollment samples a recording never uses,
and how a transcript's speaker names agree with the reference (shared by the tests and
bench/known_speakers.py)."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass

import numpy as np

from tests.realvoices import SAMPLE_RATE, RealRecording, voice_prompts

GAP_S = 0.3


def enrollment_samples(
    voice: str,
    rec: RealRecording | None,
    samples: int = 2,
    min_s: float = 4.0,
    max_s: float = 10.0,
    seed: int = 0,
) -> list[np.ndarray]:
    """`samples` clips of `voice`, each prompts joined to min_s-max_s, none of which the
    recording uses (a prompt is identified by its exact length in samples)."""
    used = {
        round((e - s) * SAMPLE_RATE) for s, e, v in (rec.prompt_spans if rec else []) if v == voice
    }
    pool = [p for p in voice_prompts(voice) if len(p.audio) not in used]
    order = np.random.default_rng(seed).permutation(len(pool))
    gap = np.zeros(round(GAP_S * SAMPLE_RATE), np.float32)
    out: list[np.ndarray] = []
    parts: list[np.ndarray] = []
    for i in order:
        audio = pool[i].audio
        if len(audio) > max_s * SAMPLE_RATE:
            continue
        size = sum(len(p) for p in parts)
        if size + len(audio) > max_s * SAMPLE_RATE:
            parts = []
        parts += [audio, gap]
        if sum(len(p) for p in parts) >= min_s * SAMPLE_RATE:
            out.append(np.concatenate(parts[:-1]))
            parts = []
            if len(out) == samples:
                return out
    raise ValueError(f"{voice}: not enough unused prompts for {samples} samples")


@dataclass
class NamingRates:
    right: float  # enrolled and present: share of their labelled speech under their name
    impostor: float  # never enrolled: share of their labelled speech under an enrolled name
    absent_named: list[str]  # enrolled, absent, yet named somewhere
    per_voice: dict[str, tuple[float, float]]  # voice -> (labelled s, of which right/wrong s)
    majority: dict[str, str]  # voice -> the label covering most of its speech


def naming_rates(
    rec: RealRecording,
    turns: list[tuple[float, float, str]],
    enrolled: dict[str, str],
) -> NamingRates:
    """Compare a result's (start, end, speaker) turns with the reference.

    Args:
        rec: the recording and its reference speech stretches.
        turns: the transcript's speaker turns.
        enrolled: voice id -> the name it was enrolled under (present or not).
    """
    present = {v for _, _, v in rec.turns}
    names = set(enrolled.values())
    labelled: dict[str, float] = defaultdict(float)
    scored: dict[str, float] = defaultdict(float)
    by_label: dict[str, dict[str, float]] = defaultdict(lambda: defaultdict(float))
    starts = np.array([t[0] for t in turns])
    order = np.argsort(starts)
    turns = [turns[i] for i in order]
    for s, e, voice in rec.turns:
        for a, b, who in turns:
            if a >= e:
                break
            overlap = min(b, e) - max(a, s)
            if overlap <= 0:
                continue
            labelled[voice] += overlap
            by_label[voice][who] += overlap
            if voice in enrolled:
                scored[voice] += overlap if who == enrolled[voice] else 0.0
            else:
                scored[voice] += overlap if who in names else 0.0

    def share(voices: list[str]) -> float:
        total = sum(labelled[v] for v in voices)
        return sum(scored[v] for v in voices) / total if total else float("nan")

    mine = [v for v in present if v in enrolled]
    others = [v for v in present if v not in enrolled]
    absent = sorted(n for v, n in enrolled.items() if v not in present)
    said = {who for _, _, who in turns}
    return NamingRates(
        right=share(mine),
        impostor=share(others),
        absent_named=[n for n in absent if n in said],
        per_voice={v: (labelled[v], scored[v]) for v in sorted(present)},
        majority={v: max(by_label[v], key=by_label[v].get) for v in by_label},
    )
