"""Many languages on real voices: language per segment, and WER per language.

    .venv/bin/python bench/multilingual.py [--minutes 6] [--seed 0] [--json out.json]
    .venv/bin/python bench/multilingual.py --only unseen --modes "transcription only"

A meeting of real voices that each speak their own language (Debian's prompt packages,
tests/realvoices.py: turns of 1-4 prompts, 0.3-1.5 s apart) is submitted as a job to the
app deployed as serve_config.yaml deploys it (default model, no `language`), diarized and
with diarize=false. Meetings: tune voices (en_allison, fr_june, it_carlo; the language
threshold was chosen on these), held-out voices (ru, fr_armelle, it_menardi), and the
unseen meetings of issue 20 (MEETINGS: a bilingual person, other orders and turn lengths).

With --calibrate it first shows where the sure-language threshold
(deployments.core.window_language.SURE_PROBABILITY) comes from: on single prompts of the tune
voices, the detection probability of right and wrong guesses, by prompt length.

Reported, per meeting:
- speech transcribed: the share of the reference speech time some result segment covers
  (tests/multilingual.speech_transcribed; what is missing was lost), and the job's wall time;
- language accuracy: the share of the result's segments whose `language` is that of the
  reference turn they overlap most (tests/multilingual.language_scores), and the share of
  speech time (language_time_share); next to it, what a single detection from the first
  30 s (faster-whisper's default) would score; then the speech time right per voice and
  per turn length (which voices and turn lengths fail);
- WER per language (voices with transcripts: en, fr, it, ru): the job's words assigned to
  that language's turns by their own timestamps (and, for comparison, whole segments by
  most overlap, which charges a segment spanning two languages to one of them), next to
  faster-whisper's BatchedInferencePipeline with the same model on that language's turns
  alone (cut out and joined), same run.
"""

from __future__ import annotations

import itertools
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.cluster import Cluster
from bench.common import (
    add_common_args,
    bench_settings,
    default_deploy,
    load_whisper,
    log,
    make_parser,
    ray_cpus,
    table,
    workspace,
    write_json,
)

SAMPLE_RATE = 16_000
# name -> (voices, prompts per turn, seed offset). The "unseen" meetings (issue 20) were
# built after every choice was made and are never used to make one: other voices' orders,
# other turn lengths, and a bilingual person (Allison, in English and in Spanish: es_mx's
# prompts, which nothing was tuned on).
MEETINGS: dict[str, tuple[list[str], tuple[int, int], int]] = {
    "tune": (["en_allison", "fr_june", "it_carlo"], (1, 4), 0),
    "held-out": (["ru", "fr_armelle", "it_menardi"], (1, 4), 0),
    # Tune voices in short turns, like B's (built in stop 37 to choose the short-turn rules
    # on, so that B stays unseen).
    "tune short turns": (["es_co", "it_carlo", "en_allison", "fr_june"], (1, 2), 404),
    "unseen A (bilingual, long turns)": (
        ["en_allison", "es_mx", "ru", "fr_armelle", "it_menardi"],
        (2, 6),
        101,
    ),
    "unseen B (short turns)": (
        ["it_menardi", "es_mx", "fr_armelle", "ru", "en_allison"],
        (1, 2),
        202,
    ),
    # Built after the candidate-language rule was written, with A and B's errors in view.
    "unseen C (medium turns)": (
        ["ru", "en_allison", "it_menardi", "es_mx", "fr_armelle"],
        (1, 3),
        303,
    ),
}
MODES = {"diarized": True, "transcription only": False}


def language_alone(rec, language: str) -> np.ndarray:
    """The recording's turns in `language`, cut out and joined with 0.5 s of silence."""
    from tests.realvoices import LANGUAGE

    gap = np.zeros(SAMPLE_RATE // 2, np.float32)
    pieces = []
    for start, end, voice in rec.turn_spans:
        if LANGUAGE[voice] == language:
            pieces += [rec.audio[int(start * SAMPLE_RATE) : int(end * SAMPLE_RATE)], gap]
    return np.concatenate(pieces) if pieces else np.zeros(0, np.float32)


def batched_text(model, audio: np.ndarray) -> str:
    """faster-whisper's batched pipeline as its README shows it (language detected)."""
    from faster_whisper import BatchedInferencePipeline

    segments, _ = BatchedInferencePipeline(model).transcribe(audio, batch_size=8)
    return " ".join(s.text.strip() for s in segments)


def first_30s_language(model, audio: np.ndarray) -> str:
    language, _, _ = model.detect_language(audio[: 30 * SAMPLE_RATE])
    return language


def calibrate(model, per_voice: int, seed: int) -> dict:
    """Detection on single prompts of the tune voices: how sure right and wrong guesses are."""
    from faster_whisper.audio import pad_or_trim

    from deployments.core.window_language import SURE_PROBABILITY as SURE
    from deployments.core.window_language import parse_detection
    from tests.realvoices import LANGUAGE, voice_prompts

    rng = np.random.default_rng(seed)
    rows: dict[str, list] = {}
    for voice in MEETINGS["tune"]:
        prompts = voice_prompts(voice)
        for i in rng.permutation(len(prompts))[:per_voice]:
            audio = prompts[i].audio
            features = pad_or_trim(model.feature_extractor(audio)[..., :-1])
            found = model.model.detect_language(model.encode(features[None]))[0]
            code, p = next(iter(parse_detection(found, keep=1).items()))
            band = "< 1.5 s" if len(audio) < 1.5 * SAMPLE_RATE else ">= 1.5 s"
            rows.setdefault(band, []).append((code == LANGUAGE[voice], p))
    out = []
    for band, found in sorted(rows.items()):
        right = [p for ok, p in found if ok]
        wrong = [p for ok, p in found if not ok]
        out.append(
            [
                band,
                len(found),
                len(wrong),
                min(right) if right else None,
                float(np.median(right)) if right else None,
                max(wrong) if wrong else None,
                sum(p < SURE for p in right),
                sum(p >= SURE for p in wrong),
            ]
        )
    return table(
        "Language detection on single prompts of the tune voices (base)",
        [
            "prompt",
            "prompts",
            "wrong",
            "right: min p",
            "right: median p",
            "wrong: max p",
            f"right, p < {SURE}",
            f"wrong, p >= {SURE}",
        ],
        out,
        digits=3,
    )


TURN_LENGTHS = ((0.0, 2.0), (2.0, 5.0), (5.0, float("inf")))  # seconds


def breakdown(rec, segments: list[dict]) -> list[list]:
    """Speech time whose language is right, per voice and per length of the turn it is in:
    which voices and turn lengths fail."""
    from tests.multilingual import language_time_share
    from tests.realvoices import LANGUAGE

    def length(s: float, e: float) -> float:
        return next((b - a for a, b, _ in rec.turn_spans if a <= (s + e) / 2 <= b), e - s)

    rows = []
    for voice in sorted({v for _, _, v in rec.turns}):
        speech = [(s, e, LANGUAGE[v]) for s, e, v in rec.turns if v == voice]
        share, seconds = language_time_share(segments, speech)
        rows.append([f"voice {voice}", seconds, share])
    for lo, hi in TURN_LENGTHS:
        speech = [(s, e, LANGUAGE[v]) for s, e, v in rec.turns if lo <= length(s, e) < hi]
        share, seconds = language_time_share(segments, speech)
        rows.append([f"turns {lo:g}-{hi:g} s", seconds, share])
    return rows


def main() -> int:
    parser = make_parser(__doc__)
    parser.add_argument("--minutes", type=float, default=6.0, help="length of each meeting")
    parser.add_argument("--seed", type=int, default=0, help="meeting seed")
    parser.add_argument(
        "--calibrate", type=int, metavar="N", help="first probe N single prompts per tune voice"
    )
    parser.add_argument("--no-meetings", action="store_true", help="only the calibration")
    parser.add_argument("--dump", type=Path, help="write each job's result JSON into this folder")
    parser.add_argument(
        "--only", nargs="+", help="run only the meetings whose name contains one of these"
    )
    parser.add_argument(
        "--modes", nargs="+", choices=list(MODES), default=list(MODES), help="job kinds to run"
    )
    add_common_args(parser)
    args = parser.parse_args()

    from tests.multilingual import (
        language_scores,
        language_time_share,
        speech_transcribed,
        words_by_language,
        words_by_language_timed,
    )
    from tests.multilingual import wer as language_wer
    from tests.realvoices import cached_meeting, texts_by_language, turn_languages

    meetings = {
        name: cached_meeting(v, args.minutes, seed=args.seed + off, prompts_per_turn=turns)
        for name, (v, turns, off) in MEETINGS.items()
        if not args.only or any(part in name for part in args.only)
    }
    with workspace() as tmp:
        settings = bench_settings(tmp / "data", args)
        model = load_whisper(settings, args.threads)
        calibration = [calibrate(model, args.calibrate, args.seed)] if args.calibrate else []
        if args.no_meetings:
            write_json(args.json, args, calibration)
            return 0
        baseline: dict[str, dict] = {}
        for name, rec in meetings.items():
            refs = texts_by_language(rec)
            first = first_30s_language(model, rec.audio)
            texts = {lang: batched_text(model, language_alone(rec, lang)) for lang in refs}
            baseline[name] = {"first": first, "texts": texts, "refs": refs}
            log(f"{name}: baseline done (first 30 s say {first!r})")
        del model
        results = {}
        with Cluster(settings, args.port, ray_cpus(args)) as cluster:
            cluster.deploy(**default_deploy())
            for (name, rec), mode in itertools.product(meetings.items(), args.modes):
                path = rec.write_wav(tmp / f"{len(results)}.wav")
                run = cluster.run_job(path, diarize=MODES[mode])
                if run.status != "completed":
                    raise RuntimeError(f"{name} job {run.status}: {run.snapshot.get('error')}")
                results[name, mode] = run
                if args.dump:
                    args.dump.mkdir(parents=True, exist_ok=True)
                    out = args.dump / f"{name} {mode}.json".replace(" ", "_")
                    out.write_text(json.dumps(run.result, indent=1))
                log(f"{name}, {mode}: job done in {run.wall_s:.0f} s")

    accuracy_rows, wer_rows, breakdown_rows = [], [], []
    for (name, mode), run in results.items():
        rec = meetings[name]
        reference = turn_languages(rec)
        segments = run.result["segments"]
        share, count = language_scores(segments, reference)
        by_time, _ = language_time_share(segments, turn_languages(rec, speech=True))
        first = baseline[name]["first"]
        single = [{**s, "language": first} for s in segments]
        single_share, _ = language_scores(single, reference)
        found = " ".join(run.result.get("languages") or [])
        heard = speech_transcribed(segments, turn_languages(rec, speech=True))
        head = [name, mode, round(run.wall_s), heard, count, share, by_time, first, single_share]
        accuracy_rows.append([*head, found])
        breakdown_rows += [[name, mode, *row] for row in breakdown(rec, segments)]
        by_segment = words_by_language(segments, reference)
        by_word = words_by_language_timed(segments, reference)
        for lang, ref in baseline[name]["refs"].items():
            job = language_wer(ref, by_word.get(lang, ""), lang)
            job_segments = language_wer(ref, by_segment.get(lang, ""), lang)
            batched = language_wer(ref, baseline[name]["texts"][lang], lang)
            delta = (job - batched) * 100
            row = [name, mode, lang, len(ref.split()), job, job_segments, batched, delta]
            wer_rows.append(row)
    tables = [
        *calibration,
        table(
            f"Language per segment, {args.minutes:g} min meetings of real voices "
            f"({settings.whisper_model}, default config, no `language`)",
            [
                "meeting",
                "job",
                "job s",
                "speech transcribed",
                "segments",
                "job: segments right",
                "job: speech time right",
                "first 30 s say",
                "one language: right",
                "languages found",
            ],
            accuracy_rows,
            digits=3,
        ),
        table(
            "Where the language is wrong: speech time right, per voice and per turn length",
            ["meeting", "job", "speech of", "seconds scored", "speech time right"],
            breakdown_rows,
            digits=3,
        ),
        table(
            "WER per language: job path vs BatchedInferencePipeline on the language's turns alone",
            [
                "meeting",
                "job",
                "language",
                "ref words",
                "job WER (words by their timestamps)",
                "job WER (whole segments by overlap)",
                "batched WER",
                "job - batched (points)",
            ],
            wer_rows,
            digits=3,
        ),
    ]
    write_json(args.json, args, tables)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
