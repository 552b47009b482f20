"""Realtime transcription sessions (/v1/realtime) on real voices, sent at real time.

    .venv/bin/python bench/realtime_sessions.py [--seconds 90] [--runs 3] [--sessions 4]

The app is deployed from serve_config.yaml. A meeting of four real voices (Debian's prompts,
tests/realvoices.py: English, Italian, French, Russian) is streamed as 24 kHz PCM in 100 ms
appends at real time, with server VAD, speakers on, and two people known by one reference
sample each (a prompt of theirs not said in the meeting). Per run:
- one session alone: turns committed and completed, the seconds from a turn's last audio
  (speech_stopped.audio_end_ms, on the sender's real-time clock) to its completed event
  (median and p95), distinct speaker labels, the share of each known person's turns named
  after them, WER of the session's text against a batch job's text of the same audio;
- `--sessions` sessions at once (each its own meeting) beside a batch job of twice the
  meeting's length: the same latency figures over all sessions, whether every turn
  completed, and whether the job finished.
The summary gives the median of the runs and their spread (min-max).
"""

from __future__ import annotations

import argparse
import base64
import io
import json
import statistics
import sys
import threading
import time
from pathlib import Path

import numpy as np
import soundfile as sf
from scipy.signal import resample_poly

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.cluster import Cluster
from bench.common import (
    add_common_args,
    bench_settings,
    default_deploy,
    log,
    make_parser,
    ray_cpus,
    table,
    workspace,
    write_json,
)
from tests.conftest import wer
from tests.realvoices import cached_meeting, voice_prompts

VOICES = ["en_allison", "it_carlo", "fr_june", "ru"]
KNOWN = {"en_allison": "Allison", "it_carlo": "Carlo"}


def parse_args() -> argparse.Namespace:
    parser = make_parser(__doc__)
    parser.add_argument("--seconds", type=float, default=90.0, help="meeting length")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--sessions", type=int, default=4, help="concurrent sessions")
    add_common_args(parser)
    return parser.parse_args()


def _data_url(audio: np.ndarray) -> str:
    buf = io.BytesIO()
    sf.write(buf, audio, 16000, format="WAV", subtype="PCM_16")
    return "data:audio/wav;base64," + base64.b64encode(buf.getvalue()).decode()


def references(rec) -> tuple[list[str], list[str]]:
    said = " ".join(rec.texts)
    names, urls = [], []
    for voice, name in KNOWN.items():
        prompt = next(
            p
            for p in voice_prompts(voice)
            if p.text not in said and 4.0 < len(p.audio) / 16000 < 9.0
        )
        names.append(name)
        urls.append(_data_url(prompt.audio))
    return names, urls


def voice_at(rec, start: float, end: float) -> str | None:
    heard: dict[str, float] = {}
    for s, e, voice in rec.turns:
        overlap = min(e, end) - max(s, start)
        if overlap > 0:
            heard[voice] = heard.get(voice, 0.0) + overlap
    return max(heard, key=heard.get) if heard else None


def session(url: str, rec, out: dict) -> None:
    """Stream `rec` at real time; fill `out` with events and their arrival times."""
    from websockets.sync.client import connect

    pcm = (np.clip(resample_poly(rec.audio, 3, 2), -1, 1) * 32767).astype("<i2").tobytes()
    pcm += bytes(24000 * 2 * 2)
    names, urls = references(rec)
    events: list[tuple[float, dict]] = []
    with connect(url + "/v1/realtime?intent=transcription", max_size=None) as ws:
        ws.send(
            json.dumps(
                {
                    "type": "session.update",
                    "session": {
                        "type": "transcription",
                        "audio": {
                            "input": {
                                "format": {"type": "audio/pcm", "rate": 24000},
                                "transcription": {
                                    "known_speaker_names": names,
                                    "known_speaker_references": urls,
                                },
                                "turn_detection": {
                                    "type": "server_vad",
                                    "silence_duration_ms": 500,
                                },
                            }
                        },
                    },
                }
            )
        )
        done = threading.Event()

        def receive() -> None:
            for message in ws:
                events.append((time.monotonic(), json.loads(message)))
                if done.is_set() and _all_finished(events):
                    return

        reader = threading.Thread(target=receive, daemon=True)
        reader.start()
        step = 2400 * 2  # 100 ms
        t0 = time.monotonic()
        for n, i in enumerate(range(0, len(pcm), step)):
            time.sleep(max(0.0, t0 + n * 0.1 - time.monotonic()))
            chunk = base64.b64encode(pcm[i : i + step]).decode()
            ws.send(json.dumps({"type": "input_audio_buffer.append", "audio": chunk}))
        sent_all = time.monotonic()
        done.set()
        deadline = time.monotonic() + 120
        while not _all_finished(events) and time.monotonic() < deadline:
            time.sleep(0.2)
    out.update(events=events, t0=t0, sent_all=sent_all, rec=rec)


def _all_finished(events) -> bool:
    kinds = [e["type"] for _, e in events]
    committed = kinds.count("input_audio_buffer.committed")
    finished = sum(k.endswith(("transcription.completed", "transcription.failed")) for k in kinds)
    return committed > 0 and finished >= committed


def measures(out: dict) -> dict:
    events, t0, rec = out["events"], out["t0"], out["rec"]
    stopped = {
        e["item_id"]: e["audio_end_ms"]
        for _, e in events
        if e["type"] == "input_audio_buffer.speech_stopped"
    }
    latency = [
        t - (t0 + stopped[e["item_id"]] / 1000)
        for t, e in events
        if e["type"].endswith("transcription.completed") and e["item_id"] in stopped
    ]
    kinds = [e["type"] for _, e in events]
    segments = [e for _, e in events if e["type"].endswith("transcription.segment")]
    named = {}
    for voice, name in KNOWN.items():
        theirs = [s["speaker"] for s in segments if voice_at(rec, s["start"], s["end"]) == voice]
        named[name] = sum(n == name for n in theirs) / len(theirs) if theirs else None
    others = [s["speaker"] for s in segments if voice_at(rec, s["start"], s["end"]) not in KNOWN]
    return {
        "committed": kinds.count("input_audio_buffer.committed"),
        "completed": sum(k.endswith("transcription.completed") for k in kinds),
        "failed": sum(k.endswith("transcription.failed") for k in kinds),
        "latency": latency,
        "speakers": len({s["speaker"] for s in segments}),
        "named": named,
        "others_named": sum(n in KNOWN.values() for n in others) / len(others) if others else 0.0,
        "text": " ".join(s["text"] for s in sorted(segments, key=lambda s: s["start"])),
    }


def _job(cluster: Cluster, path: Path, box: dict) -> None:
    box["run"] = cluster.run_job(path, verbose=False)


def p(values: list[float], q: float) -> float:
    return float(np.percentile(values, q)) if values else float("nan")


def main() -> int:
    args = parse_args()
    headers = [
        "run",
        "turns",
        "completed",
        "failed",
        "latency p50 s",
        "latency p95 s",
        "speakers",
        "Allison named",
        "Carlo named",
        "others named",
        "WER vs job",
    ]
    crowd_headers = [
        "run",
        "turns",
        "completed",
        "latency p50 s",
        "latency p95 s",
        "latency max s",
        "job",
        "job s",
    ]
    rows, crowd_rows = [], []
    with workspace() as tmp:
        settings = bench_settings(tmp / "data", args)
        with Cluster(settings, args.port, ray_cpus(args)) as cluster:
            cluster.deploy(**default_deploy())
            url = f"http://127.0.0.1:{args.port}".replace("http", "ws")
            minutes = args.seconds / 60
            for run in range(args.runs):
                rec = cached_meeting(VOICES, minutes, seed=400 + run)
                wav = tmp / f"meeting{run}.wav"
                sf.write(wav, rec.audio, 16000, subtype="PCM_16")
                job = cluster.run_job(wav, verbose=False)
                out: dict = {}
                log(f"run {run + 1}: one session")
                session(url, rec, out)
                m = measures(out)
                job_text = " ".join(s["text"] for s in job.result["segments"])
                rows.append(
                    [
                        run + 1,
                        m["committed"],
                        m["completed"],
                        m["failed"],
                        statistics.median(m["latency"]),
                        p(m["latency"], 95),
                        m["speakers"],
                        m["named"]["Allison"],
                        m["named"]["Carlo"],
                        m["others_named"],
                        wer(job_text, m["text"]),
                    ]
                )
                log(f"one session: {dict(zip(headers, rows[-1], strict=True))}")
                log(f"run {run + 1}: {args.sessions} sessions beside a batch job")
                long = tmp / f"long{run}.wav"
                sf.write(
                    long,
                    cached_meeting(VOICES, 2 * minutes, seed=500 + run).audio,
                    16000,
                    subtype="PCM_16",
                )
                job_box: dict = {}
                job_thread = threading.Thread(target=_job, args=(cluster, long, job_box))
                job_thread.start()
                outs = [{} for _ in range(args.sessions)]
                recs = [
                    cached_meeting(VOICES, minutes, seed=600 + 10 * run + k)
                    for k in range(args.sessions)
                ]
                threads = [
                    threading.Thread(target=session, args=(url, r, o))
                    for r, o in zip(recs, outs, strict=True)
                ]
                for t in threads:
                    t.start()
                for t in threads:
                    t.join()
                job_thread.join()
                ms = [measures(o) for o in outs]
                lat = [x for m in ms for x in m["latency"]]
                crowd_rows.append(
                    [
                        run + 1,
                        sum(m["committed"] for m in ms),
                        sum(m["completed"] for m in ms),
                        statistics.median(lat),
                        p(lat, 95),
                        max(lat),
                        job_box["run"].status,
                        job_box["run"].wall_s,
                    ]
                )
                log(f"crowd: {dict(zip(crowd_headers, crowd_rows[-1], strict=True))}")
    summary = []
    for col, name in (
        (4, "one session: latency p50"),
        (5, "one session: latency p95"),
        (7, "Allison named"),
        (8, "Carlo named"),
        (10, "WER vs job"),
    ):
        values = [r[col] for r in rows]
        summary.append([name, statistics.median(values), f"{min(values):.3f}-{max(values):.3f}"])
    for col, name in ((3, "crowd: latency p50"), (4, "crowd: latency p95")):
        values = [r[col] for r in crowd_rows]
        summary.append([name, statistics.median(values), f"{min(values):.3f}-{max(values):.3f}"])
    tabs = [
        table(f"One session, {args.seconds:.0f} s of 4 real voices at real time", headers, rows, 3),
        table(f"{args.sessions} sessions beside a batch job", crowd_headers, crowd_rows, 3),
        table(f"Median of {args.runs} runs", ["measure", "median", "spread"], summary, 3),
    ]
    write_json(args.json, args, tabs)
    return 0


if __name__ == "__main__":
    sys.exit(main())
