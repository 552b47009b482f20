"""In-process API harness: the real FastAPI app and a real Redis, with the model replicas and
the job manager replaced by small fakes (what these tests isolate is the HTTP contract)."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field

from deployments.core.schemas import Transcription, TranscriptSegment, Word
from jobs.state.job_store import JobStore
from jobs.state.records import JobStatus


class _Awaitable:
    def __init__(self, value):
        self.value = value

    def __await__(self):
        async def get():
            return self.value

        return get().__await__()


class _Method:
    def __init__(self, fn):
        self.fn = fn

    def remote(self, *args, **kwargs):
        # Like a Ray call: the work is submitted now, awaiting only collects the result.
        return _Awaitable(self.fn(*args, **kwargs))


def _words(text: str, start: float = 0.5) -> list[Word]:
    words, t = [], start
    for token in text.split():
        words.append(Word(start=t, end=t + 0.3, text=" " + token, probability=0.9))
        t += 0.4
    return words


class FakeTranscriber:
    TEXT = "hello from the fake transcriber."

    def __init__(self) -> None:
        self.calls = 0
        self.transcribe = _Method(self._transcribe)
        self.transcribe_live = self.transcribe
        self.info = _Method(lambda: {"model": "tiny.en", "device": "cpu", "languages": ["en"]})

    def _transcribe(self, audio, options) -> Transcription:
        self.calls += 1
        words = _words(self.TEXT)
        return Transcription(
            language="en",
            language_probability=1.0,
            duration=len(audio) / 16000,
            segments=[
                TranscriptSegment(
                    start=words[0].start, end=words[-1].end, text=self.TEXT, words=words
                )
            ],
        )


class FakeDiarizer:
    def __init__(self) -> None:
        self.info = _Method(lambda: {"model": "bundled"})


@dataclass
class FakeManager:
    store: JobStore
    started: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.start_job = _Method(self.started.append)
        self.ping = _Method(lambda: {"pid": 0})
        self.cancel = _AsyncMethod(self._cancel)
        self.retry = _AsyncMethod(self._retry)

    async def _cancel(self, job_id: str):
        record = await self.store.get(job_id)
        record.status, record.stage = JobStatus.CANCELLED, "cancelled by request"
        await self.store.finish(record)
        return record

    async def _retry(self, job_id: str):
        record = await self.store.get(job_id)
        record.error_code = record.error_message = record.finished_at = None
        record.status, record.stage = JobStatus.QUEUED, "queued for retry"
        await self.store.requeue(record)
        return record


class _AsyncMethod:
    def __init__(self, fn):
        self.fn = fn

    def remote(self, *args):
        return self.fn(*args)


def prefix() -> str:
    return f"api{uuid.uuid4().hex[:8]}:"


def fake_services(redis_server, tmp_path, **overrides):
    """Services for the in-process app: real Redis and storage, fake replicas and manager."""
    from jobs.state.audio_files import AudioStorage
    from serve_app.services.context import Services
    from serve_app.settings import Settings

    settings = Settings(
        data_dir=tmp_path, redis_url=redis_server.url, max_upload_mb=2.0, **overrides
    )
    store = JobStore(redis_server.url, prefix=prefix())
    return Services(
        settings=settings,
        transcribers=dict.fromkeys(settings.whisper_models, FakeTranscriber()),
        diarizer=FakeDiarizer(),
        store=store,
        storage=AudioStorage(tmp_path / "uploads"),
        manager=FakeManager(store),
    )
