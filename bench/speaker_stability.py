"""Does the speaker count survive differences nobody can hear?

One meeting of real voices in several copies that sound the same (gain, resamplers, telephone
codecs), each diarized as a default job; the speakers found and the DER must not move.

    .venv/bin/python bench/speaker_stability.py                    # held-out voices, the cluster
    .venv/bin/python bench/speaker_stability.py --tune             # the tune voices' meeting
    .venv/bin/python bench/speaker_stability.py --engine in-process --cache /tmp/dz \\
        --param threshold=0.5                                      # fast, for tuning

The held-out meeting (ru, fr_armelle, it_menardi and es_mx: Allison's Spanish prompts, which
no choice looked at) is never tuned on; choose on --tune (en_allison, fr_june, it_carlo,
es_co). DER: pyannote.metrics, collar 0, overlap scored. The cluster engine also runs the
first copy a second time: a file must give the same speakers every time.
"""

from __future__ import annotations

import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import (
    add_common_args,
    bench_settings,
    deployment_options,
    log,
    make_parser,
    ray_cpus,
    table,
    workspace,
    write_json,
)
from bench.inprocess import InProcess, parse_params
from tests.audiocopies import copies
from tests.realsets import DerTally, RealCase
from tests.realvoices import HELDOUT_VOICES, TUNE_VOICES

HELDOUT_MEETING = [*HELDOUT_VOICES, "es_mx"]


def evaluate(engine, cases: list[RealCase], repeat: bool) -> tuple[list[list], list[float]]:
    rows, ders = [], []
    runs = [*cases, cases[0]] if repeat else cases
    for n, case in enumerate(runs):
        label = case.name if n < len(cases) else f"{case.name} (second run)"
        log(f"diarizing: {label}")
        turns, _ = engine.turns(case, None)
        tally = DerTally()
        tally.add(case, turns)
        p = tally.parts()
        found, true = tally.counts[0]
        ders.append(p["der"])
        rows.append(
            [label, f"{found}/{true}", p["der"], p["miss"], p["false_alarm"], p["confusion"]]
        )
    return rows, ders


def parse_args():
    parser = make_parser(__doc__)
    parser.add_argument("--engine", choices=("cluster", "in-process"), default="cluster")
    parser.add_argument("--tune", action="store_true", help="the tune voices' meeting")
    parser.add_argument("--minutes", type=float, default=12.0)
    parser.add_argument("--seed", type=int, default=31)
    parser.add_argument("--param", action="append", default=[], help="ClusterParams NAME=VALUE")
    parser.add_argument("--cache", type=Path, help="in-process: keep the model work here")
    add_common_args(parser)
    return parser.parse_args()


def main() -> int:
    args = parse_args()
    voices = TUNE_VOICES if args.tune else HELDOUT_MEETING
    with workspace() as tmp:
        settings = bench_settings(tmp / "data", args)
        cases = copies(voices, args.minutes, args.seed, tmp)
        if args.engine == "in-process":
            engine = InProcess(settings, args.threads, parse_params(args.param), args.cache)
            rows, ders = evaluate(engine, cases, repeat=False)
        else:
            from bench.accuracy import OnCluster
            from bench.cluster import Cluster

            with Cluster(settings, args.port, ray_cpus(args)) as cluster:
                cluster.deploy(**deployment_options(args))
                cluster.warm_up(tmp)
                rows, ders = evaluate(OnCluster(cluster), cases, repeat=True)
    counts = {r[1] for r in rows}
    spread = max(ders) - min(ders)
    median = statistics.median(ders)
    rows.append(["all copies", " ".join(sorted(counts)), median, "", "", f"spread {spread:.3f}"])
    title = (
        f"Speakers and DER across copies of one {args.minutes:g} min meeting "
        f"({', '.join(voices)}; {args.engine})"
    )
    headers = ["copy", "found/true", "DER", "miss", "false alarm", "confusion"]
    write_json(args.json, args, [table(title, headers, rows, digits=3)])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
