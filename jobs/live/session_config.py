"""A realtime session's settings, read from `session.update` (OpenAI's GA shape) or
`transcription_session.update` (the beta's), and shown back in either shape.

GA: `{"type": "transcription", "audio": {"input": {"format": {...}, "transcription":
{"model", "language", "prompt"}, "turn_detection": {...} | null}}}`. Beta:
`{"input_audio_format": "pcm16", "input_audio_transcription": {...}, "turn_detection": ...}`.
Fields left out keep their value. Beyond OpenAI's fields, `transcription` takes
`diarize` (speaker labels; on by default) and, as the HTTP endpoints do, known speakers:
`known_speakers` (ids or names of the caller's enrolled speakers), `known_speaker_names` with
`known_speaker_references` (data URLs of 2-10 s samples).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

from jobs.live.audio_formats import AudioFormat, BadAudio, parse_format
from jobs.live.turns import ServerVad

BETA_FORMATS = {"pcm16": "pcm16", "pcmu": "g711_ulaw", "pcma": "g711_alaw"}


class SessionRejected(ValueError):
    def __init__(self, code: str, message: str, param: str | None = None) -> None:
        super().__init__(message)
        self.code, self.param = code, param


@dataclass(frozen=True)
class KnownSpec:
    ids: tuple[str, ...] = ()
    names: tuple[str, ...] = ()
    references: tuple[str, ...] = ()


@dataclass(frozen=True)
class SessionConfig:
    model: str = "whisper-1"
    language: str | None = None
    prompt: str = ""
    vad: ServerVad | None = field(default_factory=ServerVad)  # None: the client commits
    speakers: bool = True
    known_spec: KnownSpec = KnownSpec()
    known: tuple = ()  # KnownSpeaker, resolved from known_spec by the backend
    served_model: str = ""  # the model name the backend resolved `model` to

    def describe(self, fmt: AudioFormat, beta: bool = False) -> dict:
        transcription = {
            "model": self.model,
            "language": self.language,
            "prompt": self.prompt,
            "diarize": self.speakers,
            "known_speakers": [k.name for k in self.known],
        }
        vad = self.vad.describe() if self.vad else None
        if beta:
            return {
                "input_audio_format": BETA_FORMATS[fmt.kind],
                "input_audio_transcription": transcription,
                "turn_detection": vad,
                "input_audio_noise_reduction": None,
                "include": [],
            }
        return {
            "type": "transcription",
            "audio": {
                "input": {
                    "format": fmt.describe(),
                    "transcription": transcription,
                    "turn_detection": vad,
                    "noise_reduction": None,
                }
            },
            "include": [],
        }


def _number(d: dict, key: str, lo: float, hi: float, current: float, integer: bool = False):
    value = d.get(key, current)
    if value is None:
        return current
    if isinstance(value, bool) or not isinstance(value, int | float) or not lo <= value <= hi:
        raise SessionRejected(
            "invalid_value", f"turn_detection.{key}: a number from {lo:g} to {hi:g}", key
        )
    return int(value) if integer else float(value)


def _vad(value: Any, current: ServerVad | None) -> ServerVad | None:
    if value is None:
        return None
    if not isinstance(value, dict) or value.get("type", "server_vad") != "server_vad":
        kind = value.get("type") if isinstance(value, dict) else value
        raise SessionRejected(
            "invalid_value",
            f"turn_detection: {kind!r} is not supported; use server_vad or null",
            "turn_detection",
        )
    base = current or ServerVad()
    return ServerVad(
        threshold=_number(value, "threshold", 0.0, 1.0, base.threshold),
        prefix_padding_ms=_number(
            value, "prefix_padding_ms", 0, 5000, base.prefix_padding_ms, True
        ),
        silence_duration_ms=_number(
            value, "silence_duration_ms", 100, 10000, base.silence_duration_ms, True
        ),
    )


def _strings(value: Any, name: str) -> tuple[str, ...]:
    if value is None:
        return ()
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise SessionRejected("invalid_value", f"{name}: a list of strings", name)
    return tuple(value)


def _transcription(t: Any, config: SessionConfig) -> SessionConfig:
    if t is None:
        return config
    if not isinstance(t, dict):
        raise SessionRejected("invalid_value", "transcription: an object", "transcription")
    changes: dict[str, Any] = {}
    for key in ("model", "language", "prompt"):
        if key in t:
            value = t[key]
            if value is not None and not isinstance(value, str):
                raise SessionRejected("invalid_value", f"transcription.{key}: a string", key)
            changes[key] = value if key != "prompt" else (value or "")
    if changes.get("model") in (None, "") and "model" in changes:
        changes["model"] = "whisper-1"
    if len(changes.get("prompt", "")) > 2000:
        raise SessionRejected("invalid_value", "transcription.prompt: at most 2000 characters")
    if "diarize" in t:
        if not isinstance(t["diarize"], bool):
            raise SessionRejected("invalid_value", "transcription.diarize: true or false")
        changes["speakers"] = t["diarize"]
    spec_keys = ("known_speakers", "known_speaker_names", "known_speaker_references")
    if any(k in t for k in spec_keys):
        spec = KnownSpec(*(_strings(t.get(k), k) for k in spec_keys))
        if len(spec.names) != len(spec.references):
            raise SessionRejected(
                "invalid_value",
                "known_speaker_names and known_speaker_references: one reference per name",
            )
        changes["known_spec"] = spec
    return replace(config, **changes)


def parse_update(
    session: Any, config: SessionConfig, fmt: AudioFormat, beta: bool
) -> tuple[SessionConfig, AudioFormat]:
    """The settings after an update event's `session`; SessionRejected names a bad field."""
    if not isinstance(session, dict):
        raise SessionRejected("invalid_value", "session: an object", "session")
    try:
        if beta:
            if "input_audio_format" in session:
                fmt = parse_format(session["input_audio_format"])
            config = _transcription(session.get("input_audio_transcription"), config)
            if "turn_detection" in session:
                config = replace(config, vad=_vad(session["turn_detection"], config.vad))
            return config, fmt
        if session.get("type", "transcription") != "transcription":
            raise SessionRejected(
                "invalid_value",
                "session.type: this endpoint serves transcription sessions only",
                "session.type",
            )
        audio = session.get("audio") or {}
        audio_in = audio.get("input") or {} if isinstance(audio, dict) else {}
        if "format" in audio_in:
            fmt = parse_format(audio_in["format"])
        config = _transcription(audio_in.get("transcription"), config)
        if "turn_detection" in audio_in:
            config = replace(config, vad=_vad(audio_in["turn_detection"], config.vad))
        return config, fmt
    except BadAudio as exc:
        raise SessionRejected("invalid_value", str(exc), "format") from None
