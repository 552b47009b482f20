"""Offline speaker diarization: segmentation-3.0 -> speech pieces -> CAM++ -> clustering.

1. segmentation-3.0 over 10 s windows gives up to 3 local speakers per window, overlap included;
2. local speakers are linked into tracks and cut into pieces at pauses (pieces.py);
3. each piece gets one CAM++ embedding of its clean (non-overlapped) speech (embedding.py);
4. pieces are clustered into speakers, estimating the count or honouring the hints
   (clustering.py); pieces heard in one window by different local slots stay apart;
5. global turns are reconstructed from the clustered local activities and the frame-level
   speaker count, so overlapped speech comes out as overlapping turns; exclusive turns (one
   speaker at a time) are built the same way with the count capped at 1;
6. the pieces are exported as tracks, each owning its share of the turns, so the job manager can
   cluster the pieces of every segment of a long recording jointly.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from deployments.core.clustering import ClusterParams, cluster, count_bounds
from deployments.core.schemas import (
    SAMPLE_RATE,
    Diarization,
    DiarizeOptions,
    SpeakerTrack,
    SpeakerTurn,
)
from deployments.models.diarization import pieces as pc
from deployments.models.diarization.embedding import SpeakerEmbedder
from deployments.models.diarization.segmentation import LocalSegmentation, Segmenter

SEGMENTATION_STEP = 0.2  # window hop as a fraction of the 10 s window (0.1 is pyannote 3.1's)
# 0.2 halves segmentation, 62 % of the diarizer's time; on real speech DER moved by -0.002 to
# +0.017 against 0.1 and speaker counts did not change (docs/BENCHMARKS.md section 0b).
MIN_AUDIO_SECONDS = 0.25
MIN_EMBED_S = 0.4  # shorter pieces are embedded from the audio around them


@dataclass
class Analysis:
    """What the models found in one piece of audio, before clustering (seg None: no speech)."""

    duration: float
    seg: LocalSegmentation | None = None
    count: np.ndarray | None = None  # (global frames,) speakers active
    track: np.ndarray | None = None  # (chunks, local) track ids
    activity: np.ndarray | None = None  # (tracks, global frames)
    pieces: list[pc.Piece] = field(default_factory=list)
    vectors: np.ndarray | None = None  # (pieces, dim) CAM++ embeddings
    weights: np.ndarray | None = None  # (pieces,) seconds of clean speech
    links: set[tuple[int, int]] = field(default_factory=set)  # pieces heard together


class SpeakerDiarizer:
    """Who spoke when, plus one CAM++ embedding per speaker.

    Args:
        segmentation_path: pyannote/segmentation-3.0 checkpoint.
        embedding_path: CAM++ state dict.
        device: torch device for both models.
        num_threads: torch intra-op threads; None leaves torch's default.
        step: segmentation window hop as a fraction of the 10 s window.
        params: clustering parameters.
        half: CAM++ in float16 (meant for CUDA; segmentation stays float32, its LSTM
            flips ~0.6 % of frames in float16).
    """

    def __init__(
        self,
        segmentation_path: str | Path,
        embedding_path: str | Path,
        device: str = "cpu",
        num_threads: int | None = None,
        step: float = SEGMENTATION_STEP,
        params: ClusterParams | None = None,
        half: bool = False,
    ) -> None:
        import torch

        if num_threads:
            torch.set_num_threads(num_threads)
        self.segmenter = Segmenter(segmentation_path, device=device, step=step)
        self.embedder = SpeakerEmbedder(embedding_path, device=device, half=half)
        self.params = params or ClusterParams()
        # Pay one-off costs (first forward passes) at load, not on the first request.
        noise = np.random.default_rng(0).normal(0, 0.05, SAMPLE_RATE).astype(np.float32)
        self.segmenter(noise)
        self.embedder([noise])

    def __call__(
        self,
        audio: np.ndarray,
        options: DiarizeOptions = DiarizeOptions(),  # noqa: B008 (frozen, safe to share)
    ) -> Diarization:
        """Diarize float32 mono 16 kHz audio; times are relative to its start."""
        return self.finish(self.analyse(audio), options)

    def analyse(self, audio: np.ndarray) -> Analysis:
        """The model work (segmentation, pieces, embeddings): everything before clustering."""
        return self.analyse_many([audio])[0]

    def analyse_many(self, audios: list[np.ndarray]) -> list[Analysis]:
        """`analyse` for several audios at once: all their segmentation windows, and then all
        their pieces, share forward passes (a GPU stays busy on short segments)."""
        audios = [np.ascontiguousarray(np.asarray(a, dtype=np.float32).reshape(-1)) for a in audios]
        out = [Analysis(len(a) / SAMPLE_RATE) for a in audios]
        live = [i for i, a in enumerate(audios) if _has_sound(a)]
        segs = self.segmenter.many([audios[i] for i in live])
        found = []  # (index, seg, count, track, activity, pieces)
        for i, seg in zip(live, segs, strict=True):
            local = self._local(seg)
            if local is None:
                continue
            count, track = local
            activity = pc.track_activity(seg, track)
            found.append(
                (i, seg, count, track, activity, pc.make_pieces(activity, count, seg.frame_step))
            )
        piece_audio = [
            self._piece_audio(p, audios[i], seg) for i, seg, *_, pieces in found for p in pieces
        ]
        vectors = self.embedder(piece_audio)
        at = 0
        for i, seg, count, track, activity, pieces in found:
            weights = np.array([_weight(p, seg.frame_step) for p in pieces])
            links = pc.cannot_link(seg, track, pieces)
            mine = vectors[at : at + len(pieces)]
            at += len(pieces)
            out[i] = Analysis(
                out[i].duration, seg, count, track, activity, pieces, mine, weights, links
            )
        return out

    def _local(self, seg: LocalSegmentation):
        """(speaker count, local tracks) of a segmentation, or None without speech."""
        count = seg.speaker_count(self.params.count_onset)
        track = pc.link_tracks(seg)
        if track.max() < 0 or count.max() == 0:
            return None
        return count, track

    def speaker_changes(self, audio: np.ndarray) -> list[SpeakerTurn]:
        """Who speaks alone when, from the segmentation model only (no embeddings, no
        clustering): each local track (one voice followed across windows) is a speaker here,
        so the turns change where the voice does, though one person may come back as
        another track. A third to a half of what diarizing costs (no embeddings)."""
        audio = np.ascontiguousarray(np.asarray(audio, dtype=np.float32).reshape(-1))
        if not _has_sound(audio):
            return []
        seg = self.segmenter(audio)
        local = self._local(seg)
        if local is None:
            return []
        count, track = local
        duration = len(audio) / SAMPLE_RATE
        tracks = int(track.max()) + 1
        own = np.repeat(np.arange(tracks)[:, None], seg.num_global_frames, axis=1)
        alone, _ = pc.reconstruct(seg, track, own, np.minimum(count, 1), tracks)
        times = _FrameTimes(seg, duration)
        turns = [SpeakerTurn(start=a, end=b, speaker=f"T{c}") for c, a, b in times.turns(alone)]
        return sorted(turns, key=lambda t: (t.start, t.end))

    def finish(
        self,
        analysis: Analysis,
        options: DiarizeOptions = DiarizeOptions(),  # noqa: B008 (frozen, safe to share)
    ) -> Diarization:
        """Cluster an analysis into speakers and reconstruct their turns (no model work)."""
        a = analysis
        duration = a.duration
        if a.seg is None:
            return Diarization(
                duration=duration, turns=[], exclusive_turns=[], speakers=[], embeddings={}
            )
        seg, track, activity, pieces = a.seg, a.track, a.activity, a.pieces
        vectors, weights, links, count = a.vectors, a.weights, a.links, a.count
        lo, hi = count_bounds(options.num_speakers, options.min_speakers, options.max_speakers)
        result = cluster(vectors, weights, links, lo, hi, self.params)

        labels_at = pc.frame_labels(pieces, result.labels, len(activity), seg.num_global_frames)
        k = len(result.centroids)
        if hi is not None:
            count = np.minimum(count, hi)
        binary, _ = pc.reconstruct(seg, track, labels_at, count, k)
        exclusive, _ = pc.reconstruct(seg, track, labels_at, np.minimum(count, 1), k)

        # Speakers are named in order of first appearance; clusters that never speak drop out.
        first = {c: int(np.flatnonzero(binary[:, c])[0]) for c in range(k) if binary[:, c].any()}
        order = sorted(first, key=first.get)
        names = {c: f"SPEAKER_{i:02d}" for i, c in enumerate(order)}
        times = _FrameTimes(seg, duration)
        turns = [SpeakerTurn(start=a, end=b, speaker=names[c]) for c, a, b in times.turns(binary)]
        turns.sort(key=lambda t: (t.start, t.end))
        excl = [SpeakerTurn(start=a, end=b, speaker=names[c]) for c, a, b in times.turns(exclusive)]
        excl.sort(key=lambda t: (t.start, t.end))
        tracks = _export(pieces, result.labels, vectors, weights, links, binary, exclusive)
        kept = {i for i, tr in enumerate(tracks) if tr[0] in names}
        return Diarization(
            duration=duration,
            turns=turns,
            exclusive_turns=excl,
            speakers=[names[c] for c in order],
            embeddings={names[c]: np.round(result.centroids[c], 5).tolist() for c in order},
            tracks=[
                SpeakerTrack(
                    id=i,
                    speaker=names[c],
                    embedding=np.round(v, 5).tolist(),
                    weight=round(float(w), 3),
                    cannot_link=[j for j in cl if j in kept],
                    turns=times.spans(t),
                    exclusive_turns=times.spans(x),
                )
                for i, (c, v, w, cl, t, x) in enumerate(tracks)
                if c in names
            ],
            notes=result.notes,
        )

    @staticmethod
    def _piece_audio(piece: pc.Piece, audio: np.ndarray, seg: LocalSegmentation) -> np.ndarray:
        samples = pc.piece_audio(piece, audio, seg, SAMPLE_RATE)
        need = round(MIN_EMBED_S * SAMPLE_RATE)
        if len(samples) >= need:
            return samples
        centre = seg.frame_start + (0.5 * (piece.start + piece.end)) * seg.frame_step
        lo = max(0, min(round(centre * SAMPLE_RATE) - need // 2, len(audio) - need))
        return audio[lo : lo + need]


def _has_sound(audio: np.ndarray) -> bool:
    return len(audio) / SAMPLE_RATE >= MIN_AUDIO_SECONDS and bool(np.any(audio))


def _weight(piece: pc.Piece, frame_step: float) -> float:
    """Seconds of clean speech; a piece heard only in overlap counts half its speech."""
    clean = float(piece.clean.sum()) * frame_step
    return clean if clean >= 0.5 else 0.5 * float(piece.frames.sum()) * frame_step


class _FrameTimes:
    """Global frame indices to seconds: a run of frames spans from half a hop before its first
    frame's centre to half a hop after its last."""

    def __init__(self, seg: LocalSegmentation, duration: float) -> None:
        self.seg, self.duration = seg, duration

    def span(self, a: int, b: int) -> tuple[float, float]:
        start = min(max(self.seg.edge_time(a), 0.0), self.duration)
        end = min(max(self.seg.edge_time(b), 0.0), self.duration)
        return round(start, 3), round(end, 3)

    def spans(self, mask: np.ndarray) -> list[tuple[float, float]]:
        out = [self.span(a, b) for a, b in pc.runs(mask)]
        return [(a, b) for a, b in out if b > a]

    def turns(self, binary: np.ndarray) -> list[tuple[int, float, float]]:
        return [(c, a, b) for c in range(binary.shape[1]) for a, b in self.spans(binary[:, c])]


def _export(pieces, labels, vectors, weights, links, binary, exclusive) -> list[tuple]:
    """Per piece: (cluster, embedding, weight, cannot-link ids, turn mask, exclusive mask).

    Each frame a cluster speaks is owned by one of that cluster's pieces: the one active there,
    or else the nearest in time, so every piece of turn belongs to exactly one piece.
    """
    total = binary.shape[0]
    owner = np.full((binary.shape[1], total), -1, dtype=np.int64)
    g = np.arange(total)
    for k in range(binary.shape[1]):
        mine = np.flatnonzero(labels == k)
        if len(mine) == 0:
            continue
        # Distance in frames to each piece's span; 0 inside it (ties go to the heavier piece).
        dist = np.stack(
            [
                np.maximum(pieces[i].start - g, 0) + np.maximum(g - pieces[i].end + 1, 0)
                for i in mine
            ]
        ).astype(np.float64)
        dist -= 1e-6 * weights[mine][:, None]
        owner[k] = mine[np.argmin(dist, axis=0)]
    partners: dict[int, list[int]] = {}
    for a, b in links:
        partners.setdefault(a, []).append(b)
        partners.setdefault(b, []).append(a)
    out = []
    for i, k in enumerate(labels):
        own = owner[k] == i
        out.append(
            (
                int(k),
                vectors[i],
                weights[i],
                sorted(partners.get(i, [])),
                binary[:, k] & own,
                exclusive[:, k] & own,
            )
        )
    return out
