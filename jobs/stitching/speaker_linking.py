"""Link the speech pieces of independently diarized segments into global speakers.

Each segment's diarizer labels its own speakers (SPEAKER_00 in one segment need not be
SPEAKER_00 in the next) and ships the pieces it clustered as tracks: one CAM++ embedding, the
seconds of speech behind it, and the pieces it was heard together with. All tracks of all
segments are clustered jointly with the diarizer's own method (deployments.core.clustering's public
clustering API), so a recording split into segments is clustered as if it had been diarized
whole, and one person keeps one label from the first minute to the last.

Memory: a TrackSet keeps per track only a float32 embedding, its weight and its spans (about
1 KiB), so it grows linearly in segments; the quadratic step of the clustering is capped
(ClusterParams.max_items) and the rest is assigned to centroids.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from deployments.core.clustering import ClusterParams, cluster, count_bounds
from deployments.core.schemas import Diarization, DiarizeOptions, SpeakerTrack

# (start, end, global cluster id), segment-relative.
Span = tuple[float, float, int]


@dataclass
class Voice:
    embedding: np.ndarray  # unit-length centroid of the speaker's tracks
    speech_s: float  # seconds of clean speech behind it


@dataclass
class _Segment:
    speakers: int  # how many speakers the segment's own diarizer found
    local: list[int]  # per track: the index of its segment-level speaker
    turns: list[list[tuple[float, float]]]
    exclusive: list[list[tuple[float, float]]]


@dataclass
class TrackSet:
    """All segments' speaker tracks, compact, in the order segments are added."""

    segments: list[_Segment] = field(default_factory=list)
    embeddings: list[np.ndarray] = field(default_factory=list)
    weights: list[float] = field(default_factory=list)
    pairs: set[tuple[int, int]] = field(default_factory=set)

    def add(self, diarization: Diarization | None) -> None:
        """Add the next segment's tracks (None: a segment that was not diarized)."""
        if diarization is None:
            self.segments.append(_Segment(0, [], [], []))
            return
        self.add_tracks(diarization.tracks, diarization.speakers)

    def add_tracks(self, tracks: list[SpeakerTrack], speakers: list[str] | None = None) -> None:
        base = len(self.weights)
        index = {t.id: base + i for i, t in enumerate(tracks)}
        for t in tracks:
            self.embeddings.append(np.asarray(t.embedding, dtype=np.float32))
            self.weights.append(t.weight)
            for j in t.cannot_link:
                a, b = index[t.id], index[j]
                self.pairs.add((min(a, b), max(a, b)))
        names = speakers if speakers is not None else sorted({t.speaker for t in tracks})
        self.segments.append(
            _Segment(
                speakers=len(names),
                local=[names.index(t.speaker) for t in tracks],
                turns=[list(t.turns) for t in tracks],
                exclusive=[list(t.exclusive_turns) for t in tracks],
            )
        )

    def labels(self, options: DiarizeOptions | None, params: ClusterParams) -> list[list[int]]:
        """Per segment, one global cluster id per track (ids 0..k-1, arbitrary order)."""
        if not self.weights:
            return [[] for _ in self.segments]
        opts = options or DiarizeOptions()
        lo, hi = count_bounds(opts.num_speakers, opts.min_speakers, opts.max_speakers)
        x = np.stack(self.embeddings)
        result = cluster(x, np.asarray(self.weights), self.pairs, lo, hi, params)
        flat = result.labels.tolist()
        out, base = [], 0
        for seg in self.segments:
            out.append(flat[base : base + len(seg.local)])
            base += len(seg.local)
        return out

    def spans(
        self, options: DiarizeOptions | None, params: ClusterParams
    ) -> tuple[list[list[Span]], list[list[Span]], dict[int, Voice]]:
        """Per segment, its turns and exclusive turns labelled with global speakers; and per
        global speaker its voice (the speech-weighted centroid of its tracks)."""
        speaking = [s for s in self.segments if s.speakers]
        opts = options or DiarizeOptions()
        n = speaking[0].speakers if speaking else 0
        fits = (
            (opts.num_speakers or opts.min_speakers or 1)
            <= n
            <= (opts.num_speakers or opts.max_speakers or n)
        )
        if len(speaking) == 1 and fits:
            # One segment: its own clustering already saw all the context there is.
            labels = [s.local for s in self.segments]
        else:
            labels = self.labels(options, params)

        def label(per_track: list[list[tuple[float, float]]], ids: list[int]) -> list[Span]:
            pairs = zip(per_track, ids, strict=True)
            return [(a, b, cid) for spans, cid in pairs for a, b in spans]

        turns = [label(s.turns, ids) for s, ids in zip(self.segments, labels, strict=True)]
        exclusive = [label(s.exclusive, ids) for s, ids in zip(self.segments, labels, strict=True)]
        return turns, exclusive, self._voices([c for ids in labels for c in ids])

    def _voices(self, flat: list[int]) -> dict[int, Voice]:
        sums: dict[int, np.ndarray] = {}
        seconds: dict[int, float] = {}
        for cid, vector, weight in zip(flat, self.embeddings, self.weights, strict=True):
            w = max(weight, 1e-3)
            sums[cid] = sums.get(cid, 0.0) + w * vector.astype(np.float64)
            seconds[cid] = seconds.get(cid, 0.0) + weight
        return {
            cid: Voice(v / max(float(np.linalg.norm(v)), 1e-12), seconds[cid])
            for cid, v in sums.items()
        }


def cluster_tracks(
    segments: list[list[SpeakerTrack]],
    options: DiarizeOptions | None = None,
    params: ClusterParams | None = None,
) -> list[list[int]]:
    """Cluster the speaker tracks of all segments jointly into global speakers.

    Args:
        segments: each segment's tracks.
        options: num/min/max_speakers for the whole recording.
        params: clustering parameters (default: the diarizer's).

    Returns:
        Per segment, one global cluster id per track (ids 0..k-1, arbitrary order).
    """
    tracks = TrackSet()
    for seg in segments:
        tracks.add_tracks(seg)
    return tracks.labels(options, params or ClusterParams())
