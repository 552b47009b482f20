"""Throughput on long real speech: the service as users run it vs faster-whisper in-process.

    .venv/bin/python bench/throughput.py --minutes 5 20 60 [--runs 3] [--diarize] [--json PATH]
    .venv/bin/python bench/throughput.py --minutes 23 --job-model tiny.en   # the extra model
    .venv/bin/python bench/throughput.py --minutes 20 --diarize both       # cost of diarizing

For each length, real speech (Debian's Allison prompts, bench.common.real_speech) is
transcribed by, side by side in one run, on the same cores and model:
- faster-whisper `WhisperModel.transcribe(vad_filter=True)`, sequential, in this process;
- faster-whisper `BatchedInferencePipeline.transcribe(batch_size=8)` (VAD on), in process;
- the compute floor: the time CTranslate2's encode, generate and align calls alone take on
  the same speech windows (VAD run beforehand, untimed; no I/O; features untimed too);
- the service deployed from serve_config.yaml (its deployments, replicas and autoscaling as
  a user gets them with `serve run serve_config.yaml`), through POST /v1/jobs; with
  `--diarize both`, jobs with and without diarization alternate on the same cluster.
Each system runs `--runs` times per length; tables give the median wall time, its spread
(min-max), the realtime factor of the median, WER against the prompts' transcripts, the
median as a multiple of the compute floor, and the service's RT factor over each row's.
Word timestamps are on everywhere (the job default). Baselines run before Ray starts, so an
idle cluster does not share their cores.
"""

from __future__ import annotations

import argparse
import gc
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.cluster import Cluster
from bench.common import (
    DEFAULT_CONFIG,
    add_common_args,
    bench_settings,
    build_recording,
    default_deploy,
    load_whisper,
    log,
    make_parser,
    ray_cpus,
    real_speech,
    table,
    workspace,
    write_json,
)
from deployments.core.schemas import SAMPLE_RATE
from tests.conftest import load_audio, wer
from tests.synth import write_wav


def parse_args() -> argparse.Namespace:
    parser = make_parser(__doc__)
    parser.add_argument(
        "--minutes", type=float, nargs="+", default=[5.0], help="recording lengths (minutes)"
    )
    parser.add_argument("--runs", type=int, default=3, help="runs per system and length")
    parser.add_argument(
        "--diarize",
        nargs="?",
        const="yes",
        default="no",
        choices=["no", "yes", "both"],
        help="service jobs diarize (yes), do not (no), or alternate (both: the diarized "
        "job's wall time over the plain one's is the cost of diarizing)",
    )
    parser.add_argument("--batch-size", type=int, default=8, help="batched baseline's batch")
    parser.add_argument(
        "--no-sequential",
        action="store_true",
        help="skip the sequential faster-whisper baseline (the slowest system; saves time)",
    )
    parser.add_argument("--config", type=Path, default=DEFAULT_CONFIG, help="Serve config deployed")
    parser.add_argument(
        "--synthetic", action="store_true", help="espeak meetings instead of real speech"
    )
    parser.add_argument(
        "--job-model",
        help="jobs ask for this served model (e.g. tiny.en, an extra model of the config) "
        "and the baselines run it; unset: the config's default model",
    )
    add_common_args(parser)
    return parser.parse_args()


class _TimedCT2:
    """Forwards to the CTranslate2 model and adds up the seconds its compute calls take."""

    CALLS = ("encode", "generate", "align", "detect_language")

    def __init__(self, model) -> None:
        self._model, self.seconds = model, 0.0

    def __getattr__(self, name):
        attr = getattr(self._model, name)
        if name not in self.CALLS:
            return attr

        def timed_call(*args, **kwargs):
            t0 = time.perf_counter()
            try:
                return attr(*args, **kwargs)
            finally:
                self.seconds += time.perf_counter() - t0

        return timed_call


def run_baselines(model, audios: list, args: argparse.Namespace) -> list[dict]:
    """Per recording: {system: [(wall s, text), ...]} for the in-process systems."""
    from faster_whisper import BatchedInferencePipeline

    from deployments.models.whisper_batch import speech_windows

    batched = BatchedInferencePipeline(model)
    opts = {"language": args.language, "word_timestamps": True}

    def text(segments) -> str:
        return " ".join(s.text for s in segments)  # decoding happens while iterating

    def sequential(x):
        t0 = time.perf_counter()
        out = text(model.transcribe(x, vad_filter=True, **opts)[0])
        return time.perf_counter() - t0, out

    def pipeline(x):
        t0 = time.perf_counter()
        out = text(batched.transcribe(x, batch_size=args.batch_size, vad_filter=True, **opts)[0])
        return time.perf_counter() - t0, out

    def floor(x):
        clips = [
            {"start": s / SAMPLE_RATE, "end": e / SAMPLE_RATE} for s, e in speech_windows(x, True)
        ]
        timer, real = _TimedCT2(model.model), model.model
        model.model = timer
        try:
            segments, _ = batched.transcribe(
                x,
                clip_timestamps=clips,
                vad_filter=False,
                batch_size=args.batch_size,
                without_timestamps=True,
                **opts,
            )
            out = text(segments)
        finally:
            model.model = real
        return timer.seconds, out

    systems = {
        **({} if args.no_sequential else {"faster-whisper sequential": sequential}),
        f"faster-whisper batched (bs={args.batch_size})": pipeline,
        "compute floor (CTranslate2 only)": floor,
    }
    warm = load_audio_clip()
    for fn in systems.values():
        fn(warm)
    out = []
    for audio in audios:
        runs: dict[str, list] = {name: [] for name in systems}
        for run in range(args.runs):
            for name, fn in systems.items():
                wall, hyp = fn(audio)
                runs[name].append((wall, hyp))
                log(f"{len(audio) / SAMPLE_RATE:.0f} s, run {run + 1}, {name}: {wall:.1f} s")
        out.append(runs)
    return out


def load_audio_clip():
    return real_speech(0.5, seed=99).audio


def main() -> int:
    args = parse_args()
    rows: list[list] = []
    build = build_recording if args.synthetic else real_speech
    with workspace() as tmp:
        settings = bench_settings(tmp / "data", args)
        recs = [build(m) for m in args.minutes]
        paths = [
            write_wav(r.audio, tmp / f"speech-{m:g}.wav")
            for r, m in zip(recs, args.minutes, strict=True)
        ]
        references = [r.text for r in recs]
        del recs
        audios = [load_audio(path) for path in paths]  # what the service will decode too
        durations = [len(audio) / SAMPLE_RATE for audio in audios]
        model = args.job_model or settings.whisper_model
        baseline_model = load_whisper(
            settings.model_copy(update={"whisper_model": model}), args.threads
        )
        baselines = run_baselines(baseline_model, audios, args)
        del baseline_model
        del audios
        gc.collect()  # the baseline model and audio go before the cluster starts
        plain = f"service ({args.config.name})"
        modes = {"no": [False], "yes": [True], "both": [False, True]}[args.diarize]
        services = {(plain + " + diarization" if d else plain): d for d in modes}
        service = list(services)[-1]  # the speed column's reference
        form = {"model": args.job_model} if args.job_model else {}
        with Cluster(settings, args.port, ray_cpus(args)) as cluster:
            cluster.deploy(**default_deploy(args.config))
            cluster.warm_up(tmp)
            for path, base in zip(paths, baselines, strict=True):
                for name in services:
                    base[name] = []
                for run in range(args.runs):
                    for name, diarize in services.items():
                        job = cluster.run_job(path, diarize=diarize, language=args.language, **form)
                        if job.status != "completed":
                            raise RuntimeError(f"job {job.status}: {job.snapshot.get('error')}")
                        hyp = " ".join(s["text"] for s in job.result["segments"])
                        base[name].append((job.wall_s, hyp))
                        log(f"{path.name}, run {run + 1}, {name}: {job.wall_s:.1f} s")
        for minutes, duration, ref, runs in zip(
            args.minutes, durations, references, baselines, strict=True
        ):
            medians = {name: statistics.median(w for w, _ in r) for name, r in runs.items()}
            floor = medians["compute floor (CTranslate2 only)"]
            if len(services) == 2:
                plain_s, diarized_s = (medians[name] for name in services)
                log(f"{minutes:g} min: diarized job / plain job = {diarized_s / plain_s:.2f}")
            for name, r in runs.items():
                walls = [w for w, _ in r]
                rows.append(
                    [
                        f"{minutes:g}",
                        round(duration),
                        name,
                        medians[name],
                        f"{min(walls):.1f}-{max(walls):.1f}",
                        duration / medians[name],
                        statistics.median(wer(ref, hyp) for _, hyp in r),
                        medians[name] / floor,
                        medians[name] / medians[service],
                    ]
                )
    headers = [
        "audio min",
        "audio s",
        "system",
        "wall s (median)",
        "spread",
        "RT factor",
        "WER",
        "× floor",
        "service ÷ this (speed)",
    ]
    source = "synthetic espeak" if args.synthetic else "real speech (Allison prompts)"
    title = (
        f"Throughput on {source} ({args.job_model or settings.whisper_model}, "
        f"{args.threads} baseline threads, "
        f"median of {args.runs} runs)"
    )
    write_json(args.json, args, [table(title, headers, rows)])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
