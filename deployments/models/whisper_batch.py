"""faster-whisper inference that batches 30 s windows from many requests into one pass.

Each request is cut into windows at silences (Silero VAD). The requests of a batch are laid
end to end in one buffer (each from a 10 ms boundary, window_decoding.on_grid), and their
windows decoded together by `BatchedInferencePipeline` with explicit clip timestamps;
results are then mapped back to their request. One decoder pass over several requests keeps
the CPU/GPU busy between calls. On CPU a request's words and times do not depend on the
batch it shared (window_decoding.py).
"""

from __future__ import annotations

import itertools
import logging
import os
import threading
from collections.abc import Sequence

import numpy as np

from deployments.core.schemas import (
    SAMPLE_RATE,
    InputRejected,
    TranscribeOptions,
    Transcription,
    TranscriptSegment,
    Word,
)
from deployments.core.window_language import (
    RequestLanguage,
    WindowGuess,
    among,
    choose,
    hinted,
    parse_detection,
)
from deployments.models.language_probe import language_cuts, region_languages
from deployments.models.loop_fallback import unloop
from deployments.models.priority_gate import PriorityGate, gated
from deployments.models.window_decoding import (
    DecodeWindows,
    clip_at,
    decode_clips,
    on_grid,
    time_words_per_window,
)

log = logging.getLogger(__name__)

WINDOW_S = 30.0
# Rounds of decoding the speech windows left without words (core.unheard). A window that
# opens in one language and goes on in another can end early again: a piece decoded once
# more stopped after the first language's words too, and the second round found 20 s of
# English. On a 2.5 min meeting of three languages (base): words found 141 / 265 / 272 /
# 274 with 0-3 rounds, for 5 / 11 / 17 / 19 windows decoded.
UNHEARD_ROUNDS = 2


def pick_device(requested: str) -> tuple[str, str]:
    """(device, compute_type): CUDA with float16 when a GPU is visible, else CPU int8."""
    import ctranslate2

    if requested == "cpu":
        return "cpu", "int8"
    has_gpu = ctranslate2.get_cuda_device_count() > 0
    if requested == "cuda" and not has_gpu:
        raise RuntimeError(
            f"device='cuda' was requested but no CUDA device is visible "
            f"(CUDA_VISIBLE_DEVICES={os.environ.get('CUDA_VISIBLE_DEVICES')!r})"
        )
    return ("cuda", "float16") if has_gpu else ("cpu", "int8")


def speech_windows(
    audio: np.ndarray, vad_filter: bool, cuts: Sequence[float] = ()
) -> list[tuple[int, int]]:
    """Sample ranges of at most 30 s that start and end in silence where VAD allows, and
    never span one of `cuts` (seconds)."""
    return speech_pieces(audio, vad_filter, cuts)[1]


def speech_pieces(
    audio: np.ndarray, vad_filter: bool, cuts: Sequence[float] = ()
) -> tuple[list[tuple[int, int]], list[tuple[int, int]]]:
    """(speech regions VAD found, split at `cuts`; the windows they are decoded in, as
    `speech_windows`), in samples."""
    n = len(audio)
    limit = int(WINDOW_S * SAMPLE_RATE)
    if not vad_filter:
        regions = [(s, min(s + limit, n)) for s in range(0, n, limit)]
    else:
        from faster_whisper.vad import VadOptions, get_speech_timestamps

        speech = get_speech_timestamps(
            audio, VadOptions(max_speech_duration_s=WINDOW_S - 1, min_silence_duration_ms=160)
        )
        regions = [(int(r["start"]), int(r["end"])) for r in speech]
    marks = sorted({int(c * SAMPLE_RATE) for c in cuts if 0 < c * SAMPLE_RATE < n})
    pieces: list[tuple[int, int]] = []
    for start, end in regions:  # a region across a cut becomes two
        inside = [m for m in marks if start < m < end]
        bounds = [start, *inside, end]
        pieces += [(a, b) for a, b in itertools.pairwise(bounds) if b > a]
    windows: list[tuple[int, int]] = []
    for start, end in pieces:
        crosses = windows and any(windows[-1][1] <= m <= start for m in marks)
        if windows and end - windows[-1][0] <= limit and not crosses:
            windows[-1] = (windows[-1][0], end)
        else:
            windows.append((start, end))
    return pieces, windows


class WhisperBatchTranscriber:
    """Plain (Ray-free) batched transcriber around one loaded WhisperModel."""

    def __init__(
        self,
        model_path: str,
        device: str = "auto",
        cpu_threads: int = 0,
        batch_size: int = 8,
        download_root: str | None = None,
        local_files_only: bool = True,
    ) -> None:
        from faster_whisper import BatchedInferencePipeline, WhisperModel

        self.device, self.compute_type = pick_device(device)
        if self.device == "cuda":
            from deployments.models.cuda_libs import preload_cuda_libraries

            preload_cuda_libraries()  # before CTranslate2 first needs cuBLAS
        self.model = WhisperModel(
            model_path,
            device=self.device,
            compute_type=self.compute_type,
            cpu_threads=cpu_threads,
            download_root=download_root,
            local_files_only=local_files_only,
        )
        self.model.model = _DetectionLog(self.model.model)
        if self.device == "cpu":  # on CUDA the encoder output is not a host array
            time_words_per_window(self.model)
        # One pipeline per lane (it keeps per-call state); the gate runs one pass at a time.
        self.pipelines = {lane: BatchedInferencePipeline(self.model) for lane in (False, True)}
        self.gate = PriorityGate()
        self.batch_size = batch_size

    @property
    def multilingual(self) -> bool:
        return bool(self.model.model.is_multilingual)

    @property
    def languages(self) -> list[str]:
        return list(self.model.supported_languages)

    def check_language(self, language: str | None, task: str = "transcribe") -> None:
        """An unknown code is the caller's error, caught before it can join a batch."""
        if language is not None and language not in self.languages:
            allowed = ", ".join(self.languages)
            raise InputRejected(f"language {language!r} is not one of this model's: {allowed}")
        if task == "translate" and not self.multilingual:
            raise InputRejected("this model is English-only and cannot translate")

    def transcribe_many(
        self,
        audios: Sequence[np.ndarray],
        options: Sequence[TranscribeOptions],
        live: bool = False,
    ) -> list[Transcription | Exception]:
        """Transcribe several requests; those with equal options share decoder batches.

        One request's failure is its own: a failed shared batch is redone one request at a
        time, and each gets its own result or exception. `live` requests (realtime turns)
        run in their own lane, ahead of other work between forward passes (priority_gate).
        One call per lane at a time.
        """
        results: list[Transcription | Exception | None] = [None] * len(audios)
        groups: dict[TranscribeOptions, list[int]] = {}
        for i, opt in enumerate(options):
            try:
                self.check_language(opt.language, opt.task)
            except Exception as exc:
                results[i] = exc
                continue
            # Cuts, hints and candidate languages are per request: requests that differ only
            # in them share batches.
            per_request = {"cuts": (), "hints": (), "languages": (), "split_languages": False}
            groups.setdefault(opt.model_copy(update=per_request), []).append(i)
        for opt, members in groups.items():
            own = [options[i] for i in members]
            try:
                decoded = self._decode_group([audios[i] for i in members], opt, own, live)
            except Exception as exc:
                log.warning("a batch of %d failed; redoing it one by one", len(members))
                for i in members:
                    one = [options[i]]
                    results[i] = (
                        exc if len(members) == 1 else self._decode_one(audios[i], opt, one, live)
                    )
                continue
            for i, result in zip(members, decoded, strict=True):
                results[i] = result
        return [r if r is not None else RuntimeError("no result") for r in results]

    def _decode_one(self, audio, opt, own, live=False) -> Transcription | Exception:
        try:
            return self._decode_group([audio], opt, own, live)[0]
        except Exception as exc:
            log.exception("transcription failed")
            return exc

    def _decode_group(
        self,
        audios: list[np.ndarray],
        opt: TranscribeOptions,
        own: Sequence[TranscribeOptions] | None = None,
        live: bool = False,
    ) -> list[Transcription]:
        """Decode requests with equal options together, in their language(s)."""
        clips: list[dict[str, float]] = []
        owners: list[tuple[int, float, float]] = []  # per clip: request, start, end (s, local)
        speech: list[tuple[float, float]] = []  # VAD's speech regions, s in the buffer
        starts: list[int] = []
        offset = 0
        for i, audio in enumerate(audios):
            starts.append(offset)
            cuts = own[i].cuts if own else ()
            pieces, windows = speech_pieces(audio, opt.vad_filter, cuts)
            if own and own[i].split_languages and opt.language is None and self.multilingual:
                found = region_languages(self.model, audio, pieces, self.gate, live)
                if more := language_cuts(pieces, found, own[i].languages):
                    pieces, windows = speech_pieces(audio, opt.vad_filter, (*cuts, *more))
            speech += [((offset + a) / SAMPLE_RATE, (offset + b) / SAMPLE_RATE) for a, b in pieces]
            for start, end in windows:
                clips.append(clip_at(offset, start, end))
                owners.append((i, start / SAMPLE_RATE, end / SAMPLE_RATE))
            offset += on_grid(len(audio))
        fixed = opt.language or (None if self.multilingual else "en")
        state = DecodeWindows(clips, owners, fixed)
        overall = {i: RequestLanguage(fixed, 1.0) for i in range(len(audios))} if fixed else {}
        if clips:
            padded = [np.pad(a, (0, on_grid(len(a)) - len(a))) for a in audios]
            buffer = np.concatenate(padded).astype(np.float32, copy=False)
            self._decode_windows(buffer, state, list(range(len(clips))), opt, own, live)
            unloop(self.pipelines[live], self.gate, buffer, state, range(len(clips)), opt, live)
            if fixed is None:
                _, overall = choose(state.guesses)
            todo = list(range(len(clips)))
            # Not for an English-only model: it cannot tell whether what it skipped was
            # English, and on a meeting in Russian, French and Italian the rounds doubled
            # tiny.en's words with stock phrases (168 -> 307 words, 6.2 -> 21.1 s of word
            # time outside the speaker's turn).
            lang_known = fixed is None or self.multilingual
            rounds = UNHEARD_ROUNDS if opt.word_timestamps and lang_known else 0
            for _ in range(rounds):
                # Speech a window's decode ended before (or skipped): decoded on its own.
                todo = state.add_unheard(speech, starts, todo)
                if not todo:
                    break
                log.info("decoding %d piece(s) of speech left without words", len(todo))
                # Each request's pieces in a batch of their own, so their words depend less
                # on the batch-mates.
                for request in sorted({state.owners[k][0] for k in todo}):
                    mine = [k for k in todo if state.owners[k][0] == request]
                    if fixed is None:
                        self._decode_windows(buffer, state, mine, opt, own, live)
                    else:  # kept only where it is in the language asked for (detected)
                        found = self._run(buffer, state.clips, mine, opt, None, state.decoded, live)
                        state.keep_language(mine, [parse_detection(d) for d in found], fixed)
                    unloop(self.pipelines[live], self.gate, buffer, state, mine, opt, live)
                state.drop_silent(todo)
                # A piece that gave no words would give none again: only the others go on.
                todo = [k for k in todo if state.decoded[k]]
        out: list[Transcription] = []
        for i, audio in enumerate(audios):
            base, duration = starts[i] / SAMPLE_RATE, len(audio) / SAMPLE_RATE
            segs = [
                _to_segment(seg, base, duration, state.languages[k], state.probabilities[k])
                for k, (owner, _, _) in enumerate(owners)
                if owner == i
                for seg in state.decoded[k]
            ]
            lang = overall.get(i)
            out.append(
                Transcription(
                    language=lang.language if lang else None,
                    language_probability=lang.probability if lang else 0.0,
                    duration=duration,
                    segments=sorted(segs, key=lambda s: (s.start, s.end)),
                )
            )
        return out

    def _decode_windows(
        self,
        buffer: np.ndarray,
        state: DecodeWindows,
        todo: list[int],
        opt: TranscribeOptions,
        own: Sequence[TranscribeOptions] | None,
        live: bool,
    ) -> None:
        """Decode windows `todo` of `state` in their language: the given one, or each its
        own detection, an unsure one another (window_language.choose, the caller's hints
        and candidates), decoded again in it."""
        detected = self._run(buffer, state.clips, todo, opt, state.fixed, state.decoded, live)
        if state.fixed is not None:
            return
        for k, d in zip(todo, detected, strict=True):
            r, start, end = state.owners[k]
            state.guesses[k] = WindowGuess(r, start, end, parse_detection(d))
        known = [k for k, g in enumerate(state.guesses) if g is not None]
        chosen = dict(zip(known, choose([state.guesses[k] for k in known])[0], strict=True))
        redo: dict[str, list[int]] = {}
        for k in todo:
            r, start, end = state.owners[k]
            g, lang = state.guesses[k], chosen[k]
            if own:  # the caller's hints win over the windows' own guesses
                lang = hinted(own[r].hints, start, end) or among(own[r].languages, g) or lang
            state.languages[k] = lang
            state.probabilities[k] = round(g.probabilities.get(lang, 0.0), 4)
            if lang != g.top[0]:  # decoded in its own unsure guess: again, in this one
                redo.setdefault(lang, []).append(k)
        for lang, windows in redo.items():
            self._run(buffer, state.clips, windows, opt, lang, state.decoded, live)

    def _run(
        self,
        buffer: np.ndarray,
        clips: list[dict[str, float]],
        windows: list[int],
        opt: TranscribeOptions,
        language: str | None,
        per_window: list[list],
        live: bool = False,
    ) -> list[list[tuple[str, float]]]:
        """Decode `windows` (indices into clips) into per_window; with language None, each
        in its own detected language. Returns the detections made (window order)."""
        detector = self.model.model
        detector.results.clear()
        with self.gate.hold(live):  # feature extraction for the windows
            segments = decode_clips(
                self.pipelines[live],
                buffer,
                [clips[k] for k in windows],
                opt,
                language,
                self.gate.batch_size(self.batch_size, live),
            )
        seeks = [round(clips[k]["start"] * 100) for k in windows]
        for k in windows:
            per_window[k] = []
        for seg in gated(iter(segments), self.gate, live):  # a forward pass per batch
            # Each decoded segment carries its window's start (in 10 ms frames) as `seek`.
            j = min(range(len(seeks)), key=lambda n: abs(seeks[n] - seg.seek))
            per_window[windows[j]].append(seg)
        found = list(detector.results)
        if language is None and len(found) != len(windows):
            raise RuntimeError(f"{len(found)} language detections for {len(windows)} windows")
        return found


class _DetectionLog:
    """The CTranslate2 model, with the language detections the pipeline asks it for kept."""

    def __init__(self, model) -> None:
        self._model = model
        self._local = threading.local()  # each lane's thread keeps its own

    @property
    def results(self) -> list[list[tuple[str, float]]]:
        if not hasattr(self._local, "results"):
            self._local.results = []
        return self._local.results

    def __getattr__(self, name: str):
        return getattr(self._model, name)

    def detect_language(self, *args, **kwargs):
        found = self._model.detect_language(*args, **kwargs)
        self.results.extend(found)
        return found


def _clamp(t: float, duration: float) -> float:
    return round(min(max(t, 0.0), duration), 3)


def _to_segment(
    seg, base: float, duration: float, language: str | None, probability: float
) -> TranscriptSegment:
    words = [
        Word(
            start=_clamp(w.start - base, duration),
            end=_clamp(w.end - base, duration),
            text=w.word,
            probability=min(max(float(w.probability), 0.0), 1.0),
        )
        for w in (seg.words or [])
    ]
    start, end = _clamp(seg.start - base, duration), _clamp(seg.end - base, duration)
    if words:  # keep segment bounds consistent with the words they hold
        start, end = min(start, words[0].start), max(end, words[-1].end)
    return TranscriptSegment(
        start=start,
        end=end,
        text=seg.text.strip(),
        words=words,
        avg_logprob=float(seg.avg_logprob),
        no_speech_prob=float(seg.no_speech_prob),
        language=language,
        language_probability=probability,
    )
