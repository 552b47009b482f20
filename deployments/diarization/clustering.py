"""Clustering of speaker-embedding items (speech pieces) into speakers: the public API that both
the diarizer (one segment) and the job manager (all segments of a recording) use.

Method: weighted centroid agglomeration on cosine similarity. Each cluster is the weighted sum
of its members' unit embeddings, so a cluster built from many pieces has a clean centroid and
short, noisy pieces cannot chain two voices together (as average linkage lets them). Merging
stops when the two closest centroids are less similar than `threshold`, unless the speaker
count still exceeds its upper bound. Pieces that the segmentation heard at the same time
(cannot-link) stay apart unless the count leaves no choice. Light pieces never found a
speaker: they join the nearest cluster at the end, and so do light clusters.

Memory: at most `max_items` pieces take part in the agglomeration (the heaviest); the rest are
assigned to the nearest centroid, so a 4 h recording costs a fixed matrix plus linear lists.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

# Tuned on the tune voices and AMI trn00-04 (bench/tune_diarization.py); see docs/BENCHMARKS.md.
THRESHOLD = 0.5  # centroid cosine similarity at which merging stops
ANCHOR_WEIGHT = 1.0  # seconds of clean speech for a piece to found or steer a cluster
MIN_CLUSTER_WEIGHT = 2.0  # seconds of speech for a cluster to stand as a speaker...
MIN_CLUSTER_SHARE = 0.01  # ...and this share of all speech (long recordings)
MAX_ITEMS = 1500  # pieces in the quadratic step; the rest are assigned to centroids


@dataclass(frozen=True)
class ClusterParams:
    threshold: float = THRESHOLD
    anchor_weight: float = ANCHOR_WEIGHT
    min_cluster_weight: float = MIN_CLUSTER_WEIGHT
    min_cluster_share: float = MIN_CLUSTER_SHARE
    max_items: int = MAX_ITEMS
    count_onset: float = 0.5  # share of windows that must hear a speaker (pipeline's count)


@dataclass
class ClusterResult:
    labels: np.ndarray  # (n,) cluster ids 0..k-1
    centroids: np.ndarray  # (k, dim) unit vectors
    notes: list[str] = field(default_factory=list)


def count_bounds(
    num_speakers: int | None, min_speakers: int | None, max_speakers: int | None
) -> tuple[int, int | None]:
    """(lo, hi) speaker-count bounds from the hints; hi None means unbounded."""
    if num_speakers:
        return num_speakers, num_speakers
    return max(1, min_speakers or 1), max_speakers


def unit(v: np.ndarray) -> np.ndarray:
    return v / np.maximum(np.linalg.norm(v, axis=-1, keepdims=True), 1e-8)


def cluster(
    x: np.ndarray,
    weight: np.ndarray,
    cannot_link: set[tuple[int, int]] | None = None,
    lo: int = 1,
    hi: int | None = None,
    params: ClusterParams = ClusterParams(),
) -> ClusterResult:
    """Cluster unit embeddings `x` (n, dim) with weights (seconds of speech) into speakers.

    Args:
        x: (n, dim) embeddings (normalised here).
        weight: (n,) seconds of (clean) speech behind each embedding.
        cannot_link: pairs (i, j) heard at the same time: kept apart while the count allows.
        lo, hi: bounds on the number of speakers (hi None: no upper bound).
        params: threshold and weights.

    Returns:
        Labels, centroids and notes (e.g. when fewer speakers than `lo` could be told apart).
    """
    n = len(x)
    x = unit(np.asarray(x, dtype=np.float64))
    weight = np.maximum(np.asarray(weight, dtype=np.float64), 1e-3)
    if n == 0:
        return ClusterResult(np.zeros(0, dtype=np.int64), np.zeros((0, x.shape[1])))
    pairs = cannot_link or set()
    order = np.argsort(-weight, kind="stable")
    anchors = order[weight[order] >= params.anchor_weight][: params.max_items]
    if len(anchors) < lo:  # too few solid pieces for the requested count: use the heaviest
        anchors = order[: min(n, max(lo, len(anchors)), params.max_items)]
    if len(anchors) == 0:
        anchors = order[:1]
    groups = _agglomerate(x[anchors], weight[anchors], _submatrix(pairs, anchors), lo, hi, params)

    labels = np.full(n, -1, dtype=np.int64)
    for k, members in enumerate(groups):
        labels[anchors[members]] = k
    sums = np.zeros((len(groups), x.shape[1]))
    np.add.at(sums, labels[anchors], x[anchors] * weight[anchors, None])
    partners: dict[int, list[int]] = {}
    for i, j in pairs:
        partners.setdefault(i, []).append(j)
        partners.setdefault(j, []).append(i)
    for i in order:  # heaviest first, so light pieces see the clusters they are joining
        if labels[i] >= 0:
            continue
        sim = unit(sums) @ x[i]
        taken = {int(labels[j]) for j in partners.get(int(i), []) if labels[j] >= 0}
        free = [k for k in range(len(sums)) if k not in taken]
        best = max(free, key=lambda k: sim[k]) if free else int(np.argmax(sim))
        if free and sim[best] < sim.max() - 0.2:  # a much closer busy cluster wins
            best = int(np.argmax(sim))
        labels[i] = best
        sums[best] += x[i] * weight[i]
    notes = []
    if len(groups) < lo:
        notes.append(
            f"asked for at least {lo} speakers, but the audio holds only {len(groups)} "
            "that can be told apart"
        )
    return ClusterResult(labels, unit(sums), notes)


def _submatrix(pairs: set[tuple[int, int]], idx: np.ndarray) -> np.ndarray:
    pos = {int(i): p for p, i in enumerate(idx)}
    out = np.zeros((len(idx), len(idx)), dtype=bool)
    for i, j in pairs:
        if i in pos and j in pos:
            out[pos[i], pos[j]] = out[pos[j], pos[i]] = True
    return out


def _agglomerate(
    x: np.ndarray,
    w: np.ndarray,
    conflict: np.ndarray,
    lo: int,
    hi: int | None,
    params: ClusterParams,
) -> list[list[int]]:
    """Greedy weighted-centroid merging; returns member lists (indices into x)."""
    k = len(x)
    hi = k if hi is None else max(1, hi)
    sums = x * w[:, None]
    cen = x.copy()
    mass = w.copy()
    members = [[i] for i in range(k)]
    active = np.ones(k, dtype=bool)
    sim = cen @ cen.T
    np.fill_diagonal(sim, -np.inf)
    eff = np.where(conflict, -np.inf, sim)
    near = np.argmax(eff, axis=1)
    near_s = eff[np.arange(k), near]
    count = k

    def merge(a: int, b: int) -> None:
        nonlocal count
        a, b = min(a, b), max(a, b)  # keep the lower index: deterministic ids
        sums[a] += sums[b]
        mass[a] += mass[b]
        cen[a] = unit(sums[a])
        members[a] += members[b]
        active[b] = False
        conflict[a] |= conflict[b]
        conflict[:, a] = conflict[a]
        row = np.where(active, cen @ cen[a], -np.inf)
        row[a] = -np.inf
        sim[a], sim[:, a] = row, row
        sim[b], sim[:, b] = -np.inf, -np.inf
        row = np.where(conflict[a], -np.inf, row)
        eff[a], eff[:, a] = row, row
        eff[b], eff[:, b] = -np.inf, -np.inf
        near_s[b] = -np.inf
        stale = np.union1d(np.flatnonzero(active & ((near == a) | (near == b))), [a])
        near[stale] = np.argmax(eff[stale], axis=1)
        near_s[stale] = eff[stale, near[stale]]
        closer = active & (row > near_s)
        near[closer], near_s[closer] = a, row[closer]
        count -= 1

    while count > max(lo, 1):
        a = int(np.argmax(near_s))
        b, best = int(near[a]), near_s[a]
        if not np.isfinite(best):
            if count <= hi:
                break
            # More speakers than allowed and every pair conflicts: break a cannot-link.
            a, b = (int(v) for v in np.unravel_index(int(np.argmax(sim)), sim.shape))
        elif count <= hi and best < params.threshold:
            break
        merge(a, b)

    # Light clusters are not speakers of their own: fold them into their nearest neighbour.
    min_mass = max(params.min_cluster_weight, params.min_cluster_share * w.sum())
    while count > max(lo, 1):
        light = np.flatnonzero(active & (mass < min_mass))
        if len(light) == 0:
            break
        a = int(light[np.argmin(mass[light])])
        row = np.where(active, cen @ cen[a], -np.inf)
        row[a] = -np.inf
        merge(a, int(np.argmax(row)))
    return [members[i] for i in np.flatnonzero(active)]
