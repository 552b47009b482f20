"""jobs/live/window_stream.py with a fake transcriber: real audio cut into windows, texts in
order as each window finishes, the first window alone, failures named, nothing left
running. The real replicas stream in tests/test_api_e2e.py."""

from __future__ import annotations

import asyncio
import io
import time

import numpy as np
import pytest
import soundfile as sf

from deployments.core.audio import AudioDecodeError
from deployments.core.schemas import Transcription, TranscriptSegment, Word
from jobs.live.window_stream import FIRST_ALONE_S, StreamFailed, WindowStream

SR = 16000


def _recording(jfk_audio: np.ndarray, copies: int) -> bytes:
    """JFK `copies` times, 1.5 s of silence between: windows cut in those pauses."""
    gap = np.zeros(int(1.5 * SR), np.float32)
    audio = np.concatenate([np.concatenate([jfk_audio, gap]) for _ in range(copies)])
    buf = io.BytesIO()
    sf.write(buf, audio, SR, format="WAV", subtype="PCM_16")
    return buf.getvalue()


class FakeTranscriber:
    """Answers each window with one sentence naming the window after `delay_s` (the second
    window takes three times as long, so the third finishes before it); the first `fail`
    calls raise as a dying replica does."""

    def __init__(self, delay_s: float = 0.05, fail: int = 0) -> None:
        self.delay_s, self.fail = delay_s, fail
        self.calls: list[tuple[float, float]] = []  # (sent at, seconds of audio)
        self.active = self.most_active = 0

    async def __call__(self, audio: np.ndarray) -> Transcription:
        n = len(self.calls)
        self.calls.append((time.monotonic(), len(audio) / SR))
        self.active += 1
        self.most_active = max(self.most_active, self.active)
        try:
            if self.fail:
                self.fail -= 1
                raise RuntimeError("replica died (actor 1234, cuda:0)")
            await asyncio.sleep(self.delay_s * (3 if n == 1 else 1))
            words = [
                Word(start=1.0 + i, end=1.5 + i, text=f" w{n}x{i}", probability=0.9)
                for i in range(3)
            ]
            words[-1] = words[-1].model_copy(update={"text": words[-1].text + "."})
            segment = TranscriptSegment(
                start=1.0, end=3.5, text="".join(w.text for w in words), words=words
            )
            return Transcription(
                language="en",
                language_probability=0.99,
                duration=len(audio) / SR,
                segments=[segment],
            )
        finally:
            self.active -= 1


async def _run(stream: WindowStream) -> tuple[list[str], object]:
    texts, result = [], None
    await stream.start()
    try:
        async for piece in stream.pieces():
            if piece.result is not None:
                result = piece.result
            else:
                texts.append(piece.segment.text)
    finally:
        await stream.close()
    return texts, result


def test_windows_come_back_in_order_and_join_to_the_final_text(jfk_audio):
    fake = FakeTranscriber()
    data = _recording(jfk_audio, 6)  # 75 s: three windows of at most 30 s
    texts, result = asyncio.run(_run(WindowStream(data, fake, ahead=2)))
    assert len(fake.calls) == 3 and all(s <= 30.0 for _, s in fake.calls)
    # The second window answers after the third, yet its text comes first.
    assert texts == ["w0x0 w0x1 w0x2.", "w1x0 w1x1 w1x2.", "w2x0 w2x1 w2x2."]
    assert result.text == " ".join(texts)
    assert result.duration == pytest.approx(6 * (len(jfk_audio) / SR + 1.5), abs=0.01)
    assert fake.most_active == 2  # `ahead` bounds the windows in flight
    # The first window goes alone: the second is sent after the batch wait has passed.
    assert fake.calls[1][0] - fake.calls[0][0] >= FIRST_ALONE_S * 0.9


def test_a_failing_replica_is_retried_then_named_without_its_details(jfk_audio, monkeypatch):
    monkeypatch.setattr("jobs.live.window_stream.asyncio.sleep", _no_sleep)
    data = _recording(jfk_audio, 1)
    texts, _ = asyncio.run(_run(WindowStream(data, FakeTranscriber(fail=2))))
    assert texts == ["w2x0 w2x1 w2x2."]  # the third attempt is the third call
    with pytest.raises(StreamFailed) as failed:
        asyncio.run(_run(WindowStream(data, FakeTranscriber(fail=3))))
    assert failed.value.code == "window_failed" and "0.0-12.5 s" in failed.value.message
    assert "actor" not in failed.value.message


_real_sleep = asyncio.sleep


async def _no_sleep(seconds: float) -> None:
    await _real_sleep(0)


def test_input_that_is_not_audio_fails_before_the_first_call():
    fake = FakeTranscriber()
    with pytest.raises(AudioDecodeError):
        asyncio.run(_run(WindowStream(b"not audio at all" * 100, fake)))
    assert fake.calls == []


def test_closing_early_cancels_the_windows_in_flight(jfk_audio):
    fake = FakeTranscriber(delay_s=5.0)

    async def first_then_close() -> float:
        stream = WindowStream(_recording(jfk_audio, 6), fake, ahead=2)
        await stream.start()
        pieces = stream.pieces()
        task = asyncio.create_task(pieces.__anext__())
        await _real_sleep(0.5)
        task.cancel()
        t0 = time.monotonic()
        await asyncio.gather(task, return_exceptions=True)
        await stream.close()
        return time.monotonic() - t0

    assert asyncio.run(first_then_close()) < 2.0
    assert fake.active == 0 and len(fake.calls) == 2
