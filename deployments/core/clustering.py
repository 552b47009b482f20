"""Clustering of speaker-embedding items (speech pieces) into speakers: the public API that both
the diarizer (one segment) and the job manager (all segments of a recording) use.

Method: weighted average-linkage agglomeration on cosine similarity between pieces heavy
enough to carry a reliable embedding (anchors), stopped where the mean similarity between two
clusters falls below `threshold`. With enough speech (`voice_min_speech_s`, a long recording
rather than a 30 s clip), in two stages instead:
1. the agglomeration stops earlier, at `strict_threshold`, so clusters are pure: one voice
   may be split in a few;
2. clusters then merge while their similarity normalised by their own spread (_merge_voices)
   is at least `voice_threshold`: this decides how many people there are, and unlike a mean
   similarity it does not move when a codec or a resampler makes every embedding noisier.
   A short clip has too few pieces per cluster to measure a spread, so it keeps one stage.
The speaker-count bounds may then ask for another cut of the stage-1 tree. Pieces that one
segmentation window heard at the same time (cannot-link) are pushed apart by a distance
penalty. Light clusters never stand as speakers: they join the nearest heavy one, and light
pieces are assigned to the nearest centroid at the end.

Memory: at most `max_items` pieces take part in the agglomeration (the heaviest); the rest are
assigned to the nearest centroid, so a 4 h recording costs a fixed matrix plus linear lists.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

# Tuned on AMI trn00-04 and meetings of tests/realvoices.TUNE_VOICES only (bench/accuracy.py
# --tune, bench/speaker_stability.py --tune); docs/BENCHMARKS.md reports held-out sets.
# Stage 1 at 0.5 alone put two tune voices at 0.40-0.48 depending on the copy (a knife edge);
# at 0.6 with stage 2 at 0.75, every copy found 4/4 and AMI tune was unchanged. Different
# people scored at most 0.60 normalised on the tune meetings, parts of one person 0.8-1.
THRESHOLD = 0.5  # mean (weighted) cosine similarity at which merging stops (one stage)
STRICT_THRESHOLD = 0.6  # ... and stage 1 of two
VOICE_MIN_SPEECH_S = 90.0  # seconds of anchor speech for two stages (no single 60 s segment)
ANCHOR_WEIGHT = 1.0  # seconds of clean speech for a piece to found or steer a cluster
MIN_CLUSTER_WEIGHT = 1.0  # seconds of speech for a cluster to stand as a speaker...
MIN_CLUSTER_SHARE = 0.03  # ...and this share of all speech (long recordings)
MAX_ITEMS = 1500  # pieces in the quadratic step; the rest are assigned to centroids
SAME_VOICE = 0.65  # clusters this similar are one voice even when a hint asks for more
CANNOT_LINK_PENALTY = 1.0  # added to the cosine distance of pieces heard together
VOICE_THRESHOLD = 0.75  # normalised similarity at which two clusters are one voice


@dataclass(frozen=True)
class ClusterParams:
    threshold: float = THRESHOLD
    strict_threshold: float = STRICT_THRESHOLD
    voice_min_speech_s: float = VOICE_MIN_SPEECH_S
    anchor_weight: float = ANCHOR_WEIGHT
    min_cluster_weight: float = MIN_CLUSTER_WEIGHT
    min_cluster_share: float = MIN_CLUSTER_SHARE
    max_items: int = MAX_ITEMS
    same_voice: float = SAME_VOICE
    voice_threshold: float = VOICE_THRESHOLD  # second stage; > 1 turns it off
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


def count_notes(wanted: int, exact: bool, found: int) -> list[str]:
    """The note a result carries when a speaker-count hint asked for more voices than the
    audio holds (empty otherwise)."""
    if found >= wanted:
        return []
    return [
        f"asked for {'' if exact else 'at least '}{wanted} speakers, "
        f"but the audio holds only {found} that can be told apart"
    ]


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
    notes = count_notes(lo, hi == lo, len(groups))
    return ClusterResult(labels, unit(sums), notes)


def _submatrix(pairs: set[tuple[int, int]], idx: np.ndarray) -> np.ndarray:
    pos = {int(i): p for p, i in enumerate(idx)}
    out = np.zeros((len(idx), len(idx)), dtype=bool)
    for i, j in pairs:
        if i in pos and j in pos:
            out[pos[i], pos[j]] = out[pos[j], pos[i]] = True
    return out


def _dendrogram(x: np.ndarray, w: np.ndarray, conflict: np.ndarray) -> list[tuple[int, int, float]]:
    """Merges (a, b, similarity) of weighted average linkage, most similar first.

    The similarity of two clusters is the weight-weighted mean of their members' pairwise
    cosine similarities (minus the cannot-link penalty), updated by Lance-Williams, so heavy
    pieces (long, clean speech) count more than short ones. Each row's best partner is cached,
    so a merge costs O(n) and the whole tree O(n^2).
    """
    k = len(x)
    sim = x @ x.T - CANNOT_LINK_PENALTY * conflict
    np.fill_diagonal(sim, -np.inf)
    mass = w.astype(np.float64).copy()
    active = np.ones(k, dtype=bool)
    near = np.argmax(sim, axis=1)
    near_s = sim[np.arange(k), near]
    merges = []
    for _ in range(k - 1):
        a = int(np.argmax(near_s))
        b = int(near[a])
        merges.append((min(a, b), max(a, b), float(near_s[a])))
        a, b = min(a, b), max(a, b)
        row = (mass[a] * sim[a] + mass[b] * sim[b]) / (mass[a] + mass[b])
        mass[a] += mass[b]
        active[b] = False
        row[~active] = -np.inf
        row[a] = -np.inf
        sim[a], sim[:, a] = row, row
        sim[b], sim[:, b] = -np.inf, -np.inf
        near_s[b] = -np.inf
        stale = np.union1d(np.flatnonzero(active & ((near == a) | (near == b))), [a])
        near[stale] = np.argmax(sim[stale], axis=1)
        near_s[stale] = sim[stale, near[stale]]
        closer = active & (row > near_s)
        near[closer], near_s[closer] = a, row[closer]
    return merges


def _finder(parent: np.ndarray):
    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    return find


def _cut(k: int, merges: list[tuple[int, int, float]], n: int) -> np.ndarray:
    """Labels after the first n merges."""
    parent = np.arange(k)
    find = _finder(parent)
    for a, b, _ in merges[:n]:
        parent[find(b)] = find(a)
    return np.array([find(i) for i in range(k)])


def _heavy_counts(
    merges: list[tuple[int, int, float]], w: np.ndarray, min_mass: float
) -> list[int]:
    """Number of clusters of at least `min_mass` after the first m merges, for every m, in one
    union-find pass (cutting the tree anew for each m would cost O(n^2))."""
    parent = np.arange(len(w))
    find = _finder(parent)
    mass = w.astype(np.float64).copy()
    heavy = int(np.sum(mass >= min_mass))
    counts = [heavy]
    for a, b, _ in merges:
        ra, rb = find(a), find(b)
        heavy -= int(mass[ra] >= min_mass) + int(mass[rb] >= min_mass)
        parent[rb] = ra
        mass[ra] += mass[rb]
        heavy += int(mass[ra] >= min_mass)
        counts.append(heavy)
    return counts


def _agglomerate(
    x: np.ndarray,
    w: np.ndarray,
    conflict: np.ndarray,
    lo: int,
    hi: int | None,
    params: ClusterParams,
) -> list[list[int]]:
    """Weighted average-linkage clustering; returns member lists (indices into x).

    Average linkage compares clusters by the mean similarity of their members, which does not
    grow with cluster size as centroid similarity does, so one threshold serves a 30 s clip
    and a 4 h recording. Light clusters then join their nearest heavy neighbour.
    """
    k = len(x)
    hi = k if hi is None else max(1, min(hi, k))
    lo = min(max(1, lo), k)
    if k == 1 or hi == 1:
        return [list(range(k))]
    merges = _dendrogram(x, w, conflict)
    min_mass = max(params.min_cluster_weight, params.min_cluster_share * w.sum())

    def heavy(labels: np.ndarray) -> np.ndarray:
        ids = np.unique(labels)
        return ids[[w[labels == c].sum() >= min_mass for c in ids]]

    # The tree cut at the threshold: the merges before the first one below it.
    two_stage = w.sum() >= params.voice_min_speech_s and params.voice_threshold <= 1
    threshold = params.strict_threshold if two_stage else params.threshold
    n = next((i for i, (*_, s) in enumerate(merges) if s < threshold), len(merges))
    labels = _cut(k, merges, n)
    if two_stage:
        labels = _merge_voices(x, w, conflict, labels, params.voice_threshold)
    found = len(heavy(labels))
    if not lo <= found <= hi:
        # Cut the tree into the allowed number of heavy clusters, nearest the threshold's. A
        # hint never splits what is plainly one voice (merged above `same_voice`): the audio
        # then gives fewer speakers than asked, and the caller says so.
        target = min(max(found, lo), hi)
        firm = sum(1 for _, _, s in merges if s >= params.same_voice)
        cuts = range(firm, k) if target > found else range(k)
        counts = _heavy_counts(merges, w, min_mass)
        best = min(cuts, key=lambda m: (abs(counts[m] - target), abs(m - n)))
        labels = _cut(k, merges, best)

    large = heavy(labels)
    if len(large) == 0:
        return [list(range(k))]
    sums = np.stack([(x[labels == c] * w[labels == c, None]).sum(axis=0) for c in large])
    for c in np.setdiff1d(np.unique(labels), large):
        mine = labels == c
        nearest = int(np.argmax(unit(sums) @ unit((x[mine] * w[mine, None]).sum(axis=0))))
        labels[mine] = large[nearest]
    return [np.flatnonzero(labels == c).tolist() for c in large]


def _merge_voices(
    x: np.ndarray, w: np.ndarray, conflict: np.ndarray, labels: np.ndarray, threshold: float
) -> np.ndarray:
    """Second stage: merge clusters that are one voice by a similarity that does not depend on
    how noisy the embeddings are.

    Average linkage compares clusters by the mean similarity of their members, which is the
    product of two things: how alike the voices are, and how tight each voice's embeddings
    are. Telephone bandwidth, codecs and short pieces loosen every voice, so one threshold
    on it sits on a knife edge for two similar voices (a resampled copy of a meeting merged
    two of its four people). Dividing by the clusters' own spread (their mean within-cluster
    similarity) leaves the cosine between the voices: about 1 for two clusters of one person,
    at most 0.6 between different people on real voices, whatever the audio went through.

    Clusters of one piece have no spread of their own; they take the pooled spread of the
    others. Pairs of pieces heard together count with the cannot-link penalty.
    """
    ids, labels = np.unique(labels, return_inverse=True)
    c = len(ids)
    if c < 2:
        return labels
    member = np.zeros((len(x), c))
    member[np.arange(len(x)), labels] = w
    sums = member.T @ x
    gram = sums @ sums.T - CANNOT_LINK_PENALTY * (member.T @ conflict.astype(np.float64) @ member)
    mass = member.sum(axis=0)
    squares = (member**2).sum(axis=0)
    self_sim = np.einsum("id,id->i", sums, sums)  # within-cluster sums, penalty left out
    alive = np.ones(c, dtype=bool)
    parent = np.arange(c)
    while alive.sum() > 1:
        pairs_w = mass**2 - squares
        multi = alive & (pairs_w > 1e-9)
        spread = np.full(c, np.nan)
        spread[multi] = (self_sim[multi] - squares[multi]) / pairs_w[multi]
        if not multi.any():
            break
        pooled = float(np.sum(spread[multi] * pairs_w[multi]) / np.sum(pairs_w[multi]))
        spread[alive & ~multi] = pooled
        spread = np.maximum(spread, 1e-3)
        sim = gram / np.outer(mass, mass) / np.sqrt(np.outer(spread, spread))
        sim[~alive] = -np.inf
        sim[:, ~alive] = -np.inf
        np.fill_diagonal(sim, -np.inf)
        a, b = np.unravel_index(int(np.argmax(sim)), sim.shape)
        if sim[a, b] < threshold:
            break
        a, b = min(a, b), max(a, b)
        self_sim[a] += self_sim[b] + 2 * float(sums[a] @ sums[b])
        sums[a] += sums[b]
        gram[a] += gram[b]
        gram[:, a] += gram[:, b]
        mass[a] += mass[b]
        squares[a] += squares[b]
        alive[b] = False
        parent[parent == b] = a
    return parent[labels]
