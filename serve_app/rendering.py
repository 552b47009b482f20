"""Render a finished transcript into every output format the HTTP API serves.

Pure functions of a `JobResult`: no web framework or Ray imports, so each format can be
tested alone. Job formats (`render_job`) are json, srt, vtt, txt and rttm; the
OpenAI-compatible endpoint (`render_openai`) returns the shapes of the official `openai`
client's `Transcription`, `TranscriptionVerbose` and `TranscriptionDiarized` types.
"""

from __future__ import annotations

import json
import math
import re
import textwrap
import zlib
from collections.abc import Sequence
from dataclasses import dataclass

from jobs.stitching.stitch import JobResult, StitchedSegment

JOB_FORMATS = ("json", "srt", "vtt", "txt", "rttm")
OPENAI_FORMATS = ("json", "text", "srt", "vtt", "verbose_json", "diarized_json")
GRANULARITIES = ("word", "segment")

MAX_CUE_S = 7.0
MAX_CUE_CHARS = 84  # two lines of 42, the usual broadcast subtitle limit
CUE_LINES = 2
BREAK_AFTER = (",", ";", ":", ".", "?", "!", "。", "？", "！", "，", "、", "…")

JSON = "application/json"
TEXT = "text/plain; charset=utf-8"
SRT = "application/x-subrip; charset=utf-8"
VTT = "text/vtt; charset=utf-8"

# ISO 639-1 -> the English name OpenAI reports in verbose_json (whisper's LANGUAGES).
LANGUAGE_NAMES = {
    "en": "english", "zh": "chinese", "de": "german", "es": "spanish", "ru": "russian",
    "ko": "korean", "fr": "french", "ja": "japanese", "pt": "portuguese", "tr": "turkish",
    "pl": "polish", "ca": "catalan", "nl": "dutch", "ar": "arabic", "sv": "swedish",
    "it": "italian", "id": "indonesian", "hi": "hindi", "fi": "finnish", "vi": "vietnamese",
    "he": "hebrew", "uk": "ukrainian", "el": "greek", "ms": "malay", "cs": "czech",
    "ro": "romanian", "da": "danish", "hu": "hungarian", "ta": "tamil", "no": "norwegian",
    "th": "thai", "ur": "urdu", "hr": "croatian", "bg": "bulgarian", "lt": "lithuanian",
    "la": "latin", "cy": "welsh", "sk": "slovak", "fa": "persian", "lv": "latvian",
    "bn": "bengali", "sr": "serbian", "sl": "slovenian", "et": "estonian", "is": "icelandic",
    "ga": "irish", "af": "afrikaans", "sw": "swahili", "tl": "tagalog", "yue": "cantonese",
}  # fmt: skip


@dataclass(frozen=True)
class Cue:
    """One subtitle cue: a time span of one speaker's text (times in seconds)."""

    start: float
    end: float
    text: str
    speaker: str | None = None


# (start, end, text): a word, or a proportional share of a segment without word times.
_Piece = tuple[float, float, str]


def _label(speaker: str | None) -> str:
    return f"[{speaker}] " if speaker else ""


def _wrap(text: str, width: int) -> list[str]:
    lines = textwrap.wrap(text, width, break_on_hyphens=False) or [""]
    words = text.split()
    if len(lines) != CUE_LINES or len(words) < 2:
        return lines
    # Greedy wrap decides how many lines; two lines read better balanced than greedy.
    joined = [(" ".join(words[:i]), " ".join(words[i:])) for i in range(1, len(words))]
    best = min(joined, key=lambda ab: max(len(ab[0]), len(ab[1])))
    return list(best) if max(map(len, best)) <= width else lines


def _proportional(start: float, end: float, text: str, width: int) -> list[_Piece]:
    """Split text into tokens timed in proportion to their length (no word timestamps)."""
    tokens: list[str] = []
    for tok in re.findall(r"\s*\S+", text):
        # A token wider than a line (unspaced scripts, URLs) is cut into half-line chunks.
        tokens += [tok[i : i + width // 2] for i in range(0, len(tok), width // 2)]
    total = sum(len(t) for t in tokens) or 1
    out, at = [], start
    for tok in tokens:
        step = (end - start) * len(tok) / total
        out.append((at, at + step, tok))
        at += step
    return out


def _pieces(seg: StitchedSegment, width: int) -> list[_Piece]:
    words = [(w.start, w.end, w.text) for w in seg.words if w.text.strip()]
    if not words:
        return _proportional(seg.start, seg.end, seg.text, width)
    out: list[_Piece] = []
    for s, e, t in words:
        out += _proportional(s, e, t, width) if len(t.strip()) > width else [(s, e, t)]
    return out


def _group(pieces: list[_Piece], label: str, max_s: float, width: int) -> list[list[_Piece]]:
    """Greedily pack pieces into cues that last ≤ max_s and wrap into CUE_LINES lines."""

    def fits(group: list[_Piece]) -> bool:
        text = label + "".join(p[2] for p in group).strip()
        return group[-1][1] - group[0][0] <= max_s and len(_wrap(text, width)) <= CUE_LINES

    groups: list[list[_Piece]] = []
    cur: list[_Piece] = []
    for p in pieces:
        if cur and not fits([*cur, p]):
            # Prefer to break after punctuation in the latter half, so cues read as phrases.
            cut = len(cur)
            for i in range(len(cur) - 1, len(cur) // 2 - 1, -1):
                if cur[i][2].strip().endswith(BREAK_AFTER) and fits([*cur[i + 1 :], p]):
                    cut = i + 1
                    break
            groups.append(cur[:cut])
            cur = cur[cut:]
        cur.append(p)
    if cur:
        groups.append(cur)
    return groups


def cues(result: JobResult, max_s: float = MAX_CUE_S, max_chars: int = MAX_CUE_CHARS) -> list[Cue]:
    """Split the transcript into subtitle cues.

    Each sentence segment is cut at word boundaries (by word timestamps; in proportion to
    text length when it has none) so that a cue lasts at most `max_s` and its text,
    speaker label included, wraps into two lines of `max_chars // 2`. Segments are of one
    speaker, so no cue spans two speakers.

    Args:
        result: the finished transcript.
        max_s: longest cue in seconds (a single word longer than this is cut short).
        max_chars: most characters a cue shows over its two lines.

    Returns:
        Cues in time order, not overlapping, each with end > start (at millisecond
        resolution).
    """
    width = max_chars // CUE_LINES
    out: list[Cue] = []
    last_ms = 0
    for seg in sorted(result.segments, key=lambda s: s.start):
        for group in _group(_pieces(seg, width), _label(seg.speaker), max_s, width):
            text = "".join(p[2] for p in group).strip()
            if not text:
                continue
            # Whole milliseconds, so rendered timestamps keep the ordering guarantees.
            start_ms = max(round(group[0][0] * 1000), last_ms)
            end_ms = min(round(group[-1][1] * 1000), round(group[0][0] * 1000 + max_s * 1000))
            end_ms = max(end_ms, start_ms + 1)
            last_ms = end_ms
            out.append(Cue(start_ms / 1000, end_ms / 1000, text, seg.speaker))
    return out


def _timestamp(seconds: float, sep: str) -> str:
    ms = round(seconds * 1000)
    h, rest = divmod(ms, 3_600_000)
    m, rest = divmod(rest, 60_000)
    s, ms = divmod(rest, 1000)
    return f"{h:02d}:{m:02d}:{s:02d}{sep}{ms:03d}"


def to_srt(result: JobResult) -> str:
    """SubRip: numbered cues, `[SPEAKER] ` before the text when the speaker is known."""
    width = MAX_CUE_CHARS // CUE_LINES
    blocks = [
        f"{i}\n{_timestamp(c.start, ',')} --> {_timestamp(c.end, ',')}\n"
        + "\n".join(_wrap(_label(c.speaker) + c.text, width))
        for i, c in enumerate(cues(result), start=1)
    ]
    return "".join(b + "\n\n" for b in blocks)


def _vtt_escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def to_vtt(result: JobResult) -> str:
    """WebVTT: `WEBVTT` header, cues with `<v SPEAKER>` voice spans when the speaker is known."""
    width = MAX_CUE_CHARS // CUE_LINES
    blocks = []
    for c in cues(result):
        voice = f"<v {_vtt_escape(c.speaker)}>" if c.speaker else ""
        lines = "\n".join(_vtt_escape(line) for line in _wrap(c.text, width))
        blocks.append(f"{_timestamp(c.start, '.')} --> {_timestamp(c.end, '.')}\n{voice}{lines}")
    return "WEBVTT\n\n" + "".join(b + "\n\n" for b in blocks)


def to_txt(result: JobResult) -> str:
    """Readable text: a `SPEAKER: text` paragraph per speaker turn, else a line per sentence."""
    segments = [s for s in result.segments if s.text.strip()]
    if not any(s.speaker for s in segments):
        return "".join(s.text.strip() + "\n" for s in segments)
    paragraphs: list[tuple[str | None, list[str]]] = []
    for s in segments:
        # A segment without a speaker continues the current paragraph rather than break it.
        if paragraphs and (s.speaker is None or s.speaker == paragraphs[-1][0]):
            paragraphs[-1][1].append(s.text.strip())
        else:
            paragraphs.append((s.speaker, [s.text.strip()]))
    return "\n".join(
        (f"{spk}: " if spk else "") + " ".join(texts) + "\n" for spk, texts in paragraphs
    )


def _no_space(name: str) -> str:
    return re.sub(r"\s+", "_", name.strip()) or "NA"


def to_rttm(result: JobResult, uri: str = "audio") -> str:
    """NIST RTTM, one SPEAKER line per turn (zero-length turns are left out)."""
    uri = _no_space(uri) if uri.strip() else "audio"
    lines = []
    for t in sorted(result.turns, key=lambda t: (t.start, t.end)):
        start, dur = round(t.start, 3), round(t.end - t.start, 3)
        if dur > 0:
            lines.append(
                f"SPEAKER {uri} 1 {start:.3f} {dur:.3f} <NA> <NA> {_no_space(t.speaker)} <NA> <NA>"
            )
    return "".join(line + "\n" for line in lines)


def render_job(result: JobResult, fmt: str, uri: str = "audio") -> tuple[str, str]:
    """Render a job's result in one of `JOB_FORMATS`.

    Args:
        result: the finished transcript.
        fmt: one of `JOB_FORMATS`.
        uri: recording name for RTTM (whitespace is replaced).

    Returns:
        (body, media type).

    Raises:
        ValueError: fmt is not one of `JOB_FORMATS`.
    """
    match fmt:
        case "json":
            return result.model_dump_json(), JSON
        case "srt":
            return to_srt(result), SRT
        case "vtt":
            return to_vtt(result), VTT
        case "txt":
            return to_txt(result), TEXT
        case "rttm":
            return to_rttm(result, uri), TEXT
    raise ValueError(f"unknown format {fmt!r}; expected one of: {', '.join(JOB_FORMATS)}")


def language_name(code: str | None) -> str:
    """The English name of an ISO 639-1 code as OpenAI reports it, else the code itself."""
    if not code:
        return "unknown"
    return LANGUAGE_NAMES.get(code.lower(), code)


def _avg_logprob(seg: StitchedSegment) -> float:
    logs = [math.log(max(w.probability, 1e-6)) for w in seg.words]
    return round(sum(logs) / len(logs), 6) if logs else 0.0


def _compression_ratio(text: str) -> float:
    # As whisper computes it: repetitive (hallucinated) text compresses well.
    raw = text.encode("utf-8")
    return round(len(raw) / len(zlib.compress(raw)), 6) if raw else 0.0


def _verbose(result: JobResult, granularities: Sequence[str]) -> dict:
    # As OpenAI's: a translation's language is that of its text, English.
    language = "en" if result.task == "translate" else result.language
    body: dict = {
        "task": result.task,
        "language": language_name(language),
        "duration": result.duration,
        "text": result.text,
    }
    if "segment" in granularities:
        body["segments"] = [
            {
                "id": i,
                "seek": int(s.start * 100),  # whisper counts seek in 10 ms frames
                "start": s.start,
                "end": s.end,
                "text": s.text,
                "tokens": [],  # token ids are not kept past the transcriber
                "temperature": 0.0,
                "avg_logprob": _avg_logprob(s),
                "compression_ratio": _compression_ratio(s.text),
                "no_speech_prob": 0.0,  # segments are built from recognised words
            }
            | ({"speaker": s.speaker} if s.speaker else {})
            for i, s in enumerate(result.segments)
        ]
    if "word" in granularities:
        body["words"] = [
            {"word": w.text.strip(), "start": w.start, "end": w.end}
            for s in result.segments
            for w in s.words
            if w.text.strip()
        ]
    body["usage"] = _usage(result)
    return body


def _dumps(body: dict) -> str:
    return json.dumps(body, ensure_ascii=False)


def _usage(result: JobResult) -> dict:
    return {"type": "duration", "seconds": result.duration}


def _diarized(result: JobResult) -> dict:
    return {
        "task": "transcribe",
        "duration": result.duration,
        "text": result.text,
        "segments": [
            {
                "type": "transcript.text.segment",
                "id": f"seg_{i}",
                "start": s.start,
                "end": s.end,
                "text": s.text,
                "speaker": s.speaker or "unknown",
            }
            for i, s in enumerate(result.segments)
        ],
        "usage": _usage(result),
    }


def render_openai(
    result: JobResult,
    fmt: str,
    granularities: Sequence[str] = ("segment",),
    uri: str = "audio",
) -> tuple[str, str]:
    """Render a result as OpenAI's `/v1/audio/transcriptions` does for `response_format`.

    Args:
        result: the finished transcript.
        fmt: one of `OPENAI_FORMATS`.
        granularities: `timestamp_granularities` for verbose_json, any of "word" and
            "segment"; empty means OpenAI's default, segments only.
        uri: unused by the OpenAI formats; accepted so callers can pass it uniformly.

    Returns:
        (body, media type).

    Raises:
        ValueError: an unknown format or granularity.
    """
    del uri
    unknown = set(granularities) - set(GRANULARITIES)
    if unknown:
        raise ValueError(
            f"unknown timestamp granularities {sorted(unknown)}; expected: word, segment"
        )
    match fmt:
        case "json":
            return _dumps({"text": result.text, "usage": _usage(result)}), JSON
        case "text":
            return result.text + "\n", TEXT
        case "srt":
            return to_srt(result), SRT
        case "vtt":
            return to_vtt(result), VTT
        case "verbose_json":
            return _dumps(_verbose(result, granularities or ("segment",))), JSON
        case "diarized_json":
            return _dumps(_diarized(result)), JSON
    raise ValueError(f"unknown format {fmt!r}; expected one of: {', '.join(OPENAI_FORMATS)}")
