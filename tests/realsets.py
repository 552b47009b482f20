"""Real-speech diarization sets with ground truth, and their scoring, for tests and bench/.

- AMI: ten 30 s excerpts of real meetings (../shared/data/ami, RTTM + UEM). trn00-04 are the
  tune set, trn05-09 are held out.
- The pyannote sample: a 30 s real two-speaker call shipped in the pyannote.audio wheel.
- Meetings of real studio voices (tests/realvoices.py): TUNE_VOICES for tuning, HELDOUT_VOICES
  never tuned on.

DER is pyannote.metrics' DiarizationErrorRate with collar 0 and overlapped speech scored, as
published AMI results are. Errors are accumulated over a set's files (total error / total
speech), with miss, false alarm and confusion reported apart.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from tests.conftest import SHARED_DATA, pyannote_sample_dir

AMI_DIR = SHARED_DATA / "ami"
AMI_TUNE = [f"trn{i:02d}" for i in range(5)]
AMI_HELDOUT = [f"trn{i:02d}" for i in range(5, 10)]

Turn = tuple[float, float, str]


@dataclass
class RealCase:
    name: str
    path: Path
    reference: object  # pyannote.core.Annotation
    uem: object | None = None  # pyannote.core.Timeline

    @property
    def speakers(self) -> int:
        return len(self.reference.labels())


def ami_cases(names: list[str] | None = None) -> list[RealCase]:
    from pyannote.database.util import load_rttm, load_uem

    refs = load_rttm(str(AMI_DIR / "train.rttm"))
    uems = load_uem(str(AMI_DIR / "train.uem"))
    names = names or AMI_TUNE + AMI_HELDOUT
    return [RealCase(n, AMI_DIR / f"{n}.wav", refs[n], uems[n]) for n in names]


def sample_case() -> RealCase:
    from pyannote.database.util import load_rttm

    folder = pyannote_sample_dir()
    reference = load_rttm(str(folder / "sample.rttm"))["sample"]
    return RealCase("pyannote sample", folder / "sample.wav", reference)


def voices_case(
    voices: list[str], minutes: float, seed: int, overlap: float, folder: Path
) -> RealCase:
    """A meeting of real voices written to `folder` (cached across runs by realvoices)."""
    from pyannote.core import Segment, Timeline

    from tests import realvoices

    rec = realvoices.cached_meeting(voices, minutes, seed=seed, overlap_prob=overlap)
    name = f"{len(voices)} voices {minutes:g} min (seed {seed})"
    path = folder / f"voices-{'-'.join(voices)}-{minutes:g}-{seed}.wav"
    if not path.exists():
        rec.write_wav(path)
    return RealCase(name, path, rec.annotation(), Timeline([Segment(0, rec.duration)]))


class DerTally:
    """DER accumulated over files: components in seconds, and speaker counts found vs true.
    Collar 0 is the standard here; a collar (seconds) shows how much is turn-edge error."""

    def __init__(self, collar: float = 0.0) -> None:
        from pyannote.metrics.diarization import DiarizationErrorRate

        self.metric = DiarizationErrorRate(collar=collar, skip_overlap=False)
        self.counts: list[tuple[int, int]] = []

    def add(self, case: RealCase, turns: list[Turn]) -> float:
        """Score one file's turns; returns its own DER."""
        from pyannote.core import Annotation, Segment

        hypothesis = Annotation(uri=case.name)
        for i, (start, end, speaker) in enumerate(turns):
            if end > start:
                hypothesis[Segment(start, end), i] = speaker
        self.counts.append((len({s for _, _, s in turns}), case.speakers))
        return float(self.metric(case.reference, hypothesis, uem=case.uem))

    @property
    def der(self) -> float:
        return float(abs(self.metric))

    def parts(self) -> dict[str, float]:
        acc = self.metric.accumulated_
        total = max(acc["total"], 1e-9)
        return {
            "der": self.der,
            "miss": acc["missed detection"] / total,
            "false_alarm": acc["false alarm"] / total,
            "confusion": acc["confusion"] / total,
        }

    def exact_counts(self) -> str:
        return f"{sum(f == t for f, t in self.counts)}/{len(self.counts)}"
