"""From sliding-window local segmentation to speech pieces, and back to global turns.

1. Local speakers of adjacent windows whose activity agrees on the shared audio are linked into
   *tracks* (one voice followed across windows).
2. Each track's speech on the global timeline is cut at pauses into *pieces*, the units that get
   one CAM++ embedding and are clustered. A piece is short enough to hold one voice even where
   the segmentation kept two similar voices in one local slot across a turn change, and long
   enough (a turn) for a good embedding.
3. After clustering, every frame of a track takes the label of its piece (or the nearest
   piece), and global turns are reconstructed as pyannote does: per frame, the `count` most
   active clusters, averaged over the windows that cover the frame.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import numpy as np

from deployments.models.diarization.segmentation import LocalSegmentation

LINK_IOU = 0.5  # activity agreement needed to link local speakers of adjacent windows
PAUSE_S = 0.3  # a pause this long in a track starts a new piece
MAX_PIECE_S = 10.0  # longer stretches are cut into equal pieces
MIN_TOGETHER_S = 0.2  # two pieces heard together this long in a window are cannot-linked


@dataclass(frozen=True)
class Piece:
    track: int
    start: int  # first global frame
    end: int  # one past the last global frame
    frames: np.ndarray  # (end - start,) bool: frames where the track speaks
    clean: np.ndarray  # (end - start,) bool: ... and nobody else does


def link_tracks(seg: LocalSegmentation) -> np.ndarray:
    """(chunks, local) track id of every local speaker, -1 where it never speaks."""
    active = seg.data > 0.5
    chunks, frames, local = active.shape
    valid = active.any(axis=1)
    parent = np.arange(chunks * local)

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for c in range(chunks - 1):
        s = seg.first_frame(c + 1) - seg.first_frame(c)
        if s >= frames:
            continue
        a = active[c, s:].astype(np.float32)
        b = active[c + 1, : frames - s].astype(np.float32)
        inter = a.T @ b
        union = a.sum(0)[:, None] + b.sum(0)[None] - inter
        iou = np.where(union > 0, inter / np.maximum(union, 1), 0.0)
        for i, j in best_pairs(iou):
            if iou[i, j] >= LINK_IOU and valid[c, i] and valid[c + 1, j]:
                parent[find(c * local + i)] = find((c + 1) * local + j)
    roots = np.array([find(i) for i in range(len(parent))]).reshape(chunks, local)
    track = np.full((chunks, local), -1, dtype=np.int64)
    track[valid] = np.unique(roots[valid], return_inverse=True)[1]
    return track


def best_pairs(score: np.ndarray) -> list[tuple[int, int]]:
    """The one-to-one pairing of rows and columns of a square matrix with the highest total
    score (what scipy's linear_sum_assignment finds; 3 local speakers make 6 candidates)."""
    n = score.shape[0]
    cols = max(itertools.permutations(range(n)), key=lambda p: score[range(n), p].sum())
    return list(enumerate(cols))


def track_activity(seg: LocalSegmentation, track: np.ndarray) -> np.ndarray:
    """(tracks, global frames) mean activity over the windows that cover each frame."""
    chunks, frames, _ = seg.data.shape
    per_window = np.zeros((chunks, frames, int(track.max()) + 1), dtype=np.float32)
    for c in range(chunks):
        for s in np.flatnonzero(track[c] >= 0):
            per_window[c, :, track[c, s]] += seg.data[c, :, s]
    return seg.overlap_average(per_window).T


def make_pieces(activity: np.ndarray, count: np.ndarray, frame_step: float) -> list[Piece]:
    """Cut each track's speech (activity >= 0.5, else its most active frames) into pieces."""
    pause = max(1, round(PAUSE_S / frame_step))
    longest = max(1, round(MAX_PIECE_S / frame_step))
    pieces: list[Piece] = []
    for t, act in enumerate(activity):
        speaks = act >= 0.5
        if not speaks.any():  # every heard voice gets a piece, however faint
            speaks = act >= 0.5 * act.max() if act.max() > 0 else speaks
        idx = np.flatnonzero(speaks)
        if len(idx) == 0:
            continue
        breaks = np.flatnonzero(np.diff(idx) > pause) + 1
        for run in np.split(idx, breaks):
            a, b = int(run[0]), int(run[-1]) + 1
            parts = -(-(b - a) // longest)
            for p in range(parts):
                lo, hi = a + (b - a) * p // parts, a + (b - a) * (p + 1) // parts
                frames = speaks[lo:hi]
                pieces.append(Piece(t, lo, hi, frames, frames & (count[lo:hi] <= 1)))
    return pieces


def cannot_link(
    seg: LocalSegmentation, track: np.ndarray, pieces: list[Piece]
) -> set[tuple[int, int]]:
    """Pieces that one window heard speaking at the same time in two of its local slots: the
    segmentation model told them apart there, so they are different people. (Activity of two
    tracks from different windows that merely coincides in time is no such evidence.)"""
    chunks, _, local = seg.data.shape
    min_frames = max(1, round(MIN_TOGETHER_S / seg.frame_step))
    owner = np.full((int(track.max()) + 1, seg.num_global_frames), -1, dtype=np.int64)
    for i, p in enumerate(pieces):
        owner[p.track, p.start : p.end] = np.where(p.frames, i, owner[p.track, p.start : p.end])
    active = seg.data > 0.5
    pairs: set[tuple[int, int]] = set()
    for c in range(chunks):
        first = seg.first_frame(c)
        slots = [s for s in range(local) if track[c, s] >= 0]
        for s1, s2 in itertools.combinations(slots, 2):
            both = np.flatnonzero(active[c, :, s1] & active[c, :, s2])
            if len(both) < min_frames:
                continue
            a = owner[track[c, s1], first + both]
            b = owner[track[c, s2], first + both]
            ok = (a >= 0) & (b >= 0) & (a != b)
            found, n = np.unique(np.stack([a[ok], b[ok]]), axis=1, return_counts=True)
            for (i, j), k in zip(found.T.tolist(), n.tolist(), strict=True):
                if k >= min_frames:
                    pairs.add((min(i, j), max(i, j)))
    return pairs


def frame_labels(pieces: list[Piece], labels: np.ndarray, tracks: int, total: int) -> np.ndarray:
    """(tracks, global frames) cluster of each track at each frame: its piece's, or the
    nearest piece's where it has none (-1 for a track with no piece at all)."""
    out = np.full((tracks, total), -1, dtype=np.int64)
    for p, k in zip(pieces, labels, strict=True):
        out[p.track, p.start : p.end] = k
    for t in range(tracks):
        row = out[t]
        have = np.flatnonzero(row >= 0)
        if len(have) == 0 or len(have) == total:
            continue
        pos = np.searchsorted(have, np.arange(total)).clip(1, len(have) - 1)
        left, right = have[pos - 1], have[pos]
        g = np.arange(total)
        nearest = np.where(np.abs(g - left) <= np.abs(right - g), left, right)
        nearest = np.where(g < have[0], have[0], np.where(g > have[-1], have[-1], nearest))
        out[t] = row[nearest]
    return out


def reconstruct(
    seg: LocalSegmentation,
    track: np.ndarray,
    labels_at: np.ndarray,
    count: np.ndarray,
    num_clusters: int,
) -> tuple[np.ndarray, np.ndarray]:
    """Global (frames, clusters) binary speaker activity, and the per-cluster activation.

    Per window, each cluster's activation is the max over its local speakers; activations are
    averaged over the windows covering a frame, and the `count[g]` most active clusters speak.
    """
    chunks, frames, _ = seg.data.shape
    per_window = np.zeros((chunks, frames, max(num_clusters, 1)), dtype=np.float32)
    rows = np.arange(frames)
    for c in range(chunks):
        first = seg.first_frame(c)
        for s in np.flatnonzero(track[c] >= 0):
            lab = labels_at[track[c, s], first : first + frames]
            ok = lab >= 0
            np.maximum.at(per_window[c], (rows[ok], lab[ok]), seg.data[c, ok, s])
    act = seg.overlap_average(per_window)
    ranked = np.argsort(-act, axis=1, kind="stable")
    binary = np.zeros_like(act, dtype=bool)
    for j in range(min(int(count.max(initial=0)), act.shape[1])):
        g = np.flatnonzero(count > j)
        pick = ranked[g, j]
        keep = act[g, pick] > 0
        binary[g[keep], pick[keep]] = True
    return binary, act


def runs(mask: np.ndarray) -> list[tuple[int, int]]:
    """(first, end) frame index runs where mask is true."""
    edges = np.diff(np.concatenate([[0], mask.astype(np.int8), [0]]))
    starts, ends = np.flatnonzero(edges == 1).tolist(), np.flatnonzero(edges == -1).tolist()
    return list(zip(starts, ends, strict=True))


def piece_audio(piece: Piece, audio: np.ndarray, seg: LocalSegmentation, sr: int) -> np.ndarray:
    """The piece's clean speech if there is enough of it (0.5 s), else all its speech."""
    mask = piece.clean if piece.clean.sum() * seg.frame_step >= 0.5 else piece.frames
    parts = []
    for a, b in runs(mask):
        lo = round(seg.edge_time(piece.start + a) * sr)
        hi = round(seg.edge_time(piece.start + b) * sr)
        parts.append(audio[max(lo, 0) : max(hi, 0)])
    return np.concatenate(parts) if parts else np.zeros(0, dtype=np.float32)
