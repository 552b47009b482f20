"""Offline speaker diarization: pyannote segmentation + GE2E (Resemblyzer) speaker embeddings.

pyannote.audio 4's stock `SpeakerDiarization` pipeline pulls a PLDA from the hub when it is
built, so it cannot run offline. This module reassembles the same recipe from its parts:

1. sliding-window local segmentation (5 s chunks, up to 3 speakers per chunk);
2. one GE2E embedding per (chunk, local speaker), computed from that speaker's clean
   (non-overlapped) frames only;
3. local speakers are linked across overlapping chunks into tracks, and tracks are clustered
   (see diarization_clustering.py); tracks with little speech join the nearest large cluster
   instead of forming speakers of their own;
4. reconstruction of global turns from the clustered local segmentations and the frame-level
   speaker count;
5. export of the tracks with the turn pieces each owns, so that the job manager can
   re-cluster the tracks of all segments of a long recording jointly.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from deployments.diarization_clustering import cluster_embeddings, export_tracks
from deployments.schemas import SAMPLE_RATE, Diarization, DiarizeOptions, SpeakerTurn

if TYPE_CHECKING:
    from pyannote.core import Annotation, SlidingWindowFeature

# Segmentation: the sigmoid outputs of pyannote/segmentation 2022.07 are binarised at this
# threshold; gaps shorter than MIN_DURATION_OFF inside a speaker's turn are filled.
ONSET = 0.5
MIN_DURATION_OFF = 0.1
# Step of the sliding segmentation window, as a fraction of its 5 s (pyannote's default).
# 0.2 (settings.diarization_step) halves segmentation and embedding work, so the diarizer
# runs 2.7x faster, but costs DER (pyannote sample 0.070 -> 0.081) and word-label
# consistency on long meetings (92 % instead of >= 95 %): kept opt-in.
SEGMENTATION_STEP = 0.1
# GE2E is trained on 1.6 s partials (160 mel frames); shorter clean speech gives noisy
# embeddings, which are still assigned to a cluster but never create one.
MEL_STEP = 0.01
PARTIAL_FRAMES = 160
MIN_EMBED_FRAMES = 40
MIN_AUDIO_SECONDS = 0.25
EMBEDDING_DIM = 256


class SpeakerDiarizer:
    """Offline diarizer: who spoke when, plus one embedding per speaker.

    Args:
        segmentation_path: pyannote/segmentation (PyanNet) checkpoint.
        embedding_path: Resemblyzer GE2E checkpoint (`pretrained.pt`).
        device: torch device for both models.
        num_threads: torch intra-op threads; None leaves torch's default.
        step: segmentation window step as a fraction of the window (0 < step <= 1).
    """

    def __init__(
        self,
        segmentation_path: str | Path,
        embedding_path: str | Path,
        device: str = "cpu",
        num_threads: int | None = None,
        step: float = SEGMENTATION_STEP,
    ) -> None:
        import torch
        from pyannote.audio import Inference, Model
        from resemblyzer import VoiceEncoder

        if num_threads:
            torch.set_num_threads(num_threads)
        self.device = torch.device(device)
        model = Model.from_pretrained(Path(segmentation_path).expanduser())
        if model is None:
            raise FileNotFoundError(f"cannot load segmentation model {segmentation_path}")
        self._frames = model.receptive_field
        duration = model.specifications.duration
        self._segmentation = Inference(
            model,
            duration=duration,
            step=step * duration,
            skip_aggregation=True,
            device=self.device,
            batch_size=32,
        )
        self._encoder = VoiceEncoder(
            device=self.device, verbose=False, weights_fpath=Path(embedding_path).expanduser()
        ).eval()
        self._warm_up()

    def _warm_up(self) -> None:
        """Pay one-off costs (librosa's JIT, first forward passes) at load, not per request."""
        import torch
        from resemblyzer.audio import wav_to_mel_spectrogram

        noise = np.random.default_rng(0).normal(0, 0.05, SAMPLE_RATE).astype(np.float32)
        with torch.inference_mode():
            self._segmentation(
                {"waveform": torch.from_numpy(noise)[None], "sample_rate": SAMPLE_RATE}
            )
        self._encode([torch.from_numpy(wav_to_mel_spectrogram(noise))])

    def __call__(
        self,
        audio: np.ndarray,
        options: DiarizeOptions = DiarizeOptions(),  # noqa: B008 (frozen, safe to share)
    ) -> Diarization:
        """Diarize one stretch of audio.

        Args:
            audio: float32 mono samples at 16 kHz.
            options: speaker-count hints (exact, or bounds).

        Returns:
            Turns (possibly overlapping), exclusive turns (at most one speaker at a time),
            speaker labels `SPEAKER_00`... and one L2-normalised GE2E centroid per speaker.
        """
        import torch
        from pyannote.audio.pipelines.utils import SpeakerDiarizationMixin as Mixin
        from pyannote.audio.utils.signal import binarize
        from resemblyzer.audio import normalize_volume, wav_to_mel_spectrogram

        audio = np.ascontiguousarray(np.asarray(audio, dtype=np.float32).reshape(-1))
        duration = len(audio) / SAMPLE_RATE
        empty = Diarization(
            duration=duration, turns=[], exclusive_turns=[], speakers=[], embeddings={}
        )
        if duration < MIN_AUDIO_SECONDS or not np.any(audio):
            return empty

        with torch.inference_mode():
            waveform = torch.from_numpy(audio)[None]
            segmentations = self._segmentation({"waveform": waveform, "sample_rate": SAMPLE_RATE})
        binarized = binarize(segmentations, onset=ONSET, initial_state=False)
        count = Mixin.speaker_count(binarized, self._frames, warm_up=(0.0, 0.0))
        if np.nanmax(count.data) == 0:
            return empty

        # Resemblyzer's mels are not log-compressed, so level matters: match its training
        # preprocessing (boost quiet input to -30 dBFS).
        mel = wav_to_mel_spectrogram(normalize_volume(audio, -30, increase_only=True))
        embeddings = self._embed(mel, binarized)
        clustering = cluster_embeddings(
            embeddings,
            binarized.data,
            chunk_shift=binarized.sliding_window.step / self._frames.step,
            frame_step=self._frames.step,
            num_speakers=options.num_speakers,
            min_speakers=options.min_speakers,
            max_speakers=options.max_speakers,
        )
        hard_clusters, centroids = clustering.hard, clustering.centroids
        # Local speakers that never speak in their chunk must not vote in reconstruction.
        hard_clusters[np.sum(binarized.data, axis=1) == 0] = -2
        max_speakers = options.num_speakers or options.max_speakers or len(centroids)
        count.data = np.minimum(count.data, max(max_speakers, 1)).astype(np.int8)

        turns = _reconstruct(segmentations, hard_clusters, count, duration)
        count.data = np.minimum(count.data, 1).astype(np.int8)
        exclusive = _reconstruct(segmentations, hard_clusters, count, duration)

        # Name speakers in order of first appearance; drop clusters that never won a frame.
        order: list[int] = []
        for segment, _, k in turns.itertracks(yield_label=True):
            if k not in order and segment.duration > 0:
                order.append(k)
        names = {k: f"SPEAKER_{i:02d}" for i, k in enumerate(order)}
        speaker_turns = _to_turns(turns, names, duration)
        exclusive_turns = _without_overlap(_to_turns(exclusive, names, duration))
        tracks = export_tracks(
            embeddings,
            segmentations,
            self._frames,
            clustering.track,
            hard_clusters,
            names,
            (speaker_turns, exclusive_turns),
            lambda spans: self._embed_spans(mel, spans),
        )
        return Diarization(
            duration=duration,
            turns=speaker_turns,
            exclusive_turns=exclusive_turns,
            speakers=[names[k] for k in order],
            embeddings={names[k]: centroids[k].astype(float).tolist() for k in order},
            tracks=tracks,
        )

    def _embed(self, mel: np.ndarray, binarized: SlidingWindowFeature) -> np.ndarray:
        """GE2E embedding of each (chunk, local speaker) from its clean, non-overlapped speech.

        The mel spectrogram of the whole input is computed once and each (chunk, speaker)
        gathers its clean mel frames from it, so no audio is re-sliced or re-transformed.
        Returns a (num_chunks, local_speakers, 256) array, NaN where there was too little.
        """
        import torch

        data = np.nan_to_num(binarized.data)
        num_chunks, num_frames, num_local = data.shape
        clean = data * (np.sum(data, axis=2, keepdims=True) == 1)
        chunks = binarized.sliding_window

        # Map every mel frame of a chunk to the closest segmentation frame.
        n_mel = round(chunks.duration / MEL_STEP)
        rel = np.arange(n_mel) * MEL_STEP
        seg_idx = np.clip(
            np.rint((rel - self._frames.start - 0.5 * self._frames.duration) / self._frames.step),
            0,
            num_frames - 1,
        ).astype(int)

        sequences, owners = [], []
        for c in range(num_chunks):
            first = round(chunks[c].start / MEL_STEP)
            mel_idx = first + np.arange(n_mel)
            inside = mel_idx < len(mel)
            for s in range(num_local):
                frames = mel[mel_idx[inside & (clean[c, seg_idx, s] > 0)]]
                if len(frames) < MIN_EMBED_FRAMES:
                    # Speaker only heard in overlap: a contaminated embedding beats none.
                    frames = mel[mel_idx[inside & (data[c, seg_idx, s] > 0)]]
                if len(frames) < MIN_EMBED_FRAMES:
                    continue
                # Long stretches are cut into 1.6 s partials (as in training) and averaged.
                starts = range(0, max(1, len(frames) - PARTIAL_FRAMES + 1), PARTIAL_FRAMES // 2)
                for start in starts:
                    sequences.append(torch.from_numpy(frames[start : start + PARTIAL_FRAMES]))
                    owners.append(c * num_local + s)

        embeddings = np.full((num_chunks * num_local, EMBEDDING_DIM), np.nan, dtype=np.float32)
        if not sequences:
            return embeddings.reshape(num_chunks, num_local, EMBEDDING_DIM)
        partials = self._encode(sequences)
        owners_arr = np.asarray(owners)
        for owner in np.unique(owners_arr):
            mean = partials[owners_arr == owner].mean(axis=0)
            embeddings[owner] = mean / max(np.linalg.norm(mean), 1e-8)
        return embeddings.reshape(num_chunks, num_local, EMBEDDING_DIM)

    def _embed_spans(self, mel: np.ndarray, spans: list[tuple[float, float]]) -> np.ndarray:
        """One GE2E embedding of the speech in `spans` (seconds), NaN if too little."""
        import torch

        idx = np.concatenate(
            [np.arange(round(a / MEL_STEP), min(round(b / MEL_STEP), len(mel))) for a, b in spans]
        ).astype(int)
        if len(idx) < PARTIAL_FRAMES:
            return np.full(EMBEDDING_DIM, np.nan, dtype=np.float32)
        frames = mel[idx]
        starts = range(0, len(frames) - PARTIAL_FRAMES + 1, PARTIAL_FRAMES // 2)
        partials = self._encode([torch.from_numpy(frames[i : i + PARTIAL_FRAMES]) for i in starts])
        mean = partials.mean(axis=0)
        return mean / max(np.linalg.norm(mean), 1e-8)

    def _encode(self, sequences: list) -> np.ndarray:
        """Run the GE2E LSTM on variable-length mel sequences in one packed batch."""
        import torch
        from torch.nn.utils.rnn import pack_sequence

        enc = self._encoder
        with torch.inference_mode():
            packed = pack_sequence([s.to(self.device) for s in sequences], enforce_sorted=False)
            _, (hidden, _) = enc.lstm(packed)
            # h_n of a packed batch is in the original (unsorted) order.
            raw = enc.relu(enc.linear(hidden[-1]))
            out = raw / torch.norm(raw, dim=1, keepdim=True).clamp_min(1e-8)
        return out.cpu().numpy()


def _reconstruct(
    segmentations: SlidingWindowFeature,
    hard_clusters: np.ndarray,
    count: SlidingWindowFeature,
    duration: float,
) -> Annotation:
    """Global discrete diarization from clustered local segmentations (as pyannote does)."""
    from pyannote.audio.pipelines.utils import SpeakerDiarizationMixin as Mixin
    from pyannote.core import SlidingWindowFeature

    num_chunks, num_frames, _ = segmentations.data.shape
    num_clusters = max(int(np.max(hard_clusters)) + 1, 1)
    clustered = np.full((num_chunks, num_frames, num_clusters), np.nan)
    for c, (cluster, (_, segmentation)) in enumerate(
        zip(hard_clusters, segmentations, strict=True)
    ):
        for k in np.unique(cluster):
            if k >= 0:
                clustered[c, :, k] = np.max(segmentation[:, cluster == k], axis=1)
    discrete = Mixin.to_diarization(
        SlidingWindowFeature(clustered, segmentations.sliding_window), count
    )
    return Mixin.to_annotation(discrete, min_duration_off=MIN_DURATION_OFF)


def _to_turns(annotation: Annotation, names: dict[int, str], duration: float) -> list[SpeakerTurn]:
    turns = []
    for segment, _, k in annotation.itertracks(yield_label=True):
        start, end = max(0.0, segment.start), min(duration, segment.end)
        if k in names and end > start:
            turns.append(SpeakerTurn(start=round(start, 3), end=round(end, 3), speaker=names[k]))
    turns.sort(key=lambda t: (t.start, t.end))
    return turns


def _without_overlap(turns: list[SpeakerTurn]) -> list[SpeakerTurn]:
    """Trim turns so none overlaps the previous one (gap filling can make them touch)."""
    out: list[SpeakerTurn] = []
    for turn in turns:
        start = max(turn.start, out[-1].end) if out else turn.start
        if turn.end > start:
            out.append(turn.model_copy(update={"start": start}))
    return out
