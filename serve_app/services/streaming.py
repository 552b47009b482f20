"""`stream=true` on the OpenAI routes: Server-Sent Events as OpenAI sends them.

Events (`data:` lines, the type inside, as OpenAI's API and its client expect):
`transcript.text.delta` (`delta`), `transcript.text.segment` (`id`, `start`, `end`,
`speaker`, `text`) when the call diarizes, then `transcript.text.done` (`text`, `usage`).
A failure after the answer has begun arrives as an `error` event in OpenAI's shape, which
the official client raises as an APIError; bad input is found before the answer begins and
gets a plain 4xx.

Transcription without speakers streams window by window (jobs/live); a diarized call runs
as a job, like its non-streamed twin (speakers are linked over the whole recording), and
streams the result when the job is done.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
from collections.abc import AsyncIterator, Awaitable, Callable

from fastapi import UploadFile
from fastapi.responses import StreamingResponse
from starlette.background import BackgroundTask

from deployments.core.audio import AudioDecodeError
from deployments.core.schemas import TranscribeOptions
from jobs.live.window_stream import Piece, StreamFailed, WindowStream
from jobs.stitching.stitch import JobResult, StitchedSegment
from serve_app.errors import ApiError
from serve_app.services.context import Services

log = logging.getLogger(__name__)


def sse(event: dict) -> str:
    return f"data: {json.dumps(event, ensure_ascii=False)}\n\n"


def error_event(code: str, message: str, kind: str = "server_error") -> str:
    return sse({"type": "error", "error": {"type": kind, "code": code, "message": message}})


def _usage(duration: float) -> dict:
    return {"type": "duration", "seconds": round(duration, 3)}


class _Events:
    """Pieces of a transcript as OpenAI's stream events; joined deltas are the done text."""

    def __init__(self, diarized: bool) -> None:
        self.diarized, self.sent_text = diarized, False

    def segment(self, segment: StitchedSegment, index: int) -> list[str]:
        out = []
        if self.diarized:
            out.append(
                sse(
                    {
                        "type": "transcript.text.segment",
                        "id": f"seg_{index}",
                        "start": segment.start,
                        "end": segment.end,
                        "speaker": segment.speaker or "unknown",
                        "text": segment.text,
                    }
                )
            )
        if segment.text:
            delta = (" " if self.sent_text else "") + segment.text
            self.sent_text = True
            event = {"type": "transcript.text.delta", "delta": delta}
            if self.diarized:
                event["segment_id"] = f"seg_{index}"
            out.append(sse(event))
        return out

    def done(self, result: JobResult) -> str:
        return sse(
            {"type": "transcript.text.done", "text": result.text, "usage": _usage(result.duration)}
        )


def window_transcriber(handle, options: TranscribeOptions) -> Callable[..., Awaitable]:
    """One window to the Transcriber; a cancelled stream cancels the replica call too."""

    async def transcribe(audio):
        response = handle.transcribe.remote(audio, options)
        try:
            return await response
        except asyncio.CancelledError:
            response.cancel()
            raise

    return transcribe


async def open_window_stream(
    services: Services, upload: UploadFile, options: TranscribeOptions, model: str
) -> WindowStream:
    """The stream, its first window decoded: input that is not audio is a 400 here."""
    source = await asyncio.to_thread(_detach, upload)
    stream = WindowStream(
        source,
        window_transcriber(services.transcriber_for(model), options),
        task=options.task,
        max_s=services.settings.max_job_duration_s,
        owns_source=True,
    )
    try:
        await stream.start()
    except AudioDecodeError as exc:
        await stream.close()
        status = 413 if exc.code == "audio_too_long" else 400
        raise ApiError(status, exc.code, f"file: {exc.message}") from exc
    except BaseException:
        await stream.close()
        raise
    return stream


def _detach(upload: UploadFile):
    """The upload as a file of the stream's own: the request closes its file when the
    route returns, before the streamed answer has read it."""
    upload.file.seek(0)
    fd = upload.file.fileno()  # a spooled upload still in memory is written out here
    return os.fdopen(os.dup(fd), "rb")


async def window_events(stream: WindowStream) -> AsyncIterator[str]:
    events = _Events(diarized=False)
    try:
        async for piece in stream.pieces():
            for chunk in _piece(events, piece):
                yield chunk
    except StreamFailed as exc:
        yield error_event(exc.code, exc.message)
    except AudioDecodeError as exc:  # found past the first window
        yield error_event(exc.code, f"file: {exc.message}", "invalid_request_error")
    except Exception:
        log.exception("a streamed transcription failed")
        yield error_event("internal_error", "the transcription failed; send it again")
    finally:
        await stream.close()


def _piece(events: _Events, piece: Piece) -> list[str]:
    if piece.result is not None:
        return [events.done(piece.result)]
    assert piece.segment is not None
    return events.segment(piece.segment, piece.index)


async def job_events(
    wait: Callable[[], Awaitable[JobResult]], keepalive_s: float
) -> AsyncIterator[str]:
    """A job's result as stream events once `wait` returns it; comments keep the
    connection alive meanwhile."""
    task = asyncio.create_task(wait())
    try:
        while True:
            done, _ = await asyncio.wait({task}, timeout=keepalive_s)
            if done:
                break
            yield ": ping\n\n"
        try:
            result = task.result()
        except ApiError as exc:
            kind = "invalid_request_error" if exc.status < 500 else "server_error"
            yield error_event(exc.code, exc.message, kind)
            return
        except Exception:
            log.exception("a streamed job call failed")
            yield error_event("internal_error", "the transcription failed; send it again")
            return
        events = _Events(diarized=True)
        for index, segment in enumerate(result.segments):
            for chunk in events.segment(segment, index):
                yield chunk
        yield events.done(result)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


def event_stream(
    services: Services, owner: str | None, events: AsyncIterator[str]
) -> StreamingResponse:
    """The SSE answer; it gives back the held-request place the caller took for `owner`
    (before the answer began: 429/503 rather than a slot held for minutes) when it ends."""
    held = services.held_requests()
    released = False

    def release() -> None:
        nonlocal released
        if not released:
            released = True
            held.release(owner)

    async def body() -> AsyncIterator[str]:
        try:
            async for chunk in events:
                yield chunk
        finally:
            release()

    return StreamingResponse(
        body(),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
        background=BackgroundTask(release),
    )
