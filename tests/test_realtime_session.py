"""jobs/live: realtime sessions without a socket. Audio formats, turn detection on real speech
(Silero VAD), the protocol's events, speakers across turns and known names, with a fake
backend in place of the replicas. The deployed endpoint: tests/test_realtime_e2e.py."""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import warnings

import numpy as np
import pytest

from deployments.core.schemas import Transcription, TranscriptSegment, VoiceSample
from jobs.live.audio_formats import (
    StreamResampler,
    decode_chunk,
    parse_format,
    to_model_rate,
)
from jobs.live.realtime_session import RealtimeSession
from jobs.live.session_config import SessionRejected
from jobs.live.speaker_tracker import SpeakerTracker
from jobs.live.turns import ServerVad, TurnDetector, silero_probabilities
from jobs.stitching.voiceprints import KnownSpeaker

RATE = 24000


def test_g711_decoding_matches_the_standard_tables():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        import audioop
    data = bytes(range(256))
    for name, ref in (("audio/pcmu", audioop.ulaw2lin), ("audio/pcma", audioop.alaw2lin)):
        fmt = parse_format({"type": name})
        ours = decode_chunk(base64.b64encode(data).decode(), fmt)
        theirs = np.frombuffer(ref(data, 2), "<i2") / 32768.0
        assert fmt.rate == 8000 and np.allclose(ours, theirs)


def test_formats_and_bad_audio_are_named():
    assert parse_format("pcm16").rate == RATE and parse_format({"type": "audio/pcm"}).rate == RATE
    for bad in (
        {"type": "audio/pcm", "rate": 16000},
        "opus",
        {"type": "audio/pcmu", "rate": 16000},
    ):
        with pytest.raises(ValueError, match=r"format|Hz"):
            parse_format(bad)
    fmt = parse_format("pcm16")
    for b64, why in (("***", "base64"), (base64.b64encode(b"abc").decode(), "even"), (7, "string")):
        with pytest.raises(ValueError, match=why):
            decode_chunk(b64, fmt)


def test_chunked_resampling_keeps_exact_time():
    rng = np.random.default_rng(1)
    tone = np.sin(np.arange(RATE * 3) * 2 * np.pi * 440 / RATE).astype(np.float32)
    resampler, out, i = StreamResampler(RATE), [], 0
    while i < len(tone):
        n = int(rng.integers(100, 5000))
        out.append(resampler.push(tone[i : i + n]))
        i += n
    streamed = np.concatenate(out)
    whole = to_model_rate(tone, RATE)
    lag = StreamResampler.CONTEXT * 2 // 3  # the last outputs wait for more input
    assert len(streamed) == len(whole) - lag == 48000 - lag
    assert np.abs(streamed - whole[: len(streamed)]).max() < 1e-4


def test_turn_detector_reports_padding_silence_and_long_turns():
    # 32 ms frames: 10 silent, 40 speech, 20 silent, then 1000 speech (32 s, over the cap).
    probs = np.array([0.0] * 10 + [0.9] * 40 + [0.0] * 20 + [0.9] * 1000, np.float32)
    cursor = iter(range(len(probs) + 1))

    def fake(audio):
        n = len(audio) // 512
        start = next(cursor)
        for _ in range(n - 2):
            next(cursor)
        return np.concatenate([[0.0], probs[start : start + n - 1]])

    detector = TurnDetector(ServerVad(0.5, 300, 500), fake)
    edges = []
    for _ in range(len(probs)):
        edges += detector.push(np.zeros(512, np.float32))
    assert [(e.started, e.ms) for e in edges[:2]] == [(True, 320 - 300), (False, 50 * 32 + 512)]
    # No turn starts inside the one committed before (its padding stops at that turn's end).
    assert edges[2].started and edges[2].ms == edges[1].ms
    # The long turn is stopped at 30 s.
    assert not edges[3].started and 30_000 <= edges[3].ms - edges[2].ms < 30_032


def test_speaker_tracker_keeps_voices_apart_and_names_the_known_one():
    a, b = np.eye(16)[0], np.eye(16)[1]
    near_a = (a + 0.2 * np.eye(16)[2]).tolist()
    tracker = SpeakerTracker([KnownSpeaker(name="Alice", embedding=a.tolist())])
    labels = [
        tracker.label(b.tolist(), 3.0),
        tracker.label(near_a, 3.0),
        tracker.label(b.tolist(), 0.5),  # short: joins the nearest, founds nothing
        tracker.label(a.tolist(), 2.0),
        tracker.label(None, 0.0),  # no voice heard: the last speaker
    ]
    assert labels == ["SPEAKER_00", "Alice", "SPEAKER_00", "Alice", "Alice"]
    assert len(tracker.clusters) == 2


class FakeBackend:
    """Turn n is transcribed as 'turn n'; its voice alternates between two people."""

    def __init__(self) -> None:
        self.turns = 0
        self.fail_next = False
        self.languages_seen: list[tuple[str, ...]] = []

    async def configure(self, config, previous):
        if config.language == "xx":
            raise SessionRejected("invalid_language", "language: 'xx' is not served", "language")
        known = tuple(
            KnownSpeaker(name=n, embedding=np.eye(16)[0].tolist()) for n in config.known_spec.names
        )
        return dataclasses.replace(config, served_model="base", known=known)

    async def transcribe(self, audio, config, languages):
        self.languages_seen.append(languages)
        if self.fail_next:
            self.fail_next = False
            raise RuntimeError("replica died (actor 42)")
        n, self.turns = self.turns, self.turns + 1
        seg = TranscriptSegment(
            start=0.0,
            end=len(audio) / 16000,
            text=f"turn {n}",
            language="en",
            language_probability=0.9,
        )
        return Transcription(language="en", language_probability=1.0,
                             duration=len(audio) / 16000, segments=[seg])  # fmt: skip

    async def voice(self, audio):
        person = np.eye(16)[self.turns % 2]
        return VoiceSample(duration=len(audio) / 16000, speech_s=len(audio) / 16000,
                           other_speech_s=0.0, voices=1, embedding=person.tolist())  # fmt: skip


@pytest.fixture(scope="module")
def vad_probs():
    return silero_probabilities()


def _pcm24k(audio16: np.ndarray) -> bytes:
    from scipy.signal import resample_poly

    up = resample_poly(audio16, 3, 2)
    return (np.clip(up, -1, 1) * 32767).astype("<i2").tobytes()


def _prompts_with_pauses(n: int, pause_s: float = 1.5) -> np.ndarray:
    from tests.realvoices import voice_prompts

    prompts = [p.audio for p in voice_prompts("en_allison") if 2.0 < len(p.audio) / 16000 < 6.0]
    gap = np.zeros(int(pause_s * 16000), np.float32)
    return np.concatenate([gap] + [np.concatenate([p, gap]) for p in prompts[:n]])


async def _session(backend, probs, events, **kw):
    async def send(event):
        events.append(event)

    session = RealtimeSession(send, backend, probs, **kw)
    await session.start()
    return session


async def _append_all(session, pcm: bytes, chunk_ms: int = 100):
    step = RATE * 2 * chunk_ms // 1000
    for i in range(0, len(pcm), step):
        await session.handle(
            {"type": "input_audio_buffer.append",
             "audio": base64.b64encode(pcm[i : i + step]).decode()}
        )  # fmt: skip


def test_server_vad_session_on_real_speech_labels_turns(vad_probs):
    events: list[dict] = []

    async def run():
        session = await _session(FakeBackend(), vad_probs, events)
        await session.handle({"type": "session.update", "event_id": "u1", "session": {
            "type": "transcription",
            "audio": {"input": {"transcription": {"known_speaker_names": ["Alice"],
                                                  "known_speaker_references": ["x"]}}},
        }})  # fmt: skip
        await _append_all(session, _pcm24k(_prompts_with_pauses(3)))
        await session.drain()
        await session.close()

    asyncio.run(run())
    kinds = [e["type"] for e in events]
    assert kinds[:2] == ["session.created", "session.updated"]
    assert events[1]["session"]["audio"]["input"]["transcription"]["known_speakers"] == ["Alice"]
    started = [e for e in events if e["type"] == "input_audio_buffer.speech_started"]
    stopped = [e for e in events if e["type"] == "input_audio_buffer.speech_stopped"]
    completed = [
        e for e in events if e["type"] == "conversation.item.input_audio_transcription.completed"
    ]
    assert len(started) == len(stopped) == len(completed) == 3
    for s, t in zip(started, stopped, strict=True):
        assert s["item_id"] == t["item_id"] and 0 <= s["audio_start_ms"] < t["audio_end_ms"]
    assert [e["item_id"] for e in completed] == [e["item_id"] for e in started]
    segments = [e for e in events if e["type"].endswith("transcription.segment")]
    # Voices alternate B, A, B (the fake): A matches the known voiceprint.
    assert [s["speaker"] for s in segments] == ["SPEAKER_00", "Alice", "SPEAKER_00"]
    assert all(s["end"] > s["start"] for s in segments)
    committed = [e for e in events if e["type"] == "input_audio_buffer.committed"]
    assert committed[1]["previous_item_id"] == committed[0]["item_id"]
    assert completed[0]["usage"]["type"] == "duration" and completed[0]["usage"]["seconds"] > 1


def test_manual_commits_clear_and_errors_keep_the_session(vad_probs):
    events: list[dict] = []
    backend = FakeBackend()

    async def run():
        session = await _session(backend, vad_probs, events, max_buffer_s=3.0)
        await session.handle({"type": "transcription_session.update", "session": {
            "input_audio_format": "pcm16", "turn_detection": None,
            "input_audio_transcription": {"model": "whisper-1", "diarize": False},
        }})  # fmt: skip
        await session.handle({"type": "input_audio_buffer.commit", "event_id": "c0"})
        await _append_all(session, _pcm24k(_prompts_with_pauses(1, 0.2)[: 16000 * 2]))
        await session.handle({"type": "input_audio_buffer.commit"})
        await session.drain()
        await _append_all(session, _pcm24k(np.zeros(16000, np.float32)))
        await session.handle({"type": "input_audio_buffer.clear"})
        two_s = _pcm24k(np.zeros(16000 * 2, np.float32))
        await _append_all(session, two_s, chunk_ms=2000)
        await _append_all(session, two_s, chunk_ms=2000)  # over max_buffer_s: refused
        backend.fail_next = True
        await session.handle({"type": "input_audio_buffer.commit"})
        for bad in ({"type": "nope", "event_id": "e9"},
                    {"type": "input_audio_buffer.append", "audio": "%%%"},
                    {"type": "session.update", "session": {"audio": {"input": {
                        "transcription": {"language": "xx"}}}}},
                    {"type": "session.update", "session": {"audio": {"input": {
                        "turn_detection": {"type": "semantic_vad"}}}}}):  # fmt: skip
            await session.handle(bad)
        await session.drain()

    asyncio.run(run())
    kinds = [e["type"] for e in events]
    assert kinds[1] == "transcription_session.updated"
    assert events[1]["session"]["turn_detection"] is None
    assert "input_audio_buffer.speech_started" not in kinds
    errors = [e["error"] for e in events if e["type"] == "error"]
    codes = [e["code"] for e in errors]
    assert codes == ["input_audio_buffer_commit_empty", "buffer_full", "unknown_event",
                     "invalid_audio", "invalid_language", "invalid_value"]  # fmt: skip
    assert errors[0]["event_id"] == "c0" and errors[2]["event_id"] == "e9"
    assert "input_audio_buffer.cleared" in kinds
    completed = [e for e in events if e["type"].endswith("transcription.completed")]
    assert [e["transcript"] for e in completed] == ["turn 0"]
    assert abs(completed[0]["usage"]["seconds"] - 2.0) < 0.01
    assert not any(e["type"].endswith("transcription.segment") for e in events)  # diarize off
    # The first turn's sure language is offered to the next (for unsure turns).
    assert backend.languages_seen == [(), ("en",)]
    failed = [e for e in events if e["type"].endswith("transcription.failed")]
    assert len(failed) == 1 and "actor" not in failed[0]["error"]["message"]
