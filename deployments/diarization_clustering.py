"""Clustering of local (chunk, speaker) embeddings into global speakers.

A single 5 s chunk gives a noisy GE2E embedding, so local speakers are first linked into
*tracks* across overlapping chunks (the segmentation of the shared audio agrees), and tracks,
not chunks, are clustered. Two tracks heard in the same chunk were told apart by the
segmentation model, which makes them unlikely to be the same person: the distance between them
is penalised. Tracks with little speech never form a speaker of their own; they join the
nearest large cluster instead.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from typing import TYPE_CHECKING, NamedTuple

import numpy as np

from deployments.schemas import SpeakerTrack, SpeakerTurn

if TYPE_CHECKING:
    from pyannote.core import SlidingWindow, SlidingWindowFeature

# Average-linkage cosine distance above which clusters are not merged.
THRESHOLD = 0.25
CANNOT_LINK_PENALTY = 1.0
LINK_IOU = 0.5  # activity agreement needed to link a local speaker across adjacent chunks
MIN_SPEAKER_SECONDS = 1.5  # active speech needed to stand as a speaker of its own
# Exported tracks: a track's share of a turn shorter than MIN_PIECE_S goes to its neighbour
# within the turn (slivers only add payload and label flicker); a pause this long in a
# track's exclusive speech starts a new exported track.
MIN_PIECE_S = 0.5
SPLIT_PAUSE_S = 0.3


class Clustering(NamedTuple):
    hard: np.ndarray  # (chunks, local_speakers) cluster, -2 where unassigned
    centroids: np.ndarray  # (clusters, dim)
    track: np.ndarray  # (chunks, local_speakers) track, -1 where in no track


def cluster_embeddings(
    embeddings: np.ndarray,
    segmentations: np.ndarray,
    chunk_shift: float,
    frame_step: float,
    num_speakers: int | None = None,
    min_speakers: int | None = None,
    max_speakers: int | None = None,
    threshold: float | None = None,
) -> Clustering:
    """Assign every (chunk, local speaker) to a global speaker.

    Args:
        embeddings: (chunks, local_speakers, dim) unit vectors, NaN where none was extracted.
        segmentations: (chunks, frames, local_speakers) binarised local segmentation.
        chunk_shift: hop between consecutive chunks, in segmentation frames.
        frame_step: duration of one segmentation frame, in seconds.
        num_speakers: exact number of speakers, when known.
        min_speakers: lower bound on the number of speakers.
        max_speakers: upper bound on the number of speakers.
        threshold: linkage distance above which clusters are not merged (default THRESHOLD).

    Returns:
        hard: (chunks, local_speakers) cluster index, -2 where unassigned.
        centroids: (clusters, dim) L2-normalised, clean-speech-weighted mean embedding.
        track: (chunks, local_speakers) track index, -1 where in no track.
    """
    num_chunks, num_local, dim = embeddings.shape
    seg = np.nan_to_num(segmentations) > 0
    valid = ~np.any(np.isnan(embeddings), axis=2) & seg.any(axis=1)
    hard = np.full((num_chunks, num_local), -2, dtype=np.int64)
    if not valid.any():
        return Clustering(hard, np.zeros((0, dim), dtype=np.float32), hard.copy())

    track = _link_tracks(seg, valid, chunk_shift)
    track_emb, mass, together = track_features(embeddings, seg, track, chunk_shift, frame_step)
    num_tracks = len(track_emb)
    lo, hi = count_bounds(num_speakers, min_speakers, max_speakers, num_tracks)
    threshold = THRESHOLD if threshold is None else threshold
    labels = agglomerate(track_emb, together, mass, threshold, lo, hi)

    centroids = np.zeros((int(labels.max()) + 1, dim))
    np.add.at(centroids, labels, track_emb * mass[:, None])
    centroids = _normalise(centroids)
    emb = _weighted(embeddings, seg, valid)

    # Tracks keep their cluster unless two of them collide within one chunk; then the one
    # most similar to the cluster keeps it (one-to-one assignment per chunk).
    from scipy.optimize import linear_sum_assignment

    for c in range(num_chunks):
        speakers = np.nonzero(valid[c])[0]
        if len(speakers) == 0:
            continue
        ids = track[c, speakers]
        score = track_emb[ids] @ centroids.T
        score[np.arange(len(ids)), labels[ids]] += 2.0
        rows, cols = linear_sum_assignment(score, maximize=True)
        hard[c, speakers[rows]] = cols
        left = np.setdiff1d(np.arange(len(speakers)), rows)
        hard[c, speakers[left]] = labels[ids[left]]

    # Report each speaker by the (clean-weighted) embeddings finally assigned to it.
    for k in range(len(centroids)):
        mine = valid & (hard == k)
        if mine.any():
            centroids[k] = _normalise(emb[mine].sum(axis=0))
    return Clustering(hard, centroids.astype(np.float32), track)


def count_bounds(
    num_speakers: int | None, min_speakers: int | None, max_speakers: int | None, n: int
) -> tuple[int, int]:
    """Allowed range of speaker counts for n items (hints clipped to what is possible)."""
    lo = min(max(1, num_speakers or min_speakers or 1), n)
    hi = max(1, min(num_speakers or max_speakers or n, n))
    return lo, max(lo, hi)


def _weighted(embeddings: np.ndarray, seg: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """Embeddings scaled by their clean (single-speaker) frames; overlap-only ones count a
    little; invalid ones are zero."""
    clean = seg & (seg.sum(axis=2, keepdims=True) == 1)
    weight = np.where(valid, clean.sum(axis=1) + 1.0, 0.0)
    return np.nan_to_num(embeddings) * weight[..., None]


def track_features(
    embeddings: np.ndarray,
    seg: np.ndarray,
    track: np.ndarray,
    chunk_shift: float,
    frame_step: float,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-track unit embedding, seconds of activity, and co-occurrence in some chunk.

    Args:
        embeddings: (chunks, local_speakers, dim), NaN where none was extracted.
        seg: (chunks, frames, local_speakers) boolean local segmentation.
        track: (chunks, local_speakers) track id, < 0 for local speakers in no track.
    """
    valid = track >= 0
    num_tracks = int(track.max()) + 1
    emb = _weighted(embeddings, seg, valid)
    track_emb = np.zeros((num_tracks, embeddings.shape[2]))
    np.add.at(track_emb, track[valid], emb[valid])
    mass = _track_seconds(seg, track, num_tracks, chunk_shift, frame_step)
    together = np.zeros((num_tracks, num_tracks), dtype=bool)
    for c in range(len(track)):
        ids = track[c][valid[c]]
        together[np.ix_(ids, ids)] = True
    np.fill_diagonal(together, False)
    return _normalise(track_emb), mass, together


def _link_tracks(seg: np.ndarray, valid: np.ndarray, shift: float) -> np.ndarray:
    """Union local speakers of adjacent chunks whose activity agrees on the shared audio."""
    from scipy.optimize import linear_sum_assignment

    num_chunks, num_frames, num_local = seg.shape
    parent = np.arange(num_chunks * num_local)

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    s = round(shift)
    for c in range(num_chunks - 1):
        if s >= num_frames:
            break
        a = seg[c, s:].astype(float)  # (overlap, local)
        b = seg[c + 1, : num_frames - s].astype(float)
        inter = a.T @ b
        union = a.sum(0)[:, None] + b.sum(0)[None] - inter
        iou = np.where(union > 0, inter / np.maximum(union, 1), 0.0)
        for i, j in zip(*linear_sum_assignment(iou, maximize=True), strict=True):
            if iou[i, j] >= LINK_IOU and valid[c, i] and valid[c + 1, j]:
                parent[find(c * num_local + i)] = find((c + 1) * num_local + j)

    # Tracks are numbered over valid local speakers only; the others get -1.
    roots = np.array([find(i) for i in range(len(parent))]).reshape(num_chunks, num_local)
    track = np.full((num_chunks, num_local), -1, dtype=np.int64)
    track[valid] = np.unique(roots[valid], return_inverse=True)[1]
    return track


def _track_seconds(
    seg: np.ndarray, track: np.ndarray, num_tracks: int, shift: float, frame_step: float
) -> np.ndarray:
    """Seconds of (union) activity of each track on the global timeline."""
    num_chunks, num_frames, _ = seg.shape
    total = int(np.ceil((num_chunks - 1) * shift)) + num_frames
    active = np.zeros((num_tracks, total), dtype=bool)
    for c in range(num_chunks):
        first = round(c * shift)
        for s in np.nonzero(track[c] >= 0)[0]:
            active[track[c, s], first : first + num_frames] |= seg[c, :, s]
    return active.sum(axis=1) * frame_step


def agglomerate(
    x: np.ndarray, together: np.ndarray, mass: np.ndarray, threshold: float, lo: int, hi: int
) -> np.ndarray:
    """Average-linkage clustering of tracks; light clusters join their nearest heavy one.

    Args:
        x: (n, dim) unit embeddings.
        together: (n, n) cannot-link evidence (heard in one chunk): distance is penalised.
        mass: (n,) seconds of speech; clusters lighter than MIN_SPEAKER_SECONDS never
            stand as a speaker of their own.
        threshold: average-linkage distance at which merging stops.
        lo, hi: allowed number of (heavy) clusters.

    Returns:
        (n,) cluster ids 0..k-1.
    """
    from scipy.cluster.hierarchy import fcluster, linkage
    from scipy.spatial.distance import squareform

    n = len(x)
    if n == 1 or hi == 1:
        return np.zeros(n, dtype=np.int64)
    distance = np.clip(1.0 - x @ x.T, 0.0, 2.0) + CANNOT_LINK_PENALTY * together
    np.fill_diagonal(distance, 0.0)
    dendrogram = linkage(squareform(distance, checks=False), method="average")
    min_mass = min(MIN_SPEAKER_SECONDS, 0.5 * mass.max())

    def heavy(labels: np.ndarray) -> np.ndarray:
        ids = np.unique(labels)
        return ids[[mass[labels == k].sum() >= min_mass for k in ids]]

    labels = fcluster(dendrogram, threshold, criterion="distance")
    if not lo <= len(heavy(labels)) <= hi:
        # Cut the tree into the allowed number of heavy clusters, nearest the threshold's.
        target = min(max(len(heavy(labels)), lo), hi)
        best, best_gap = labels, None
        for k in range(1, n + 1):
            candidate = fcluster(dendrogram, k, criterion="maxclust")
            gap = abs(len(heavy(candidate)) - target)
            if best_gap is None or gap < best_gap:
                best, best_gap = candidate, gap
            if gap == 0:
                break
        labels = best

    large = heavy(labels)
    if len(large) == 0:
        return np.zeros(n, dtype=np.int64)
    large_centroids = _normalise(np.stack([x[labels == k].sum(axis=0) for k in large]))
    for k in np.setdiff1d(np.unique(labels), large):
        nearest = np.argmax(large_centroids @ _normalise(x[labels == k].sum(axis=0)))
        labels[labels == k] = large[nearest]
    return np.unique(labels, return_inverse=True)[1]


def _normalise(v: np.ndarray) -> np.ndarray:
    return v / np.maximum(np.linalg.norm(v, axis=-1, keepdims=True), 1e-8)


def export_tracks(
    embeddings: np.ndarray,
    segmentations: SlidingWindowFeature,
    frames: SlidingWindow,
    track: np.ndarray,
    hard: np.ndarray,
    names: dict[int, str],
    turn_lists: tuple[list[SpeakerTurn], list[SpeakerTurn]],
    embed: Callable[[list[tuple[float, float]]], np.ndarray],
) -> list[SpeakerTrack]:
    """The tracks behind the speakers, each owning the parts of the turns it dominates.

    Each turn of a speaker is cut among that speaker's tracks (one per (track, cluster)
    pair, as the per-chunk assignment may split a track) by their aggregated segmentation
    score, so every piece of (exclusive) turn belongs to exactly one track. A track is then
    cut again at pauses in its exclusive speech: the segmentation model sometimes keeps two
    similar voices in one local slot across a turn change, and only a finer unit, embedded
    from its own audio by `embed`, lets the global clustering tell them apart.
    """
    ok = (track >= 0) & np.isin(hard, list(names))
    if not ok.any():
        return []
    ids = np.full(track.shape, -1, dtype=np.int64)
    ids[ok] = np.unique((track * (int(hard.max()) + 1) + hard)[ok], return_inverse=True)[1]
    seg = np.nan_to_num(segmentations.data)
    chunk_shift = segmentations.sliding_window.step / frames.step
    emb, _, together = track_features(embeddings, seg > 0.5, ids, chunk_shift, frames.step)
    cluster = np.zeros(len(emb), dtype=np.int64)
    cluster[ids[ok]] = hard[ok]

    num_chunks, num_frames, _ = seg.shape
    total = int(np.ceil((num_chunks - 1) * chunk_shift)) + num_frames
    score = np.zeros((len(emb), total))
    for c in range(num_chunks):
        first = round(c * chunk_shift)
        for s in np.flatnonzero(ids[c] >= 0):
            score[ids[c, s], first : first + num_frames] += seg[c, :, s]
    middles = frames.start + 0.5 * frames.duration + np.arange(total) * frames.step
    of_speaker = {name: np.flatnonzero(cluster == k) for k, name in names.items()}
    min_frames = max(1, round(MIN_PIECE_S / frames.step))

    spans: tuple[list[list[tuple[float, float]]], ...] = tuple([[] for _ in emb] for _ in range(2))
    for out, turns in zip(spans, turn_lists, strict=True):
        for turn in turns:
            mine = of_speaker[turn.speaker]
            lo, hi = np.searchsorted(middles, [turn.start, turn.end])
            lo, hi = min(lo, total - 1), max(min(hi, total), lo + 1)
            best = mine[np.argmax(score[mine, lo:hi], axis=0)]
            # A piece boundary lies halfway between the last frame of one run and the next.
            edges = middles[lo:hi] - 0.5 * frames.step
            for owner, a, b in _pieces(best, min_frames):
                start = turn.start if a == 0 else round(float(edges[a]), 3)
                end = turn.end if b == len(best) else round(float(edges[b]), 3)
                if end > start:
                    out[owner].append((start, end))

    # Sub-tracks: (parent, exclusive spans, overlapping spans), split at pauses.
    subs: list[tuple[int, list[tuple[float, float]], list[tuple[float, float]]]] = []
    for i in range(len(emb)):
        groups: list[list[tuple[float, float]]] = []
        for a, b in sorted(spans[1][i]):
            if groups and a - groups[-1][-1][1] < SPLIT_PAUSE_S:
                groups[-1].append((a, b))
            else:
                groups.append([(a, b)])
        if not groups:
            if spans[0][i]:  # heard only in overlap
                subs.append((i, [], sorted(spans[0][i])))
            continue
        first = len(subs)
        subs += [(i, g, []) for g in groups]
        for a, b in spans[0][i]:  # overlapping turns go to the nearest exclusive group
            gap = [max(g[0][0] - b, a - g[-1][1], 0.0) for g in groups]
            subs[first + int(np.argmin(gap))][2].append((a, b))

    def extent(sub: tuple) -> tuple[float, float]:
        times = [t for span in sub[1] + sub[2] for t in span]
        return min(times), max(times)

    window = segmentations.sliding_window.duration
    out_tracks = []
    for n, (i, excl, turns) in enumerate(subs):
        # Only split tracks need their own embedding; whole ones keep the chunk average.
        split = sum(j == i for j, _, _ in subs) > 1
        own = embed(excl) if split and excl else None
        vector = emb[i] if own is None or np.isnan(own).any() else own
        a0, b0 = extent(subs[n])
        # Cannot-link: parents heard in one chunk, and the pieces close enough in time.
        linked = [
            m
            for m, (j, _, _) in enumerate(subs)
            if together[i, j]
            and (lambda e: e[0] - b0 < window and a0 - e[1] < window)(extent(subs[m]))
        ]
        out_tracks.append(
            SpeakerTrack(
                id=n,
                speaker=names[int(cluster[i])],
                embedding=np.round(vector, 5).tolist(),
                weight=round(sum(b - a for a, b in excl), 3),
                cannot_link=linked,
                turns=sorted(turns),
                exclusive_turns=excl,
            )
        )
    return out_tracks


def _pieces(owner: np.ndarray, min_frames: int) -> list[tuple[int, int, int]]:
    """Runs (owner, first, end) of equal owners; runs shorter than min_frames are absorbed by
    their longer neighbour."""
    change = np.flatnonzero(np.diff(owner)) + 1
    bounds = [0, *change.tolist(), len(owner)]
    runs = [[int(owner[a]), a, b] for a, b in itertools.pairwise(bounds)]
    while len(runs) > 1:
        i = min(range(len(runs)), key=lambda r: runs[r][2] - runs[r][1])
        if runs[i][2] - runs[i][1] >= min_frames:
            break
        left = runs[i - 1] if i > 0 else None
        right = runs[i + 1] if i + 1 < len(runs) else None
        into = (
            left if right is None or (left and left[2] - left[1] >= right[2] - right[1]) else right
        )
        into[1], into[2] = min(into[1], runs[i][1]), max(into[2], runs[i][2])
        del runs[i]
        merged: list[list[int]] = []  # neighbours with the same owner become one run
        for run in runs:
            if merged and merged[-1][0] == run[0]:
                merged[-1][2] = run[2]
            else:
                merged.append(run)
        runs = merged
    return [(o, a, b) for o, a, b in runs]
