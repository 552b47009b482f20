"""What decoding unheard speech again (deployments/core/unheard.py) recovers, and costs.

    .venv/bin/python bench/unheard.py [--minutes 5] [--runs 3] [--models base]

In process, the replica's own engine (`WhisperBatchTranscriber`, `--threads` 1 by default:
what a replica of the default config, on half a core, gets) transcribes each set in 30 s
segments, as a job's first pass does, once with the unheard rounds off and once with them
on (`UNHEARD_ROUNDS`), alternating, `--runs` times. Sets, all real speech:
- English: Debian's Allison prompts read one after another (bench.common.real_speech, what
  bench/throughput.py measures), `--minutes` long; English is what most users send;
- three languages: the tune voices' meeting (English, French, Italian;
  tests/realvoices.py), `--minutes` long: windows hold two languages;
- AMI: the ten real meeting clips in shared/data/ami (English, overlapped, far-field).

Printed per set and model: windows decoded, words, the speech VAD found that no word
covers (seconds, core.unheard's rule), WER where the set has transcripts, and the time:
median of the runs with min-max, and the ratio on/off. `--request-language en` gives every request
a fixed language (the three-language set is then skipped).

With `--alignment`, the rounds stay off and what is compared, the same way, is how words
are timed: one alignment per window (window_decoding.time_words_per_window, what replicas
on CPU do) against faster-whisper's one alignment per batch.
"""

from __future__ import annotations

import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import (
    add_common_args,
    bench_settings,
    load_core,
    log,
    make_parser,
    real_speech,
    table,
    workspace,
    write_json,
)

SAMPLE_RATE = 16_000
SEGMENT = 30 * SAMPLE_RATE


def sets(minutes: float) -> dict[str, tuple[list, str | None]]:
    """name -> (30 s segments, reference text or None)."""
    import soundfile as sf

    from tests.realsets import AMI_DIR
    from tests.realvoices import cached_meeting

    english = real_speech(minutes, seed=5)
    meeting = cached_meeting(["en_allison", "fr_june", "it_carlo"], minutes, seed=11)
    ami = [sf.read(p, dtype="float32")[0] for p in sorted(AMI_DIR.glob("*.wav"))]

    def cut(audio) -> list:
        return [audio[i : i + SEGMENT] for i in range(0, len(audio), SEGMENT)]

    return {
        "English (Allison)": (cut(english.audio), " ".join(english.texts)),
        "three languages (tune voices)": (cut(meeting.audio), None),
        "AMI clips": ([x for a in ami for x in cut(a)], None),
    }


def measure(core, segments: list, rounds: int, language: str | None = None) -> dict:
    import deployments.models.whisper_batch as whisper_batch
    from deployments.core.schemas import TranscribeOptions
    from deployments.core.unheard import unheard

    windows = {"n": 0}
    run = core._run

    def counted(buffer, clips, todo, *args, **kwargs):
        windows["n"] += len(todo)
        return run(buffer, clips, todo, *args, **kwargs)

    core._run, whisper_batch.UNHEARD_ROUNDS = counted, rounds
    try:
        t0 = time.perf_counter()
        opts = TranscribeOptions(language=language)
        results = core.transcribe_many(segments, [opts] * len(segments))
        seconds = time.perf_counter() - t0
    finally:
        core._run = run
    lost = 0.0
    for audio, result in zip(segments, results, strict=True):
        pieces, _ = whisper_batch.speech_pieces(audio, vad_filter=True)
        speech = [(a / SAMPLE_RATE, b / SAMPLE_RATE) for a, b in pieces]
        lost += sum(e - s for s, e in unheard(speech, [(w.start, w.end) for w in result.words]))
    text = " ".join(r.text for r in results)
    words = sum(len(r.words) for r in results)
    return {"s": seconds, "windows": windows["n"], "words": words, "lost": lost, "text": text}


def timing(core, per_window: bool) -> None:
    """Time words per window (as replicas on CPU do) or per batch (faster-whisper's own)."""
    from deployments.models.window_decoding import time_words_per_window

    core.model.__dict__.pop("add_word_timestamps", None)  # back to the batched method
    if per_window:
        time_words_per_window(core.model)


def main() -> int:
    import deployments.models.whisper_batch as whisper_batch
    from tests.conftest import wer

    parser = make_parser(__doc__)
    parser.add_argument("--minutes", type=float, default=5.0)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--models", nargs="+", default=["base"])
    parser.add_argument(
        "--request-language", default=None, help="every request's language (unset: detected)"
    )
    parser.add_argument(
        "--alignment", action="store_true", help="compare word timing per window vs per batch"
    )
    add_common_args(parser, threads=1)
    args = parser.parse_args()
    on = whisper_batch.UNHEARD_ROUNDS
    rows = []
    with workspace() as tmp:
        data = sets(args.minutes)
        for model in args.models:
            args.whisper_model = model
            core = load_core(bench_settings(tmp / "data", args), args.threads)
            for name, (segments, reference) in data.items():
                if (model.endswith(".en") or args.request_language) and "languages" in name:
                    continue  # one language to decode in
                runs: dict[int, list[dict]] = {0: [], on: []}
                for k in range(args.runs):
                    for rounds in (0, on) if k % 2 == 0 else (on, 0):
                        if args.alignment:  # "rounds" on: per window; off: per batch
                            timing(core, per_window=rounds == on)
                            rounds_now = 0
                        else:
                            rounds_now = rounds
                        found = measure(core, segments, rounds_now, args.request_language)
                        runs[rounds].append(found)
                    log(f"{model}, {name}: run {k + 1} done")
                for rounds, found in runs.items():
                    times = [r["s"] for r in found]
                    last = found[-1]
                    score = wer(reference, last["text"]) if reference else None
                    rows.append(
                        [
                            model,
                            name,
                            len(segments),
                            ("per window" if rounds else "per batch") if args.alignment else rounds,
                            last["windows"],
                            last["words"],
                            last["lost"],
                            score,
                            f"{statistics.median(times):.1f} ({min(times):.1f}-{max(times):.1f})",
                        ]
                    )
                off_s = statistics.median(r["s"] for r in runs[0])
                on_s = statistics.median(r["s"] for r in runs[on])
                ratio = "window / batch" if args.alignment else "on / off"
                rows.append([model, name, "", ratio, "", "", "", "", f"{on_s / off_s:.2f}x"])
            del core
    headers = [
        "model",
        "set",
        "30 s segments",
        "word timing per window / per batch" if args.alignment else "unheard rounds",
        "windows decoded",
        "words",
        "speech without words (s)",
        "WER",
        "seconds, median (min-max)",
    ]
    tables = [
        table(
            f"Decoding unheard speech again: {args.minutes:g} min sets, {args.threads} thread(s), "
            f"median of {args.runs}",
            headers,
            rows,
            digits=3,
        )
    ]
    write_json(args.json, args, tables)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
