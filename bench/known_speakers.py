"""Known speakers on real voices: calibrate the match threshold, then report naming rates.

    .venv/bin/python bench/known_speakers.py [--minutes 4] [--meetings 4] [--heldout 3]

In process, as a job does it: a meeting of real voices (Debian's prompt packages,
tests/realvoices.py) is cut into 30 s segments, each diarized by the bundled diarizer, and the
segments' tracks are linked (jobs.stitching.stitch.link_speakers). Voices are enrolled from
2 samples of 4-10 s each, made of prompts the meeting never uses (tests/knownvoices.py).

- Tune (TUNE_VOICES): every tune voice is enrolled; across `--meetings` meetings of three of
  them, each global speaker's similarity to every voiceprint is recorded: genuine when the
  speaker's majority voice is the voiceprint's, impostor otherwise. Printed: the lowest
  genuine and highest impostor similarity, the range a threshold can take.
- Report (HELDOUT_VOICES, never tuned on): ru and fr_armelle enrolled and present,
  it_menardi and es_co present but never enrolled, en_allison enrolled but absent; naming
  rates at jobs.stitching.voiceprints.MATCH_THRESHOLD.
"""

from __future__ import annotations

import sys
from collections import Counter
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import log, make_parser, table, write_json


def _diarizer():
    from deployments.models.diarization.pipeline import SpeakerDiarizer
    from deployments.models.model_store import resolve_bundled_diarization
    from serve_app.settings import Settings

    seg, emb = resolve_bundled_diarization(Settings().resolved_models_dir)
    return SpeakerDiarizer(seg, emb, num_threads=2)


def enroll(diarizer, samples: list[np.ndarray], name: str):
    from deployments.core.schemas import voice_sample
    from jobs.stitching.voiceprints import KnownSpeaker, voiceprint

    voices = [voice_sample(diarizer(s)) for s in samples]
    embedding, _ = voiceprint(voices)
    return KnownSpeaker(id=name, name=name, embedding=embedding)


def run_job(diarizer, rec, known, segment_s: float = 30.0):
    """Diarize 30 s segments and link them, as the job manager does; the Speakers."""
    from deployments.core.schemas import DiarizeOptions
    from deployments.core.splitter import SegmentPlan
    from jobs.stitching.speaker_linking import TrackSet
    from jobs.stitching.stitch import link_speakers

    step = int(segment_s * 16000)
    plans, tracks = [], TrackSet()
    for i, start in enumerate(range(0, len(rec.audio), step)):
        end = min(start + step, len(rec.audio))
        plans.append(SegmentPlan(index=i, start=start, end=end, forced=True))
        tracks.add(diarizer(rec.audio[start:end], DiarizeOptions()))
    return link_speakers(plans, tracks, DiarizeOptions(), known=known)


def majority_voice(rec, turns, name: str) -> str | None:
    heard: Counter[str] = Counter()
    for a, b, who in ((t.start, t.end, t.speaker) for t in turns):
        if who != name:
            continue
        for s, e, v in rec.turns:
            heard[v] += max(0.0, min(b, e) - max(a, s))
    return heard.most_common(1)[0][0] if heard else None


def main() -> int:
    parser = make_parser(__doc__)
    parser.add_argument("--minutes", type=float, default=4.0, help="meeting length")
    parser.add_argument("--meetings", type=int, default=4, help="tune meetings")
    parser.add_argument("--heldout", type=int, default=3, help="held-out meetings")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    from jobs.stitching.voiceprints import MATCH_THRESHOLD
    from tests.knownvoices import enrollment_samples, naming_rates
    from tests.realvoices import HELDOUT_VOICES, TUNE_VOICES, build_meeting

    diarizer = _diarizer()
    genuine, impostor, rows = [], [], []
    for m in range(args.meetings):
        voices = [v for i, v in enumerate(TUNE_VOICES) if i != m % len(TUNE_VOICES)]
        rec = build_meeting(voices, args.minutes, seed=100 + m)
        known = [enroll(diarizer, enrollment_samples(v, rec, seed=m), v) for v in TUNE_VOICES]
        speakers = run_job(diarizer, rec, known, 30.0)
        # Similarities of every global speaker to every voiceprint, before naming.
        for label, voice in speakers.voices.items():
            truth = majority_voice(rec, speakers.turns, label)
            for k in known:
                sim = float(np.dot(voice.embedding, np.asarray(k.embedding)))
                (genuine if k.name == truth else impostor).append(sim)
        rates = naming_rates(
            rec, [(t.start, t.end, t.speaker) for t in speakers.turns], {v: v for v in TUNE_VOICES}
        )
        rows.append(
            ["tune", m, ", ".join(voices), rates.right, rates.impostor, len(rates.absent_named)]
        )
        log(f"tune meeting {m}: right {rates.right:.4f}, speakers {speakers.names}")
        log(f"  per voice (labelled s, right s): {rates.per_voice}")
    lo, hi = min(genuine), max(impostor)
    log(f"genuine min {lo:.3f} (n={len(genuine)}), impostor max {hi:.3f} (n={len(impostor)})")

    voices = ["ru", "fr_armelle", "it_menardi", "es_co"]
    assert set(voices) - {"es_co"} <= set(HELDOUT_VOICES)
    enrolled = {"ru": "Ru", "fr_armelle": "Armelle", "en_allison": "Allison"}
    right = labelled = wrong = other = 0.0
    for m in range(args.heldout):
        rec = build_meeting(voices, args.minutes, seed=7 + m)
        known = [
            enroll(diarizer, enrollment_samples(v, rec, seed=9 + m), n) for v, n in enrolled.items()
        ]
        speakers = run_job(diarizer, rec, known, 30.0)
        rates = naming_rates(rec, [(t.start, t.end, t.speaker) for t in speakers.turns], enrolled)
        rows.append(
            ["held-out", m, ", ".join(voices), rates.right, rates.impostor, len(rates.absent_named)]
        )
        for voice, (seconds, scored) in rates.per_voice.items():
            if voice in enrolled:
                labelled, right = labelled + seconds, right + scored
            else:
                other, wrong = other + seconds, wrong + scored
        log(f"held-out {m}: {speakers.names}; {[x.model_dump() for x in speakers.matches]}")
        log(f"  per voice (labelled s, scored s): {rates.per_voice}; majority {rates.majority}")
    rows.append(
        [
            "held-out, all",
            "-",
            f"{labelled:.0f} s enrolled, {other:.0f} s not",
            right / labelled,
            wrong / other,
            "-",
        ]
    )
    headers = [
        "set",
        "meeting",
        "voices",
        "right name (enrolled)",
        "enrolled name (never enrolled)",
        "absent names shown",
    ]
    calib = [
        [
            len(genuine),
            lo,
            float(np.median(genuine)),
            len(impostor),
            hi,
            float(np.median(impostor)),
            MATCH_THRESHOLD,
        ]
    ]
    write_json(
        args.json,
        args,
        [
            table(
                f"Known speakers, {args.minutes:g} min meetings of real voices",
                headers,
                rows,
                digits=4,
            ),
            table(
                "Similarity of job speakers to voiceprints (tune set)",
                [
                    "genuine n",
                    "genuine min",
                    "genuine median",
                    "impostor n",
                    "impostor max",
                    "impostor median",
                    "threshold",
                ],
                calib,
                digits=3,
            ),
        ],
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
