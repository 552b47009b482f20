"""Where a clean, isolated prompt actually has speech: frame energy against the prompt's level.

Studio prompts pause between phrases (0.3-1 s and more); a reference that marks the whole
prompt as speech counts those pauses as missed speech for any good diarizer.
"""

from __future__ import annotations

import numpy as np

SAMPLE_RATE = 16_000
_HOP, _WIN = 160, 400  # 10 ms hop, 25 ms window
_RELATIVE_DB = 35.0  # speech: within 35 dB of the prompt's 95th-percentile frame level ...
_ABSOLUTE_DB = -60.0  # ... and above -60 dBFS ...
_FLOOR_MARGIN_DB = 6.0  # ... and 6 dB above its noise floor (10th-percentile frame level) ...
# ... but never more than 25 dB below that level: a prompt with (almost) no pauses has its
# 10th percentile inside the speech, and the GSM voices' floor (about -50 dBFS) needs
# 25-30 dB below a p95 of -14 to -20 dBFS.
_FLOOR_CAP_DB = 25.0
_FILL_S = 0.25  # shorter gaps (stop closures, between words) stay speech
_MIN_SPEECH_S = 0.1  # shorter islands (clicks, breaths, noise bursts) are dropped
_PAD_S = 0.05  # each span is widened by this much on both sides


def _runs(mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Starts and ends (exclusive) of the runs of True."""
    edges = np.diff(np.concatenate([[0], mask.astype(np.int8), [0]]))
    return np.flatnonzero(edges == 1), np.flatnonzero(edges == -1)


def frame_db(audio: np.ndarray) -> np.ndarray:
    """RMS level in dBFS of every 25 ms frame, 10 ms apart (one frame at least)."""
    x = np.asarray(audio, np.float64)
    x = np.pad(x, (0, max(0, _WIN - len(x))))
    power = np.concatenate([[0.0], np.cumsum(x * x)])
    starts = _HOP * np.arange(1 + (len(x) - _WIN) // _HOP)
    return 10 * np.log10((power[starts + _WIN] - power[starts]) / _WIN + 1e-20)


def speech_spans(audio: np.ndarray, rate: int = SAMPLE_RATE) -> list[tuple[int, int]]:
    """(start, end) sample spans of speech in one clean prompt, sorted and disjoint.

    Falls back to the whole prompt where nothing qualifies (never seen on the voices here).
    """
    db = frame_db(audio)
    p95, p10 = np.percentile(db, [95, 10])
    floor = min(p10 + _FLOOR_MARGIN_DB, p95 - _FLOOR_CAP_DB)
    speech = db > max(_ABSOLUTE_DB, p95 - _RELATIVE_DB, floor)
    hop_s = _HOP / rate
    for start, end in zip(*_runs(~speech), strict=True):  # fill short inner gaps
        if start > 0 and end < len(speech) and (end - start) * hop_s < _FILL_S:
            speech[start:end] = True
    for start, end in zip(*_runs(speech), strict=True):  # then drop short islands
        if (end - start) * hop_s < _MIN_SPEECH_S:
            speech[start:end] = False
    n, pad, mid = len(audio), round(_PAD_S * rate), (_WIN - _HOP) // 2
    spans: list[tuple[int, int]] = []
    for start, end in zip(*_runs(speech), strict=True):
        # Frame i stands for the hop at its centre; the first and last reach the ends.
        a = 0 if start == 0 else max(0, start * _HOP + mid - pad)
        b = n if end == len(speech) else min(n, end * _HOP + mid + pad)
        if spans and a <= spans[-1][1]:
            spans[-1] = (spans[-1][0], b)
        else:
            spans.append((a, b))
    return spans or [(0, n)]
