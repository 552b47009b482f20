"""Issue 23 item 2: the Diarizer replica diarizes segments that arrive together in one call.

Through the suite's real app (serve_config.yaml's batch knobs, real weights, real speech),
and, with a fake backend, what happens when one segment of a batch cannot be diarized."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from deployments.core.schemas import SAMPLE_RATE, Diarization, DiarizeOptions, InputRejected
from tests.conftest import load_audio, pyannote_sample_dir


def _parts() -> list[np.ndarray]:
    sample = load_audio(pyannote_sample_dir() / "sample.wav")
    sr = SAMPLE_RATE
    return [sample[: 12 * sr], sample[5 * sr : 20 * sr], sample[10 * sr :], sample[: 25 * sr]]


@pytest.mark.ray
@pytest.mark.models
def test_concurrent_segments_share_a_call_and_get_their_own_results(serve_url):
    from ray import serve

    from tests.jobclient import replica_actors, replica_infos

    handle = serve.get_deployment_handle("Diarizer", "speech")
    parts = _parts()
    alone = [handle.diarize.remote(p).result() for p in parts]
    # Twice as many requests at once as replicas can start (the suite's earlier load may
    # have scaled the Diarizer to 2): some wait behind a running call and share the next.
    sent = [handle.diarize.remote(p) for p in parts + parts]
    together = [r.result() for r in sent][: len(parts)]
    infos = replica_infos(handle, expected=len(replica_actors("Diarizer")))
    assert max(i["largest_batch"] for i in infos.values()) >= 2, infos
    for a, b in zip(alone, together, strict=True):
        assert a.duration == b.duration
        assert a.speakers == b.speakers and len(a.speakers) >= 1
        assert [(t.start, t.end, t.speaker) for t in a.turns] == [
            (t.start, t.end, t.speaker) for t in b.turns
        ]


class _Backend:
    """Fails on audio holding a NaN, as the models do on what they cannot process."""

    def analyse_many(self, audios):
        if any(np.isnan(a).any() for a in audios):
            raise ValueError("bad audio")
        return list(audios)

    def finish(self, analysis, options):
        return Diarization(
            duration=len(analysis) / SAMPLE_RATE,
            turns=[],
            exclusive_turns=[],
            speakers=[],
            embeddings={},
        )

    def __call__(self, audio, options):
        return self.finish(self.analyse_many([audio])[0], options)


def test_one_bad_segment_fails_alone_and_its_batch_mates_are_diarized():
    from deployments.replicas.diarizer import Diarizer

    replica = object.__new__(Diarizer.func_or_class)
    replica.backend, replica._lock, replica.largest_batch = _Backend(), asyncio.Lock(), 0
    good = np.zeros(SAMPLE_RATE, np.float32)
    bad = np.full(SAMPLE_RATE, np.nan, np.float32)
    out = replica._diarize_many([good, bad, good[:800]], [DiarizeOptions()] * 3)
    assert isinstance(out[0], Diarization) and out[0].duration == 1.0
    assert isinstance(out[1], InputRejected)
    assert "ValueError" in str(out[1]) and "bad audio" not in str(out[1])
    assert isinstance(out[2], Diarization) and out[2].duration == 0.05
