"""What the batched decoder keeps per window, and word timings that do not depend on the batch.

A segment must give the same words and times whether it is decoded alone or beside others: a
fault redoes it in another batch, and the recovered pieces of lost speech (core.unheard)
start where the last word ends, so a timing that moves with the batch moves a piece, and a
piece a few milliseconds longer can decode to other words. faster-whisper's batched
pipeline times words in one alignment pass per batch (token sequences padded to the
longest) and carries the last word's end from one window to the next, whatever request that
was: the same 30 s segment's words moved by up to 0.20 s between one and four per call.
"""

from __future__ import annotations

import numpy as np

from deployments.core.schemas import SAMPLE_RATE
from deployments.core.unheard import unheard
from deployments.core.window_language import WindowGuess

# Requests start on a 10 ms boundary of the shared buffer: faster-whisper rounds word times to
# 10 ms in buffer time, so an offset off that grid moved times by up to 8 ms.
BUFFER_GRID = SAMPLE_RATE // 100
# Whisper's own rule for a window that holds no speech (its no_speech and log-probability
# thresholds). Applied to recovered pieces, in any language: speech of another language
# decoded in a fixed one came back as stock phrases ("Thank you very much.", no-speech 0.66,
# log-prob -1.04).
NO_SPEECH_PROB, LOGPROB_FLOOR = 0.6, -1.0


def on_grid(n: int) -> int:
    """Samples a request takes in the buffer: its length rounded up to the grid."""
    return -(-n // BUFFER_GRID) * BUFFER_GRID


def clip_at(offset: int, start: int, end: int) -> dict[str, float]:
    """faster-whisper's clip for samples [start, end) of a request at `offset` in the buffer.

    It turns the seconds back into samples with int(), and the start into 10 ms frames
    (`seek`, which its word times count from) with int() too: float error put a start of
    4640 samples (0.29 s) at frame 28. Half a sample more keeps the sample exact; a start on
    a frame boundary moves one sample on, so no start is a whole frame and `seek` does not
    depend on where the request sits in the buffer."""
    if start % BUFFER_GRID == 0:
        start += 1
    return {
        "start": (offset + start + 0.5) / SAMPLE_RATE,
        "end": (offset + end + 0.5) / SAMPLE_RATE,
    }


def decode_clips(
    pipeline, buffer: np.ndarray, clips: list[dict], opt, language, batch_size: int, **extra
):
    """faster-whisper's batched decode of `clips` of the buffer, each a window of its own, in
    `language`, or with None each in its own detected language; `extra` are more options
    for its decoder. Returns the segments (a generator: decoding runs as they are read)."""
    segments, _ = pipeline.transcribe(
        buffer,
        # Auto: any code for the prompt; the pipeline sets each window's own from the
        # encoder output it computes anyway (no extra pass over the audio).
        language=language or "en",
        multilingual=language is None,
        task=opt.task,
        clip_timestamps=clips,
        batch_size=batch_size,
        beam_size=opt.beam_size,
        word_timestamps=opt.word_timestamps,
        initial_prompt=opt.initial_prompt,
        temperature=opt.temperature,
        without_timestamps=True,
        vad_filter=False,
        **extra,
    )
    return segments


def time_words_per_window(model) -> None:
    """Make `model` (a faster_whisper WhisperModel on CPU) time each window's words on its
    own: one alignment per window, from the window's own start rather than the end of
    whatever window came before it in the batch. Measured on 22 segments of 30 s (tiny.en,
    rounds on): words and times identical one per call and four per call (before: times
    differed in 13 of 22 segments, words in 1)."""
    import ctranslate2

    batched = model.add_word_timestamps
    frames_per_s = model.frames_per_second

    def add_word_timestamps(windows, tokenizer, encoder_output, num_frames, *args, **kwargs):
        if not isinstance(num_frames, list) or len(args) != 3 or kwargs:
            # Not the batched pipeline's call (sequential transcribe): left as it was.
            return batched(windows, tokenizer, encoder_output, num_frames, *args, **kwargs)
        *punctuation, last = args
        encoded = np.asarray(encoder_output)
        for i, window in enumerate(windows):
            if not any(t < tokenizer.eot for sub in window for t in sub["tokens"]):
                for sub in window:  # nothing to align (the batched pass gives these none too)
                    sub["words"] = []
                continue
            one = ctranslate2.StorageView.from_array(np.ascontiguousarray(encoded[i : i + 1]))
            start = window[0]["seek"] / frames_per_s
            batched([window], tokenizer, one, [num_frames[i]], *punctuation, start)
        return last

    model.add_word_timestamps = add_word_timestamps


def silent(segment) -> bool:
    return segment.no_speech_prob > NO_SPEECH_PROB and segment.avg_logprob < LOGPROB_FLOOR


class DecodeWindows:
    """A group's windows as they are decoded: clips in the buffer, their owners, and per
    window its decoded segments, language guess, chosen language and its probability."""

    def __init__(self, clips: list[dict], owners: list[tuple[int, float, float]], fixed):
        self.clips, self.owners, self.fixed = clips, owners, fixed
        n = len(clips)
        self.decoded: list[list] = [[] for _ in range(n)]
        self.guesses: list[WindowGuess | None] = [None] * n
        self.languages: list[str | None] = [fixed] * n
        self.probabilities: list[float] = [1.0] * n

    def add_unheard(
        self, speech: list[tuple[float, float]], starts: list[int], among: list[int]
    ) -> list[int]:
        """New windows for the speech that windows `among` left without words once decoded
        (core.unheard); returns their indices. Times are seconds in the buffer, as the
        decoder's words."""
        added: list[int] = []
        for k in among:
            clip, (r, _, _) = self.clips[k], self.owners[k]
            inside = [(max(a, clip["start"]), min(b, clip["end"])) for a, b in speech]
            inside = [(a, b) for a, b in inside if b > a]
            words = [(w.start, w.end) for seg in self.decoded[k] for w in seg.words or ()]
            for a, b in unheard(inside, words):
                # In samples of the request: word times are whole 10 ms frames from `seek`.
                start, end = round(a * SAMPLE_RATE) - starts[r], round(b * SAMPLE_RATE) - starts[r]
                self.clips.append(clip_at(starts[r], start, end))
                self.owners.append((r, start / SAMPLE_RATE, end / SAMPLE_RATE))
                self.decoded.append([])
                self.guesses.append(None)
                self.languages.append(self.fixed)
                self.probabilities.append(1.0)
                added.append(len(self.clips) - 1)
        return added

    def keep_language(
        self, windows: list[int], detected: list[dict[str, float]], language: str
    ) -> None:
        """Recovered pieces decoded each in its detected language keep their words only
        where that is `language`: speech in another one is not what was asked for, and
        decoded in `language` it came back as stock phrases."""
        for k, probabilities in zip(windows, detected, strict=True):
            r, start, end = self.owners[k]
            guess = self.guesses[k] = WindowGuess(r, start, end, probabilities)
            self.probabilities[k] = round(probabilities.get(language, 0.0), 4)
            if guess.top[0] != language:
                self.decoded[k] = []

    def drop_silent(self, windows: list[int]) -> None:
        for k in windows:
            self.decoded[k] = [seg for seg in self.decoded[k] if not silent(seg)]
