"""Diarization accuracy on real speech: DER per set, speakers found vs true, with and without
speaker-count hints.

    .venv/bin/python bench/accuracy.py                      # the cluster, default settings
    .venv/bin/python bench/accuracy.py --long               # + 60 min of held-out voices
    .venv/bin/python bench/accuracy.py --engine in-process --tune --param threshold=0.45
    .venv/bin/python bench/accuracy.py --step 0.1           # pyannote 3.1's slower step

Sets (tests/realsets.py): AMI trn00-04 (tune) and trn05-09 (held out); the pyannote call;
20 min meetings of real studio voices, tune voices and held-out voices (tests/realvoices.py,
5 % of turns overlapped); with --long, 60 min of held-out voices; the espeak 3-voice meeting
(tests/synth.py) for reference. --tune runs only the tune sets.

Engines:
- cluster: POST /v1/jobs on a private local Ray cluster with the default settings, as a user
  runs it (segments, replicas, stitching);
- in-process: the same diarizer on the job's ~30 s segments plus the job's stitching, without
  Ray: fast, for tuning the clustering with --param NAME=VALUE (ClusterParams fields).

DER: pyannote.metrics, collar 0, overlapped speech scored, accumulated over a set's files;
miss, false alarm and confusion apart; DER at a 0.25 s collar for reference.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import (
    add_common_args,
    bench_settings,
    build_recording,
    deployment_options,
    log,
    make_parser,
    ray_cpus,
    table,
    workspace,
    write_json,
)
from bench.inprocess import InProcess, parse_params
from tests.realsets import (
    AMI_HELDOUT,
    AMI_TUNE,
    DerTally,
    RealCase,
    ami_cases,
    sample_case,
    voices_case,
)
from tests.realvoices import HELDOUT_VOICES, TUNE_VOICES


def synthetic_case(folder: Path) -> RealCase:
    from pyannote.core import Annotation, Segment, Timeline

    from tests.synth import write_wav

    rec = build_recording(10)
    ref = Annotation()
    for i, (start, end, who) in enumerate(rec.turns):
        ref[Segment(start, end), i] = who
    uem = Timeline([Segment(0, len(rec.audio) / 16000)])
    return RealCase("espeak 3 voices 10 min", write_wav(rec.audio, folder / "synth.wav"), ref, uem)


def sets(args: argparse.Namespace, folder: Path) -> dict[str, list[RealCase]]:
    out = {
        "AMI trn00-04 (tune)": ami_cases(AMI_TUNE),
        "4 tune voices, 20 min (tune)": [voices_case(TUNE_VOICES, 20, 21, 0.05, folder)],
    }
    if args.tune:
        return out
    out |= {
        "AMI trn05-09 (held out)": ami_cases(AMI_HELDOUT),
        "pyannote call (held out)": [sample_case()],
        "3 held-out voices, 20 min": [voices_case(HELDOUT_VOICES, 20, 12, 0.05, folder)],
    }
    if args.long:
        out["3 held-out voices, 60 min"] = [voices_case(HELDOUT_VOICES, 60, 13, 0.05, folder)]
    out["espeak 3 voices (reference only)"] = [synthetic_case(folder)]
    if args.only:
        out = {name: cases for name, cases in out.items() if args.only in name}
    return out


class OnCluster:
    def __init__(self, cluster) -> None:
        self.cluster = cluster

    def turns(self, case: RealCase, hint: int | None) -> tuple[list, float]:
        form = {"num_speakers": hint} if hint else {}
        run = self.cluster.run_job(case.path, verbose=False, diarize=True, **form)
        if run.status != "completed":
            raise RuntimeError(f"{case.name}: job {run.status}: {run.snapshot.get('error')}")
        turns = [(t["start"], t["end"], t["speaker"]) for t in run.result["turns"]]
        return turns, run.wall_s


def evaluate(engine, all_sets: dict[str, list[RealCase]]) -> list[list]:
    import soundfile

    rows = []
    for name, cases in all_sets.items():
        for hinted in (False, True):
            tally, loose = DerTally(), DerTally(collar=0.25)
            audio_s = wall_s = 0.0
            for case in cases:
                log(f"{name}: {case.name}{' with num_speakers' if hinted else ''}")
                turns, seconds = engine.turns(case, case.speakers if hinted else None)
                tally.add(case, turns)
                loose.add(case, turns)
                audio_s += soundfile.info(str(case.path)).duration
                wall_s += seconds
            p = tally.parts()
            rows.append(
                [
                    name,
                    "num_speakers" if hinted else "none",
                    tally.exact_counts(),
                    " ".join(f"{f}/{t}" for f, t in tally.counts) if len(cases) <= 10 else "",
                    p["der"],
                    p["miss"],
                    p["false_alarm"],
                    p["confusion"],
                    loose.der,
                    audio_s / max(wall_s, 1e-9),
                ]
            )
    return rows


def parse_args() -> argparse.Namespace:
    parser = make_parser(__doc__)
    parser.add_argument("--engine", choices=("cluster", "in-process"), default="cluster")
    parser.add_argument("--tune", action="store_true", help="only the tune sets")
    parser.add_argument("--long", action="store_true", help="add 60 min of held-out voices")
    parser.add_argument("--only", help="run only the sets whose name contains this")
    parser.add_argument(
        "--param", action="append", default=[], help="in-process: ClusterParams NAME=VALUE"
    )
    parser.add_argument(
        "--cache",
        type=Path,
        help="in-process: keep each segment's model work here (re-runs cluster only)",
    )
    parser.add_argument(
        "--step",
        type=float,
        help="diarization_step: segmentation hop as a fraction of its 10 s window (unset: 0.2)",
    )
    add_common_args(parser)
    return parser.parse_args()


def main() -> int:
    args = parse_args()
    headers = [
        "set",
        "hint",
        "exact count",
        "found/true",
        "DER",
        "miss",
        "false alarm",
        "confusion",
        "DER collar 0.25",
        "x realtime",
    ]
    with workspace() as tmp:
        settings = bench_settings(tmp / "data", args)
        if args.step:
            settings = settings.model_copy(update={"diarization_step": args.step})
        all_sets = sets(args, tmp)
        if args.engine == "in-process":
            engine = InProcess(settings, args.threads, parse_params(args.param), args.cache)
            rows = evaluate(engine, all_sets)
        else:
            from bench.cluster import Cluster

            with Cluster(settings, args.port, ray_cpus(args)) as cluster:
                cluster.deploy(**deployment_options(args))
                cluster.warm_up(tmp)
                rows = evaluate(OnCluster(cluster), all_sets)
    title = f"Diarization on real speech ({args.engine}; DER collar 0, overlap scored)"
    write_json(args.json, args, [table(title, headers, rows, digits=3)])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
