"""Link the speech pieces of independently diarized segments into global speakers.

Each segment's diarizer labels its own speakers (SPEAKER_00 in one segment need not be
SPEAKER_00 in the next) and ships the pieces it clustered as tracks: one CAM++ embedding, the
seconds of speech behind it, and the pieces it was heard together with. All tracks of all
segments are clustered jointly with the diarizer's own method (deployments.diarization's public
clustering API), so a recording split into segments is clustered as if it had been diarized
whole, and one person keeps one label from the first minute to the last.

Memory: the embeddings are a list linear in the number of segments; the quadratic step of the
clustering is capped (ClusterParams.max_items) and the rest is assigned to centroids.
"""

from __future__ import annotations

import numpy as np

from deployments.diarization.clustering import ClusterParams, cluster, count_bounds
from deployments.schemas import DiarizeOptions, SpeakerTrack


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
    flat = [t for tracks in segments for t in tracks]
    if not flat:
        return [[] for _ in segments]
    x = np.asarray([t.embedding for t in flat], dtype=np.float32)
    weight = np.asarray([t.weight for t in flat])
    pairs: set[tuple[int, int]] = set()
    base = 0
    for tracks in segments:
        index = {t.id: base + i for i, t in enumerate(tracks)}
        for t in tracks:
            for j in t.cannot_link:
                a, b = index[t.id], index[j]
                pairs.add((min(a, b), max(a, b)))
        base += len(tracks)
    opts = options or DiarizeOptions()
    lo, hi = count_bounds(opts.num_speakers, opts.min_speakers, opts.max_speakers)
    result = cluster(x, weight, pairs, lo, hi, params or ClusterParams())
    labels = result.labels.tolist()
    out, base = [], 0
    for tracks in segments:
        out.append(labels[base : base + len(tracks)])
        base += len(tracks)
    return out
