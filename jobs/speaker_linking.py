"""Link the local speakers of independently diarized segments into global speakers.

Each segment's diarizer labels its own speakers (SPEAKER_00 in one segment need not be
SPEAKER_00 in the next) and gives one L2-normalised GE2E embedding per speaker. Greedy
agglomerative clustering on cosine distance between speech-time-weighted centroids joins
them, with a cannot-link constraint: two speakers of one segment were told apart by the
diarizer, so they stay apart unless the requested speaker count leaves no other choice.

When segments ship their speaker *tracks* (the units the diarizer itself clusters),
`cluster_tracks` re-clusters all of them jointly instead: a segment's own clustering saw
only ~30 s and may have merged two people or split one, which centroid linking cannot undo.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from deployments.diarization_clustering import THRESHOLD, agglomerate, count_bounds
from deployments.schemas import DiarizeOptions, SpeakerTrack

# Cosine distance under which two centroids are taken as one voice when the count is
# unknown. Measured with GE2E (Resemblyzer) on 20 s segments of tests/synth.py meetings:
# one voice in different segments is mostly < 0.06 apart, different espeak-ng voices are
# 0.107-0.26 apart (real people: 0.15-0.5), so without cannot-link help only <= 0.10 keeps
# three espeak voices apart. The cost: a real voice whose segment embeddings drift more
# (noisy audio, little speech) may be split; callers can pass num/max_speakers.
LINK_THRESHOLD = 0.10
# Speakers with less speech than this in their segment have unreliable embeddings: they
# are attached to the nearest cluster instead of founding one.
TINY_SPEECH_S = 2.0


@dataclass(frozen=True)
class LocalSpeaker:
    """One diarizer label within one segment."""

    segment: int
    label: str
    embedding: np.ndarray  # L2-normalised
    speech_s: float


def _unit(v: np.ndarray) -> np.ndarray:
    norm = float(np.linalg.norm(v))
    return v / norm if norm > 0 else v


def _bounds(options: DiarizeOptions | None, n: int) -> tuple[int, int]:
    if options is not None and options.num_speakers is not None:
        return options.num_speakers, options.num_speakers
    lo = options.min_speakers if options and options.min_speakers else 1
    hi = options.max_speakers if options and options.max_speakers else max(n, 1)
    return lo, hi


def link_speakers(
    items: list[LocalSpeaker],
    options: DiarizeOptions | None = None,
    threshold: float = LINK_THRESHOLD,
    tiny_s: float = TINY_SPEECH_S,
) -> list[int]:
    """Assign a global cluster id to every local speaker.

    Args:
        items: the local speakers of all segments.
        options: num_speakers is honoured exactly (when there are that many local
            speakers); min/max_speakers clamp the count found with `threshold`.
        threshold: cosine distance at which merging stops when the count is free.
        tiny_s: local speakers with less speech are attached to the nearest cluster.

    Returns:
        One id per item, in 0..k-1 (ids are arbitrary; callers relabel by time).
    """
    n = len(items)
    if n == 0:
        return []
    lo, hi = _bounds(options, n)
    big = [i for i, it in enumerate(items) if it.speech_s >= tiny_s]
    if len(big) < lo or not big:
        big = list(range(n))

    # Raw centroids are speech-weighted sums; distances use their normalised form.
    sums = np.stack([items[i].embedding * max(items[i].speech_s, 1e-3) for i in big])
    unit = np.stack([_unit(s) for s in sums])
    segs = [{items[i].segment} for i in big]
    members = [[i] for i in big]
    k = len(big)
    seg_ids = np.array([items[i].segment for i in big])
    conflict = seg_ids[:, None] == seg_ids[None, :]
    dist = 1.0 - unit @ unit.T
    np.fill_diagonal(dist, np.inf)
    # Merge candidates: dist with cannot-link pairs blocked; rows/cols of merged-away
    # clusters are inf in both. Updated in place so each merge costs one argmin.
    eff = np.where(conflict, np.inf, dist)
    # Cache each row's nearest candidate so a merge costs O(k) instead of an O(k^2) argmin.
    near = np.argmin(eff, axis=1)
    near_d = eff[np.arange(k), near]
    active = np.ones(k, dtype=bool)
    count = k
    while count > lo:
        a = int(np.argmin(near_d))
        b, best = int(near[a]), near_d[a]
        if not np.isfinite(best):
            if count <= hi:
                break
            # More speakers than allowed and every pair conflicts: break cannot-links.
            a, b = (int(x) for x in np.unravel_index(int(np.argmin(dist)), dist.shape))
        elif count <= hi and best >= threshold:
            break
        a, b = min(a, b), max(a, b)  # keep the lower index: deterministic ids
        sums[a] += sums[b]
        unit[a] = _unit(sums[a])
        segs[a] |= segs[b]
        members[a] += members[b]
        active[b] = False
        conflict[a] |= conflict[b]
        conflict[:, a] = conflict[a]
        row = np.where(active, 1.0 - unit @ unit[a], np.inf)
        row[a] = np.inf
        dist[a], dist[:, a] = row, row
        dist[b], dist[:, b] = np.inf, np.inf
        row = np.where(conflict[a], np.inf, row)
        eff[a], eff[:, a] = row, row
        eff[b], eff[:, b] = np.inf, np.inf
        near_d[b] = np.inf
        stale = np.flatnonzero(active & ((near == a) | (near == b)))
        stale = np.union1d(stale, [a])
        near[stale] = np.argmin(eff[stale], axis=1)
        near_d[stale] = eff[stale, near[stale]]
        closer = active & (row < near_d)
        near[closer], near_d[closer] = a, row[closer]
        count -= 1

    keep = np.flatnonzero(active)
    labels = [-1] * n
    for cid, c in enumerate(keep):
        for i in members[c]:
            labels[i] = cid
    centroids = unit[keep]
    cluster_segs = [set(segs[c]) for c in keep]
    for i, it in enumerate(items):
        if labels[i] >= 0:
            continue
        d = 1.0 - centroids @ it.embedding
        free = [c for c in range(len(keep)) if it.segment not in cluster_segs[c]]
        best_free = min(free, key=lambda c: d[c]) if free else None
        # Prefer a cluster this segment does not use yet, if it is plausibly the same voice.
        cid = best_free if best_free is not None and d[best_free] < threshold else int(np.argmin(d))
        labels[i] = cid
        cluster_segs[cid].add(it.segment)
    return labels


# Average-linkage distance at which track clusters stop merging: the diarizer's own, so a
# recording split into segments is clustered as if it had been diarized whole.
TRACK_THRESHOLD = THRESHOLD


def cluster_tracks(
    segments: list[list[SpeakerTrack]],
    options: DiarizeOptions | None = None,
    threshold: float = TRACK_THRESHOLD,
) -> list[list[int]]:
    """Cluster the speaker tracks of all segments jointly into global speakers.

    Tracks of one segment heard in the same chunk are penalised (cannot-link evidence);
    tracks of different segments are compared on their voices alone. Light clusters join
    the nearest heavy one, as in the diarizer.

    Args:
        segments: each segment's tracks.
        options: num/min/max_speakers for the whole recording.
        threshold: linkage distance at which merging stops when the count is free.

    Returns:
        Per segment, one global cluster id per track (ids 0..k-1, arbitrary order).
    """
    flat = [t for tracks in segments for t in tracks]
    if not flat:
        return [[] for _ in segments]
    x = np.stack([_unit(np.asarray(t.embedding, dtype=np.float64)) for t in flat])
    mass = np.array([t.weight for t in flat])
    together = np.zeros((len(flat), len(flat)), dtype=bool)
    base = 0
    for tracks in segments:
        index = {t.id: base + i for i, t in enumerate(tracks)}
        for t in tracks:
            together[index[t.id], [index[j] for j in t.cannot_link]] = True
        base += len(tracks)
    together |= together.T
    opts = options or DiarizeOptions()
    lo, hi = count_bounds(opts.num_speakers, opts.min_speakers, opts.max_speakers, len(flat))
    labels = agglomerate(x, together, mass, threshold, lo, hi).tolist()
    out, base = [], 0
    for tracks in segments:
        out.append(labels[base : base + len(tracks)])
        base += len(tracks)
    return out
