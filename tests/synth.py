"""Multi-speaker recordings with exact ground truth, synthesized with espeak-ng.

Also assembles long recordings from the real clips in ../shared/data.
"""

from __future__ import annotations

import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from deployments.core.audio import decode_audio
from deployments.core.schemas import SAMPLE_RATE

# (espeak voice, pitch 0-99): distinct pitch ranges keep synthetic voices apart for the
# segmentation model, which otherwise puts two espeak voices in one local speaker slot.
VOICES = (("en-us+m3", 20), ("en-gb+f4", 85), ("en-gb-scotland+m7", 50))
SENTENCES = (
    "The quarterly budget review is scheduled for next Tuesday afternoon.",
    "We need to finish the migration before the end of the month.",
    "Can everyone please share their progress on the new dashboard?",
    "The customer reported that the export feature was running slowly.",
    "I think we should add more tests before the next release.",
    "Our team visited the factory in the north last week.",
    "The weather forecast says it will rain during the conference.",
    "Please send me the final version of the contract by Friday.",
    "The new office has a large kitchen and a quiet library.",
    "We hired two engineers who will start in January.",
    "The database backup finished without any errors last night.",
    "Let us schedule a short meeting to discuss the marketing plan.",
    "The train to the airport leaves every fifteen minutes.",
    "Revenue grew by twelve percent compared with last year.",
    "I will review the design document and send comments tomorrow.",
    "The printer on the third floor is out of paper again.",
    "Our largest customer wants a demonstration of the mobile app.",
    "Security updates must be installed on every laptop this week.",
    "The project deadline was moved to the middle of March.",
    "Thank you all for joining the call on such short notice.",
)


def synth(text: str, voice: tuple[str, int], speed: int = 165) -> np.ndarray:
    name, pitch = voice
    with tempfile.TemporaryDirectory() as tmp:
        wav = Path(tmp) / "s.wav"
        subprocess.run(
            ["espeak-ng", "-v", name, "-p", str(pitch), "-s", str(speed), "-w", str(wav), text],
            check=True,
            capture_output=True,
        )
        return decode_audio(wav)


@dataclass
class Recording:
    audio: np.ndarray
    turns: list[tuple[float, float, str]] = field(default_factory=list)  # exact, global
    texts: list[str] = field(default_factory=list)  # reference, in order

    @property
    def duration(self) -> float:
        return len(self.audio) / SAMPLE_RATE

    @property
    def text(self) -> str:
        return " ".join(self.texts)

    def annotation(self):
        from pyannote.core import Annotation, Segment

        ann = Annotation()
        for start, end, speaker in self.turns:
            ann[Segment(start, end)] = speaker
        return ann


def _trim(audio: np.ndarray, threshold: float = 1e-3) -> np.ndarray:
    idx = np.flatnonzero(np.abs(audio) > threshold)
    return audio[idx[0] : idx[-1] + 1] if idx.size else audio[:0]


def meeting(n_turns: int, seed: int = 0, voices=VOICES) -> Recording:
    """Speakers take turns reading sentences, with 0.4–1.2 s pauses between turns."""
    rng = np.random.default_rng(seed)
    pieces, rec, t = [], Recording(np.zeros(0, np.float32)), 0.0
    speaker = 0
    for i in range(n_turns):
        speaker = (speaker + int(rng.integers(1, len(voices)))) % len(voices) if i else 0
        text = SENTENCES[int(rng.integers(len(SENTENCES)))]
        speech = _trim(synth(text, voices[speaker]))
        gap = np.zeros(int(rng.uniform(0.4, 1.2) * SAMPLE_RATE), np.float32)
        pieces += [gap, speech]
        t += len(gap) / SAMPLE_RATE
        rec.turns.append((t, t + len(speech) / SAMPLE_RATE, f"spk{speaker}"))
        rec.texts.append(text)
        t += len(speech) / SAMPLE_RATE
    pieces.append(np.zeros(SAMPLE_RATE // 2, np.float32))
    rec.audio = np.concatenate(pieces).astype(np.float32)
    return rec


def concat(*recordings: Recording, gap_s: float = 0.8) -> Recording:
    out = Recording(np.zeros(0, np.float32))
    pieces, t = [], 0.0
    gap = np.zeros(int(gap_s * SAMPLE_RATE), np.float32)
    for rec in recordings:
        out.turns += [(s + t, e + t, spk) for s, e, spk in rec.turns]
        out.texts += rec.texts
        pieces += [rec.audio, gap]
        t += (len(rec.audio) + len(gap)) / SAMPLE_RATE
    out.audio = np.concatenate(pieces).astype(np.float32)
    return out


def write_wav(audio: np.ndarray, path: Path) -> Path:
    import wave

    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(SAMPLE_RATE)
        w.writeframes((np.clip(audio, -1, 1) * 32767).astype("<i2").tobytes())
    return path
