"""The job's diarization path without Ray: split at silences, diarize each segment, stitch.

Segments are cut as the job manager cuts them (~30 s at silences) and the speakers of all
segments are linked by the job's own stitching, so the turns are what a diarized job returns.
With a cache folder, each segment's model work (segmentation, pieces, CAM++ embeddings) is kept
on disk, keyed by the segment's audio, so trying clustering parameters (`--param`) re-runs only
the clustering: seconds instead of minutes.
"""

from __future__ import annotations

import hashlib
import pickle
import time
from pathlib import Path

import numpy as np


class InProcess:
    def __init__(
        self,
        settings,
        threads: int,
        params: dict[str, float] | None = None,
        cache: Path | None = None,
        segment_s: float = 30.0,
    ) -> None:
        from deployments.core.clustering import ClusterParams
        from deployments.replicas.diarizer import load_diarizer

        self.params = ClusterParams(**(params or {}))
        self.diarizer = load_diarizer(
            "bundled",
            settings.resolved_models_dir,
            False,
            None,
            "cpu",
            threads,
            settings.diarization_step,
        )
        self.diarizer.params = self.params
        self.step = self.diarizer.segmenter.step
        self.cache = cache
        self.segment_s = segment_s
        if cache:
            cache.mkdir(parents=True, exist_ok=True)

    def analyse(self, audio: np.ndarray):
        if self.cache is None:
            return self.diarizer.analyse(audio)
        key = hashlib.sha1(audio.astype(np.float32).tobytes())
        key.update(f"{self.step}".encode())
        path = self.cache / f"{key.hexdigest()[:20]}.pkl"
        if path.exists():
            return pickle.loads(path.read_bytes())
        analysis = self.diarizer.analyse(audio)
        tmp = path.with_suffix(".tmp")
        tmp.write_bytes(pickle.dumps(analysis))
        tmp.replace(path)
        return analysis

    def run(self, audio: np.ndarray, hint: int | None = None) -> tuple[list, float]:
        """(turns as (start, end, speaker), seconds taken) for 16 kHz mono audio."""
        from deployments.core.schemas import DiarizeOptions, Transcription
        from deployments.core.splitter import split_stream
        from jobs.stitching.stitch import SegmentOutcome, stitch

        t0 = time.monotonic()
        outcomes = []
        hi = max(self.segment_s, 60.0)
        for plan, part in split_stream([audio], target_s=self.segment_s, min_s=10.0, max_s=hi):
            empty = Transcription(
                language="en", language_probability=1.0, duration=len(part) / 16000, segments=[]
            )
            d = self.diarizer.finish(self.analyse(part), DiarizeOptions(max_speakers=hint))
            outcomes.append(SegmentOutcome(plan, empty, d))
        result = stitch(
            outcomes, len(audio) / 16000, DiarizeOptions(num_speakers=hint), params=self.params
        )
        return [(t.start, t.end, t.speaker) for t in result.turns], time.monotonic() - t0

    def turns(self, case, hint: int | None) -> tuple[list, float]:
        from deployments.core.audio import decode_audio

        return self.run(decode_audio(case.path), hint)


def parse_params(items: list[str]) -> dict[str, float]:
    """--param NAME=VALUE items as ClusterParams fields."""
    out = {}
    for item in items:
        name, _, value = item.partition("=")
        out[name] = float(value)
    return out
