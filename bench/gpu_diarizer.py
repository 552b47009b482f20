"""The bundled diarizer's speed on a GPU, per replica process and in aggregate (issue 23).

On a bare GPU host, from a bundle (bench/gpu_bundle.py builds it; bench/gpu_run.sh runs it):

    bash build/gpu-bundle/run.sh OUT_DIR [--processes 1 2 4 8] [--batch 8] [--rounds 3]

Here, in the project venv (CPU, or a local GPU), the same measurements:

    .venv/bin/python bench/gpu_diarizer.py --bundle build/gpu-bundle --out OUT_DIR --device cpu

Then score what a run wrote (pyannote.metrics, collar 0, overlap scored; here only):

    .venv/bin/python bench/gpu_diarizer.py --bundle build/gpu-bundle --score OUT_DIR

Measured on the bundle's real-speech clip, each figure the median of --rounds with the spread:
1. the models alone on the whole clip in one call;
2. one replica-like process with --threads CPU threads on job-sized segments
   (--segment-s), one segment per call and --batch segments per call, with where the time
   goes (model forward passes vs everything else);
3. 1, 2, 4, 8 such processes sharing the device: per-process and aggregate x realtime.
DER: the whole clip's turns are written as RTTM for --score (segments alone are not linked
across the clip; the job's stitching does that and needs the server install).
Only torch, numpy, pydantic and the bundle's code are imported (no pyannote, no torchaudio).
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import statistics
import sys
import time
import wave
from pathlib import Path

import numpy as np

SR = 16_000


def read_wav(path: Path) -> np.ndarray:
    with wave.open(str(path)) as w:
        assert w.getframerate() == SR and w.getnchannels() == 1 and w.getsampwidth() == 2
        pcm = np.frombuffer(w.readframes(w.getnframes()), dtype="<i2")
    return pcm.astype(np.float32) / 32768.0


def load(bundle: Path, device: str, threads: int):
    import torch

    torch.set_num_threads(threads)
    from deployments.models.diarization.pipeline import SpeakerDiarizer

    return SpeakerDiarizer(
        bundle / "segmentation-3.0.pt", bundle / "campplus.pt", device=device, num_threads=threads
    )


def segments(audio: np.ndarray, segment_s: float) -> list[np.ndarray]:
    step = int(segment_s * SR)
    return [audio[i : i + step] for i in range(0, len(audio), step) if len(audio) - i >= SR]


def run_segments(diarizer, parts: list[np.ndarray], batch: int) -> list:
    out = []
    for b in range(0, len(parts), batch):
        out += [diarizer.finish(a) for a in diarizer.analyse_many(parts[b : b + batch])]
    return out


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        import torch

        torch.cuda.synchronize()


class _Stages:
    """Adds each model's forward time (device synchronised) to a named stage."""

    def __init__(self, diarizer, device: str) -> None:
        self.spent = {"segmentation forward": 0.0, "CAM++ forward": 0.0}
        for name, model in (
            ("segmentation forward", diarizer.segmenter.model),
            ("CAM++ forward", diarizer.embedder.model),
        ):
            model.forward = self._wrap(name, model.forward, device)

    def _wrap(self, name, fn, device):
        def timed(*args, **kwargs):
            _sync(device)
            t0 = time.perf_counter()
            out = fn(*args, **kwargs)
            _sync(device)
            self.spent[name] += time.perf_counter() - t0
            return out

        return timed


def _worker(bundle, device, threads, segment_s, batch, rounds, barrier, queue) -> None:
    diarizer = load(Path(bundle), device, threads)
    parts = segments(read_wav(Path(bundle) / "clip.wav"), segment_s)
    run_segments(diarizer, parts[:2], batch)  # warm up
    barrier.wait()
    t0 = time.perf_counter()
    for _ in range(rounds):
        run_segments(diarizer, parts, batch)
    queue.put((time.perf_counter() - t0, rounds * sum(len(p) for p in parts) / SR))


def processes(args, n: int) -> dict:
    ctx = mp.get_context("spawn")
    barrier, queue = ctx.Barrier(n), ctx.Queue()
    procs = [
        ctx.Process(
            target=_worker,
            args=(
                str(args.bundle),
                args.device,
                args.threads,
                args.segment_s,
                args.batch,
                args.rounds,
                barrier,
                queue,
            ),
        )
        for _ in range(n)
    ]
    for p in procs:
        p.start()
    results = [queue.get(timeout=1800) for _ in procs]
    for p in procs:
        p.join()
    per = [audio / wall for wall, audio in results]
    return {
        "processes": n,
        "per_process_x": statistics.median(per),
        "per_process_spread": max(per) - min(per),
        "aggregate_x": sum(audio for _, audio in results) / max(w for w, _ in results),
    }


def compare_half(args, diarizer, audio: np.ndarray) -> dict:
    """CAM++ in float16 against float32 on the same pieces of the clip (serve_config.gpu.yaml's
    diarization_half): the lowest cosine between the two embeddings of a piece, the speakers
    found, and the RTTM for --score."""
    from deployments.models.diarization.embedding import SpeakerEmbedder

    full = diarizer.analyse(audio)
    fp32 = diarizer.embedder
    diarizer.embedder = SpeakerEmbedder(args.bundle / "campplus.pt", args.device, half=True)
    try:
        half = diarizer.analyse(audio)
        result = diarizer.finish(half)
    finally:
        diarizer.embedder = fp32
    (args.out / "whole_half.rttm").write_text(rttm(result.turns, "clip"))
    cosine = np.sum(full.vectors * half.vectors, axis=1)
    return {"min_cosine": float(cosine.min()), "speakers": len(result.speakers)}


def rttm(turns, uri: str) -> str:
    return "".join(
        f"SPEAKER {uri} 1 {t.start:.3f} {t.end - t.start:.3f} <NA> <NA> {t.speaker} <NA> <NA>\n"
        for t in turns
    )


def measure(args) -> dict:
    import torch

    audio = read_wav(args.bundle / "clip.wav")
    audio_s = len(audio) / SR
    diarizer = load(args.bundle, args.device, args.threads)
    report: dict = {
        "device": args.device,
        "device_name": torch.cuda.get_device_name() if args.device.startswith("cuda") else "cpu",
        "torch": torch.__version__,
        "clip_s": audio_s,
        "threads": args.threads,
        "segment_s": args.segment_s,
        "code": str(Path(sys.modules[type(diarizer).__module__].__file__).parents[3]),
    }
    whole = diarizer(audio)  # warm up, and the whole-clip result
    (args.out / "whole.rttm").write_text(rttm(whole.turns, "clip"))
    times = []
    for _ in range(args.rounds):
        _sync(args.device)
        t0 = time.perf_counter()
        diarizer.analyse(audio)
        _sync(args.device)
        times.append(time.perf_counter() - t0)
    report["models_whole_clip_x"] = audio_s / statistics.median(times)
    report["whole_clip_speakers"] = len(whole.speakers)
    report["half"] = compare_half(args, diarizer, audio)

    parts = segments(audio, args.segment_s)
    stages = _Stages(diarizer, args.device)
    for batch in sorted({1, args.batch}):
        walls, spent = [], {k: [] for k in stages.spent}
        for _ in range(args.rounds):
            stages.spent = dict.fromkeys(stages.spent, 0.0)
            t0 = time.perf_counter()
            run_segments(diarizer, parts, batch)
            walls.append(time.perf_counter() - t0)
            for k, v in stages.spent.items():
                spent[k].append(v)
        n = len(parts)
        report[f"one_process_batch_{batch}"] = {
            "x_realtime": audio_s / statistics.median(walls),
            "spread_x": audio_s / min(walls) - audio_s / max(walls),
            "s_per_segment": statistics.median(walls) / n,
            **{f"{k} s per segment": statistics.median(v) / n for k, v in spent.items()},
        }
    del diarizer
    report["processes"] = [processes(args, n) for n in args.processes]
    return report


def print_report(report: dict) -> None:
    print(
        f"### Diarizer on {report['device_name']} (torch {report['torch']}), "
        f"{report['clip_s']:.0f} s real-speech clip, {report['threads']} CPU threads/process\n"
    )
    print(f"- models alone, whole clip in one call: {report['models_whole_clip_x']:.0f}x realtime")
    half = report["half"]
    print(
        f"- CAM++ float16 vs float32: lowest cosine {half['min_cosine']:.4f}, "
        f"{half['speakers']} speakers (float32: {report['whole_clip_speakers']})"
    )
    for key in [k for k in report if k.startswith("one_process_batch_")]:
        r = report[key]
        where = ", ".join(f"{k} {v:.3f}" for k, v in r.items() if k.endswith("per segment"))
        print(
            f"- one process, {report['segment_s']:g} s segments, {key.rsplit('_', 1)[1]} per "
            f"call: {r['x_realtime']:.0f}x (spread {r['spread_x']:.0f}); {where}"
        )
    print("\n| processes | per process x | spread | aggregate x |\n|---|---|---|---|")
    for p in report["processes"]:
        print(
            f"| {p['processes']} | {p['per_process_x']:.0f} | {p['per_process_spread']:.0f} | "
            f"{p['aggregate_x']:.0f} |"
        )


def score(bundle: Path, out: Path) -> None:
    """DER of a run's whole-clip RTTM against the clip's reference (pyannote.metrics)."""
    from pyannote.database.util import load_rttm
    from pyannote.metrics.diarization import DiarizationErrorRate

    ref = load_rttm(str(bundle / "clip.rttm"))["clip"]
    for name in ("whole", "whole_half"):
        if not (out / f"{name}.rttm").exists():
            continue
        hyp = load_rttm(str(out / f"{name}.rttm"))["clip"]
        der = DiarizationErrorRate(collar=0.0)(ref, hyp, detailed=True)
        print(
            f"{name.replace('_', ' ')} clip: DER {der['diarization error rate']:.3f}, speakers "
            f"{len(hyp.labels())}/{len(ref.labels())}"
        )


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--bundle", type=Path, required=True)
    parser.add_argument("--out", type=Path)
    parser.add_argument("--score", type=Path, metavar="RUN_DIR")
    parser.add_argument("--device", default=None, help="cuda if available, else cpu")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--segment-s", type=float, default=30.0)
    parser.add_argument("--batch", type=int, default=8, help="segments per call")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--processes", type=int, nargs="*", default=[1, 2, 4, 8])
    args = parser.parse_args()
    if args.score:
        score(args.bundle, args.score)
        return 0
    import torch

    args.device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    args.out.mkdir(parents=True, exist_ok=True)
    report = measure(args)
    (args.out / "results.json").write_text(json.dumps(report, indent=2))
    print_report(report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
