"""One realtime transcription session, OpenAI's protocol (`/v1/realtime?intent=transcription`),
without the socket: client events in (`handle`), server events out (`send`).

Client events: `session.update` (GA shape) or `transcription_session.update` (the beta's),
`input_audio_buffer.append`, `.commit` and `.clear`. Server events: `session.created` /
`session.updated` (or `transcription_session.updated`), `input_audio_buffer.speech_started`,
`.speech_stopped`, `.committed`, `.cleared`, then per turn
`conversation.item.input_audio_transcription.delta`, `.segment` (with `speaker`, `start`
and `end` in seconds since the session began), `.completed` (with `usage`) or `.failed`;
and `error` in OpenAI's shape for a client event that could not be used (the session goes on).

Turns are cut by server VAD (jobs/live/turns.py) or by the client's commits when
`turn_detection` is null. Each turn goes to the same Transcriber and Diarizer replicas jobs
use, through `backend`; speakers come from jobs/live/speaker_tracker.py. Turns are worked on
at once, a few at a time; their events go out in the order the turns were committed.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from deployments.core.window_language import SURE_PROBABILITY
from jobs.live.audio_formats import (
    PCM24K,
    AudioFormat,
    BadAudio,
    StreamResampler,
    decode_chunk,
    to_model_rate,
)
from jobs.live.session_config import SessionConfig, SessionRejected, parse_update
from jobs.live.speaker_tracker import SpeakerTracker
from jobs.live.turns import Probabilities, ServerVad, TurnDetector

log = logging.getLogger(__name__)

MIN_COMMIT_MS = 100  # OpenAI refuses shorter commits too
MAX_TURNS_AT_ONCE = 4


class Backend(Protocol):
    """What a session needs from the service (built in serve_app/services/realtime.py)."""

    async def configure(self, config: SessionConfig, previous: SessionConfig) -> SessionConfig:
        """`config` checked (model, language) with its known speakers resolved (when its
        known_spec differs from `previous`'s). Raises SessionRejected."""

    async def transcribe(
        self, audio: np.ndarray, config: SessionConfig, languages: tuple[str, ...]
    ) -> Any:
        """A Transcription of 16 kHz audio; a turn unsure of its language takes the likeliest
        of `languages` (spoken surely earlier in the session) by its own detection."""

    async def voice(self, audio: np.ndarray) -> Any:
        """The VoiceSample of the audio's main voice."""


def _id(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex[:20]}"


@dataclass
class _Buffer:
    """Audio at the input format's rate since `start` (samples since the session began)."""

    rate: int
    start: int = 0
    chunks: list[np.ndarray] = field(default_factory=list)
    size: int = 0

    @property
    def end(self) -> int:
        return self.start + self.size

    def ms(self, samples: int) -> int:
        return samples * 1000 // self.rate

    def samples(self, ms: int) -> int:
        return ms * self.rate // 1000

    def append(self, audio: np.ndarray) -> None:
        self.chunks.append(audio)
        self.size += len(audio)

    def take(self, start: int, end: int) -> np.ndarray:
        """Audio [start, end), then everything before `end` is dropped."""
        audio = np.concatenate(self.chunks) if self.chunks else np.zeros(0, np.float32)
        piece = audio[max(0, start - self.start) : max(0, end - self.start)]
        rest = audio[max(0, end - self.start) :]
        self.chunks, self.start, self.size = [rest], max(self.start, end), len(rest)
        return piece

    def trim(self, keep_from: int) -> None:
        """Drop audio before `keep_from` (no turn can start there any more)."""
        if keep_from > self.start + (1 << 16):
            self.take(keep_from, keep_from)


class RealtimeSession:
    def __init__(
        self,
        send: Callable[[dict], Awaitable[None]],
        backend: Backend,
        probs: Probabilities,
        max_buffer_s: float = 120.0,
    ) -> None:
        self._send, self.backend, self._probs = send, backend, probs
        self.max_buffer_s = max_buffer_s
        self.id = _id("sess")
        self.config = SessionConfig()
        self.tracker = SpeakerTracker()
        self._fmt: AudioFormat = PCM24K
        self._buffer = _Buffer(PCM24K.rate)
        self._vad_stream = StreamResampler(PCM24K.rate)
        self._detector = self._new_detector(0)
        self._item: str | None = None  # the turn VAD has heard start, not yet committed
        self._previous: str | None = None
        self._slots = asyncio.Semaphore(MAX_TURNS_AT_ONCE)
        self._tasks: set[asyncio.Task] = set()
        self._segments = 0
        self.turns_completed = 0
        self._languages: dict[str, float] = {}  # seconds of sure speech per language
        self._last_turn: asyncio.Event | None = None  # set once the last turn has spoken

    async def start(self) -> None:
        await self.emit("session.created", session=self.describe())

    async def emit(self, kind: str, **fields: Any) -> None:
        await self._send({"type": kind, "event_id": _id("event"), **fields})

    async def error(self, code: str, message: str, param: str | None = None, event=None):
        kind = "server_error" if code == "server_error" else "invalid_request_error"
        await self.emit(
            "error",
            error={
                "type": kind,
                "code": code,
                "message": message,
                "param": param,
                "event_id": event.get("event_id") if isinstance(event, dict) else None,
            },
        )

    def describe(self, beta: bool = False) -> dict:
        return {"id": self.id, "object": "realtime.transcription_session"} | self.config.describe(
            self._fmt, beta
        )

    async def handle(self, event: Any) -> None:
        kind = event.get("type") if isinstance(event, dict) else None
        handler = {
            "session.update": self._update,
            "transcription_session.update": self._update,
            "input_audio_buffer.append": self._append,
            "input_audio_buffer.commit": self._commit,
            "input_audio_buffer.clear": self._clear,
        }.get(kind)
        if handler is None:
            await self.error("unknown_event", f"unsupported event type {kind!r}", "type", event)
            return
        try:
            await handler(event)
        except (SessionRejected, BadAudio) as exc:
            code = getattr(exc, "code", "invalid_audio")
            await self.error(code, str(exc), getattr(exc, "param", None), event)

    async def _update(self, event: dict) -> None:
        beta = event["type"] == "transcription_session.update"
        config, fmt = parse_update(event.get("session"), self.config, self._fmt, beta)
        config = await self.backend.configure(config, self.config)
        if fmt != self._fmt:
            if self._buffer.size:
                raise SessionRejected(
                    "format_change", "commit or clear the buffered audio before changing format"
                )
            now_ms = self._buffer.ms(self._buffer.end)
            self._fmt, self._vad_stream = fmt, StreamResampler(fmt.rate)
            self._buffer = _Buffer(fmt.rate, start=now_ms * fmt.rate // 1000)
            self._detector = self._new_detector(now_ms)
        if config.vad != self.config.vad:
            self._detector = self._new_detector(self._buffer.ms(self._buffer.end))
        if config.known != self.config.known:
            self.tracker = SpeakerTracker(list(config.known))
        self.config = config
        reply = "transcription_session.updated" if beta else "session.updated"
        await self.emit(reply, session=self.describe(beta))

    async def _append(self, event: dict) -> None:
        audio = decode_chunk(event.get("audio"), self._fmt)
        limit = self.max_buffer_s * self._fmt.rate
        if self.config.vad is None and self._buffer.size + len(audio) > limit:
            raise SessionRejected(
                "buffer_full",
                f"over {self.max_buffer_s:.0f} s of audio uncommitted; commit or clear the buffer",
            )
        self._buffer.append(audio)
        if self.config.vad is None:
            return
        for edge in self._detector.push(self._vad_stream.push(audio)):
            if edge.started:
                self._item = _id("item")
                await self.emit(
                    "input_audio_buffer.speech_started", audio_start_ms=edge.ms, item_id=self._item
                )
            else:
                item, self._item = self._item or _id("item"), None
                await self.emit(
                    "input_audio_buffer.speech_stopped", audio_end_ms=edge.ms, item_id=item
                )
                # edge.start_ms: a long append may hold several turns.
                start = self._buffer.samples(edge.start_ms)
                await self._turn(item, start, self._buffer.samples(edge.ms))
        if not self._detector.speaking:  # keep the prefix padding, drop older silence
            pad = self.config.vad.prefix_padding_ms + 64
            self._buffer.trim(self._buffer.samples(max(0, self._detector.now_ms - pad)))

    async def _commit(self, event: dict) -> None:
        start = self._buffer.start
        if self._detector.speaking:
            start = max(start, self._buffer.samples(self._detector.start_ms))
        end = self._buffer.end
        if self._buffer.ms(end - start) < MIN_COMMIT_MS:
            raise SessionRejected(
                "input_audio_buffer_commit_empty",
                f"buffer too small: at least {MIN_COMMIT_MS} ms of audio must be appended "
                "before a commit",
            )
        item, self._item = self._item or _id("item"), None
        self._detector.reset(self._buffer.ms(end))
        await self._turn(item, start, end)

    async def _clear(self, event: dict) -> None:
        self._buffer.take(self._buffer.end, self._buffer.end)
        self._detector.reset(self._buffer.ms(self._buffer.end))
        self._item = None
        await self.emit("input_audio_buffer.cleared")

    async def _turn(self, item: str, start: int, end: int) -> None:
        # Resampled here, in commit order (a few ms), so the replicas get turns in order.
        audio = to_model_rate(self._buffer.take(start, end), self._fmt.rate)
        await self.emit(
            "input_audio_buffer.committed", item_id=item, previous_item_id=self._previous
        )
        self._previous = item
        t0, t1 = start / self._fmt.rate, end / self._fmt.rate
        before, done = self._last_turn, asyncio.Event()
        self._last_turn = done
        task = asyncio.create_task(self._transcribe(item, audio, t0, t1, before, done))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _transcribe(
        self,
        item: str,
        audio: np.ndarray,
        t0: float,
        t1: float,
        before: asyncio.Event | None,
        done: asyncio.Event,
    ) -> None:
        """Work on the turn at once; speak of it only after the turn before it (so captions
        and speaker labels follow the order people spoke in)."""
        try:
            outcome = await self._work(item, audio)
            if before is not None:
                await before.wait()
            if outcome is None:
                await self.emit(
                    "conversation.item.input_audio_transcription.failed",
                    item_id=item,
                    content_index=0,
                    error={
                        "type": "server_error",
                        "code": "transcription_failed",
                        "message": "the turn could not be transcribed",
                        "param": None,
                    },
                )
            else:
                await self._emit_turn(item, t0, t1, *outcome)
        finally:
            done.set()

    async def _work(self, item: str, audio16: np.ndarray) -> tuple[Any, Any, bool] | None:
        """(transcription, voice, with speakers) of a turn; None when it failed (logged)."""
        config = self.config
        async with self._slots:
            try:
                languages = tuple(sorted(self._languages, key=self._languages.get, reverse=True))
                calls = [self.backend.transcribe(audio16, config, languages)]
                if config.speakers:
                    calls.append(self.backend.voice(audio16))
                results = await asyncio.gather(*calls)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.warning("realtime turn %s failed", item, exc_info=True)
                return None
        return results[0], (results[1] if len(results) > 1 else None), config.speakers

    async def _emit_turn(
        self, item: str, t0: float, t1: float, transcription, voice, speakers: bool
    ) -> None:
        for seg in transcription.segments:
            if seg.language and (seg.language_probability or 0.0) >= SURE_PROBABILITY:
                spoken = self._languages.get(seg.language, 0.0)
                self._languages[seg.language] = spoken + seg.end - seg.start
        text = transcription.text
        common = {"item_id": item, "content_index": 0}
        await self.emit("conversation.item.input_audio_transcription.delta", delta=text, **common)
        if speakers:
            speaker = self.tracker.label(
                voice.embedding if voice else None, voice.speech_s if voice else 0.0
            )
            await self.emit(
                "conversation.item.input_audio_transcription.segment",
                id=f"seg_{self._segments}",
                start=round(t0, 3),
                end=round(t1, 3),
                speaker=speaker,
                text=text,
                **common,
            )
            self._segments += 1
        usage = {"type": "duration", "seconds": round(t1 - t0, 3)}
        await self.emit(
            "conversation.item.input_audio_transcription.completed",
            transcript=text,
            usage=usage,
            **common,
        )
        self.turns_completed += 1

    async def drain(self) -> None:
        """Wait for the turns in progress (a client that stops sending still gets them)."""
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*list(self._tasks), return_exceptions=True)

    def _new_detector(self, now_ms: int) -> TurnDetector:
        # Without VAD it only keeps the session's time and is never fed.
        return TurnDetector(self.config.vad or ServerVad(), self._probs, floor_ms=now_ms)
