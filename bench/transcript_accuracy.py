"""Accuracy: the chunked, stitched cluster result vs the same models on the whole file.

    .venv/bin/python bench/transcript_accuracy.py --minutes 10 [--estimate-speakers] [--json PATH]

Recordings: a synthetic three-voice meeting of about --minutes (tests.synth: exact text and
turns), and the pyannote sample (sample.wav, .rttm, .stm inside pyannote.audio; 30 s, two
speakers). Systems:
- cluster: POST /v1/jobs (diarize on), the stitched result;
- unchunked: the replicas' engines in this process on the whole file in one call
  (`WhisperBatchTranscriber.transcribe_many` + the diarizer), stitched as one segment;
- sequential: faster-whisper `WhisperModel.transcribe(temperature=0, vad_filter=True)`.
WER uses jiwer on text normalised by tests/conftest.normalize_text. DER is
pyannote.metrics' DiarizationErrorRate (collar 0.25 s) of the result's `turns`. cpWER:
every reference speaker's words against those of the hypothesis speaker matched to it
(one-to-one, fewest errors; unmatched speakers count in full), over all reference words.
By default jobs get the true speaker count (`num_speakers`); --estimate-speakers omits it.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.cluster import Cluster
from bench.common import (
    add_common_args,
    bench_settings,
    build_recording,
    deployment_options,
    load_core,
    log,
    make_parser,
    ratio,
    ray_cpus,
    table,
    workspace,
    write_json,
)
from deployments.core.schemas import SAMPLE_RATE, DiarizeOptions, TranscribeOptions
from tests.conftest import load_audio, normalize_text, pyannote_sample_dir, wer
from tests.synth import write_wav

Turn = tuple[float, float, str]


@dataclass
class Case:
    """One recording with its reference: turns (DER) and (speaker, text) in order (WER)."""

    name: str
    path: Path
    turns: list[Turn]
    texts: list[tuple[str, str]]

    @property
    def speakers(self) -> int:
        return len({spk for _, _, spk in self.turns})


def meeting_case(minutes: float, tmp: Path) -> Case:
    rec = build_recording(minutes)
    path = write_wav(rec.audio, tmp / "meeting.wav")
    texts = [(spk, text) for (_, _, spk), text in zip(rec.turns, rec.texts, strict=True)]
    return Case(f"synthetic meeting {rec.duration / 60:.1f} min", path, rec.turns, texts)


def sample_case() -> Case:
    folder = pyannote_sample_dir()
    turns = []
    for line in (folder / "sample.rttm").read_text().splitlines():
        f = line.split()
        turns.append((float(f[3]), float(f[3]) + float(f[4]), f[7]))
    rows = [line.split(maxsplit=5) for line in (folder / "sample.stm").read_text().splitlines()]
    texts = [(f[2], f[5]) for f in sorted(rows, key=lambda f: float(f[3]))]
    return Case("pyannote sample 0.5 min", folder / "sample.wav", turns, texts)


def errors(reference: str, hypothesis: str) -> int:
    import jiwer

    ref, hyp = normalize_text(reference), normalize_text(hypothesis)
    if not ref or not hyp:
        return len(ref.split()) + len(hyp.split())
    out = jiwer.process_words(ref, hyp)
    return out.substitutions + out.deletions + out.insertions


def cpwer(reference: dict[str, str], hypothesis: dict[str, str]) -> float:
    """Concatenated-permutation WER over the best one-to-one speaker matching."""
    from scipy.optimize import linear_sum_assignment

    refs, hyps = list(reference.values()), list(hypothesis.values())
    n = max(len(refs), len(hyps))
    refs, hyps = refs + [""] * (n - len(refs)), hyps + [""] * (n - len(hyps))
    cost = np.array([[errors(r, h) for h in hyps] for r in refs])
    rows, cols = linear_sum_assignment(cost)
    return float(cost[rows, cols].sum()) / sum(len(normalize_text(r).split()) for r in refs)


def der(reference: list[Turn], hypothesis: list[Turn], duration: float) -> float:
    from pyannote.core import Annotation, Segment, Timeline
    from pyannote.metrics.diarization import DiarizationErrorRate

    def annotation(turns: list[Turn]) -> Annotation:
        ann = Annotation()
        for start, end, speaker in turns:
            ann[Segment(start, end)] = speaker
        return ann

    metric = DiarizationErrorRate(collar=0.25)
    uem = Timeline([Segment(0, duration)])
    return float(metric(annotation(reference), annotation(hypothesis), uem=uem))


def by_speaker(pairs) -> dict[str, str]:
    out: dict[str, list[str]] = {}
    for speaker, text in pairs:
        out.setdefault(str(speaker), []).append(text)
    return {speaker: " ".join(texts) for speaker, texts in out.items()}


def scores(case: Case, result: dict, duration: float) -> dict:
    """WER, DER and cpWER of a job-shaped result against the case's reference."""
    words = [(w["speaker"], w["text"]) for s in result["segments"] for w in s["words"]]
    turns = [(t["start"], t["end"], t["speaker"]) for t in result["turns"]]
    return {
        "text": " ".join(s["text"] for s in result["segments"]),
        "speakers": len(result["speakers"]),
        "der": der(case.turns, turns, duration),
        "cpwer": cpwer(by_speaker(case.texts), by_speaker(words)),
    }


def in_process(settings, case: Case, args: argparse.Namespace, core, diarizer) -> dict:
    """Unchunked (stitched as one segment) and sequential results for one case."""
    from deployments.core.splitter import SegmentPlan
    from jobs.stitching.stitch import SegmentOutcome, stitch

    audio = load_audio(case.path)
    duration = len(audio) / SAMPLE_RATE
    dopts = DiarizeOptions(num_speakers=None if args.estimate_speakers else case.speakers)
    options = TranscribeOptions(language=args.language, word_timestamps=True)
    outcome = SegmentOutcome(
        plan=SegmentPlan(index=0, start=0, end=len(audio), forced=False),
        transcription=core.transcribe_many([audio], [options])[0],
        diarization=diarizer(audio, dopts),
    )
    whole = stitch([outcome], duration, dopts).model_dump()
    segments, _ = core.model.transcribe(
        audio, language=args.language, temperature=0.0, vad_filter=True, beam_size=5
    )
    return {
        "duration": duration,
        "unchunked": scores(case, whole, duration),
        "sequential": " ".join(s.text.strip() for s in segments),
    }


def parse_args() -> argparse.Namespace:
    parser = make_parser(__doc__)
    parser.add_argument("--minutes", type=float, default=10.0, help="synthetic meeting length")
    parser.add_argument("--estimate-speakers", action="store_true", help="omit num_speakers")
    add_common_args(parser)
    return parser.parse_args()


def main() -> int:
    from deployments.replicas.diarizer import load_diarizer

    args = parse_args()
    wer_rows, der_rows = [], []
    with workspace() as tmp:
        settings = bench_settings(tmp / "data", args)
        cases = [meeting_case(args.minutes, tmp), sample_case()]
        core = load_core(settings, args.threads)
        diarizer = load_diarizer(
            settings.diarization_model,
            settings.resolved_models_dir,
            settings.allow_downloads,
            settings.hf_token.get_secret_value() if settings.hf_token else None,
            settings.device,
            args.threads,
        )
        base = {}
        for case in cases:
            log(f"{case.name}: in-process")
            base[case.name] = in_process(settings, case, args, core, diarizer)
        del core, diarizer
        with Cluster(settings, args.port, ray_cpus(args)) as cluster:
            cluster.deploy(**deployment_options(args))
            for case in cases:
                log(f"{case.name}: cluster")
                form = {} if args.estimate_speakers else {"num_speakers": case.speakers}
                run = cluster.run_job(case.path, diarize=True, language=args.language, **form)
                if run.status != "completed":
                    raise RuntimeError(f"job {run.status}: {run.snapshot.get('error')}")
                b = base[case.name]
                ours, whole = scores(case, run.result, b["duration"]), b["unchunked"]
                reference = " ".join(text for _, text in case.texts)
                unchunked_wer = wer(reference, whole["text"])
                for name, text in (
                    (f"cluster ({run.snapshot['segments_total']} segments)", ours["text"]),
                    ("unchunked, same engine", whole["text"]),
                    ("faster-whisper sequential T=0", b["sequential"]),
                ):
                    w = wer(reference, text)
                    vs = wer(whole["text"], text)
                    wer_rows.append([case.name, name, w, vs, ratio(w, unchunked_wer)])
                for name, s in (("cluster", ours), ("unchunked", whole)):
                    der_rows.append(
                        [
                            case.name,
                            name,
                            f"{s['speakers']}/{case.speakers}",
                            s["der"],
                            s["cpwer"],
                            ratio(s["der"], whole["der"]),
                            ratio(s["cpwer"], whole["cpwer"]),
                        ]
                    )
    tables = [
        table(
            f"Transcript WER ({settings.whisper_model})",
            ["recording", "system", "WER", "WER vs unchunked", "WER ÷ unchunked"],
            wer_rows,
            digits=3,
        ),
        table(
            "Diarization (DER collar 0.25 s; cpWER)",
            [
                "recording",
                "system",
                "speakers",
                "DER",
                "cpWER",
                "DER ÷ unchunked",
                "cpWER ÷ unchunked",
            ],
            der_rows,
            digits=3,
        ),
    ]
    write_json(args.json, args, tables)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
