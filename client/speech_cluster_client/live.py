"""``speech-cluster live``: stream a file or the microphone to a realtime session
(``/v1/realtime?intent=transcription``, OpenAI's protocol) and print captions as they come.

Audio goes out as 24 kHz 16-bit PCM. WAV files are read with the standard library (any rate,
resampled here); other formats go through ``ffmpeg`` when it is on PATH. ``--mic`` needs the
``sounddevice`` package (``pip install './client[mic]'``). Files are sent at real time by
default (``--speed 0``: as fast as the server takes them). After the last audio the command
waits for every turn's transcript, then exits. Captions print as
``[m:ss.s] SPEAKER: text``; ``--events`` prints every server event as a JSON line instead.
"""

from __future__ import annotations

import argparse
import array
import base64
import json
import shutil
import subprocess
import sys
import threading
import time
import wave
from collections.abc import Iterator
from pathlib import Path

from speech_cluster_client.cli import (
    EXIT_FAILED,
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_SERVER,
    EXIT_USAGE,
    CliError,
)

RATE = 24000
CHUNK_S = 0.1
WAIT_AFTER_S = 120.0  # for the last turns' transcripts once the audio has ended


def _resample(samples: array.array, rate: int) -> array.array:
    """16-bit mono samples at `rate` as 24 kHz, by linear interpolation."""
    if rate == RATE or not samples:
        return samples
    n = len(samples) * RATE // rate
    step, out = rate / RATE, array.array("h", bytes(2 * n))
    last = len(samples) - 1
    for i in range(n):
        x = i * step
        j = int(x)
        k = min(j + 1, last)
        out[i] = int(samples[j] + (samples[k] - samples[j]) * (x - j))
    return out


def read_wav(path: Path) -> bytes:
    with wave.open(str(path), "rb") as w:
        if w.getsampwidth() != 2 or w.getcomptype() != "NONE":
            raise CliError(EXIT_USAGE, f"{path}: only 16-bit PCM WAV is read without ffmpeg")
        channels, rate = w.getnchannels(), w.getframerate()
        frames = array.array("h", w.readframes(w.getnframes()))
    if sys.byteorder == "big":
        frames.byteswap()
    mono = frames[::channels] if channels > 1 else frames  # the first channel
    out = _resample(mono, rate)
    if sys.byteorder == "big":
        out.byteswap()
    return out.tobytes()


def read_audio(path: Path) -> bytes:
    """The file as 24 kHz mono 16-bit little-endian PCM."""
    if path.suffix.lower() == ".wav":
        try:
            return read_wav(path)
        except (wave.Error, EOFError):
            pass  # not plain PCM WAV: ffmpeg may still read it
    ffmpeg = shutil.which("ffmpeg")
    if ffmpeg is None:
        raise CliError(EXIT_USAGE, f"{path}: install ffmpeg to stream this format (or use WAV)")
    proc = subprocess.run(
        [ffmpeg, "-nostdin", "-v", "error", "-i", str(path), "-f", "s16le", "-ac", "1",
         "-ar", str(RATE), "-"],
        capture_output=True,
        check=False,
    )  # fmt: skip
    if proc.returncode != 0:
        raise CliError(EXIT_USAGE, f"{path}: ffmpeg could not decode it")
    return proc.stdout


def file_chunks(pcm: bytes, speed: float) -> Iterator[bytes]:
    step = int(RATE * CHUNK_S) * 2
    t0 = time.monotonic()
    for n, i in enumerate(range(0, len(pcm), step)):
        if speed > 0:
            time.sleep(max(0.0, t0 + n * CHUNK_S / speed - time.monotonic()))
        yield pcm[i : i + step]
    yield bytes(RATE * 2)  # a second of silence: server VAD ends the last turn


def mic_chunks() -> Iterator[bytes]:
    try:
        import sounddevice
    except ImportError:
        raise CliError(EXIT_USAGE, "--mic needs sounddevice: pip install './client[mic]'") from None
    frames = int(RATE * CHUNK_S)
    with sounddevice.RawInputStream(samplerate=RATE, channels=1, dtype="int16") as stream:
        while True:
            data, _ = stream.read(frames)
            yield bytes(data)


def _caption(event: dict) -> str | None:
    kind = event.get("type", "")
    if kind.endswith("input_audio_transcription.segment"):
        start = float(event.get("start", 0.0))
        stamp = f"{int(start // 60)}:{start % 60:04.1f}"
        return f"[{stamp}] {event.get('speaker')}: {event.get('text', '').strip()}"
    if kind.endswith("input_audio_transcription.failed") or kind == "error":
        return f"error: {event.get('error', {}).get('message', 'unknown error')}"
    return None


def _session_update(args: argparse.Namespace) -> dict:
    transcription: dict = {"model": args.model, "diarize": not args.no_speakers}
    if args.language:
        transcription["language"] = args.language
    if args.speakers:
        transcription["known_speakers"] = [s.strip() for s in args.speakers.split(",") if s.strip()]
    return {
        "type": "session.update",
        "session": {
            "type": "transcription",
            "audio": {
                "input": {
                    "format": {"type": "audio/pcm", "rate": RATE},
                    "transcription": transcription,
                    "turn_detection": {"type": "server_vad", "silence_duration_ms": 500},
                }
            },
        },
    }


def run(args: argparse.Namespace) -> int:
    try:
        from websockets.exceptions import WebSocketException
        from websockets.sync.client import connect
    except ImportError:
        print("speech-cluster: live needs the websockets package", file=sys.stderr)
        return EXIT_USAGE
    try:
        chunks = mic_chunks() if args.mic else file_chunks(read_audio(Path(args.file)), args.speed)
        url = args.url.rstrip("/").replace("http", "ws", 1) + "/v1/realtime?intent=transcription"
        headers = {"Authorization": f"Bearer {args.api_key}"} if args.api_key else {}
        with connect(url, additional_headers=headers, max_size=None) as ws:
            return _stream(ws, chunks, args)
    except CliError as exc:
        print(f"speech-cluster: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except (OSError, WebSocketException) as exc:
        print(f"speech-cluster: server unreachable at {args.url}: {exc!r}", file=sys.stderr)
        return EXIT_SERVER
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED


def _stream(ws, chunks: Iterator[bytes], args: argparse.Namespace) -> int:
    state = {"committed": 0, "finished": 0, "failed": False, "refused": None}
    done_sending = threading.Event()

    def receive() -> None:
        for message in ws:
            event = json.loads(message)
            kind = event.get("type", "")
            if kind == "input_audio_buffer.committed":
                state["committed"] += 1
            elif kind.endswith("transcription.completed") or kind.endswith("transcription.failed"):
                state["finished"] += 1
                state["failed"] = state["failed"] or kind.endswith("failed")
            elif kind == "error" and event.get("event_id") == "event_refused":
                state["refused"] = event["error"].get("message")
            line = json.dumps(event) if args.events else _caption(event)
            if line:
                print(line, flush=True)
            if done_sending.is_set() and state["finished"] >= state["committed"]:
                return

    ws.send(json.dumps(_session_update(args)))
    reader = threading.Thread(target=receive, daemon=True)
    reader.start()
    from websockets.exceptions import ConnectionClosed

    for chunk in chunks:
        if not reader.is_alive():
            break
        event = {"type": "input_audio_buffer.append", "audio": base64.b64encode(chunk).decode()}
        try:
            ws.send(json.dumps(event))
        except ConnectionClosed:  # the server ended the session: the reader says why
            break
    time.sleep(1.0)  # let the server's VAD close the last turn before counting
    done_sending.set()
    deadline = time.monotonic() + WAIT_AFTER_S
    while reader.is_alive() and time.monotonic() < deadline:
        if state["finished"] >= state["committed"]:
            break
        reader.join(0.2)
    ws.close()
    if state["refused"]:
        raise CliError(EXIT_SERVER, state["refused"])
    return EXIT_FAILED if state["failed"] else EXIT_OK


def add_live_parser(sub) -> None:
    from speech_cluster_client.cli import add_connection_args

    p = sub.add_parser("live", help="stream a file or the microphone; print captions live")
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("file", nargs="?", help="audio file to stream (WAV, or any with ffmpeg)")
    source.add_argument("--mic", action="store_true", help="the microphone (needs sounddevice)")
    p.add_argument("--speed", type=float, default=1.0, help="x real time for files (0: no wait)")
    p.add_argument("--model", default="whisper-1", help="served model (default: the server's)")
    p.add_argument("--language", help="ISO 639-1 code (default: detected per turn)")
    p.add_argument("--speakers", help="enrolled speakers to name: ids or names, comma-separated")
    p.add_argument("--no-speakers", action="store_true", help="no speaker labels (faster)")
    p.add_argument("--events", action="store_true", help="print every server event as JSON")
    add_connection_args(p)
    p.set_defaults(func=run)
