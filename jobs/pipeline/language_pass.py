"""After a job's segments are transcribed: make each part's language right.

Each 30 s window of speech was decoded in the language detected on it. Two things go wrong
on real recordings, and both are mended here before stitching:

- A window holding two speakers who speak different languages is decoded in one of them
  (Whisper's detection picks one: 20 s of French then 8 s of Italian came out "it", 0.94).
  When a job finds two or more languages spoken with confidence, each segment with more
  than one speaker is transcribed again with its windows cut where speakers hand over, so
  every window holds one voice. A diarized job knows where from its diarization; a
  transcription-only job asks the diarizer for voice changes alone (its segmentation model,
  no embeddings or clustering), and, having no speakers to carry a language from turn to
  turn, transcribes every segment with speech again with its language probed region by
  region (deployments/models/language_probe.py), so that a short turn or a bilingual
  person's switch the voice changes missed is cut too. A job in one language pays nothing
  for this.
- A window unsure of its language (a short turn, a poor telephone line) is decoded again in
  the language its speaker speaks with confidence elsewhere in the recording (speakers
  linked across segments as stitching links them). A diarized job cuts a window at every
  turn of half a second or more, and under 1.5 s of speech no detection counts as sure, so
  a one-word turn takes its speaker's language (window_language.speaker_hints).
- A short segment unsure of its language (under 1.5 s of speech, e.g. one word between
  silences) takes the language of its nearest sure neighbour
  (deployments.core.window_language.settle).
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections import Counter, defaultdict
from collections.abc import Callable
from pathlib import Path

import ray
from pydantic import BaseModel

from deployments.core.audio import read_spans
from deployments.core.schemas import (
    SAMPLE_RATE,
    Diarization,
    SpeakerChanges,
    TranscribeOptions,
    Transcription,
)
from deployments.core.splitter import SegmentPlan
from deployments.core.window_language import (
    SHORT_SPEECH_S,
    SPEAKER_TURN_S,
    SURE_PROBABILITY,
    Spoken,
    settle,
    speaker_cuts,
    speaker_hints,
)
from jobs.state.job_store import JobStore
from jobs.state.records import JobRecord
from jobs.stitching.speaker_linking import TrackSet
from jobs.stitching.stitch import Speakers, link_speakers, segment_words

log = logging.getLogger(__name__)


class _Span(BaseModel):
    start: float
    end: float
    language: str | None = None
    language_probability: float | None = None  # a window may not say (older checkpoints)


class _LanguageOnly(BaseModel):
    """The part of a transcription checkpoint that says its language, and how much speech."""

    language: str | None = None
    language_probability: float = 0.0
    segments: list[_Span] = []


async def _languages(
    store: JobStore, job_id: str, plans: list[SegmentPlan]
) -> tuple[list[tuple[str | None, float, float]], set[str]]:
    """Per segment (language, probability, seconds of speech); and the languages the
    recording is sure of: a segment's own, or one its windows decoded with confidence for
    SHORT_SPEECH_S or more (a 30 s segment of French can hold a sure English turn)."""
    found = []
    sure_s: dict[str, float] = defaultdict(float)
    for plan in plans:
        raw = await store.checkpoint(job_id, f"{plan.key}:t")
        head = _LanguageOnly.model_validate_json(raw) if raw else None
        if head is None:
            found.append((None, 0.0, 0.0))
            continue
        speech_s = sum(s.end - s.start for s in head.segments)
        found.append((head.language, head.language_probability, speech_s))
        for s in head.segments:
            if s.language and (s.language_probability or 0.0) >= SURE_PROBABILITY:
                sure_s[s.language] += s.end - s.start
    sure = {lang for lang, p, _ in found if lang and p >= SURE_PROBABILITY}
    return found, sure | {lang for lang, seconds in sure_s.items() if seconds >= SHORT_SPEECH_S}


async def _speakers(
    store: JobStore, record: JobRecord, plans: list[SegmentPlan], base: TranscribeOptions
) -> tuple[dict[int, TranscribeOptions], Speakers]:
    """One read of the diarizations: the recording's speakers, linked as stitching links them
    (transcribing again changes no diarization); and per segment with more than one of them,
    options that cut its windows at handovers.

    Cut where the linked speakers change, not the segment's own labels: a segment's
    diarization gave one label to an Italian and a Russian voice that linking told apart,
    and their turns were decoded in one window, the Russian in Italian."""
    tracks = TrackSet()
    for plan in plans:
        raw = await store.checkpoint(record.id, f"{plan.key}:d")
        tracks.add(Diarization.model_validate_json(raw) if raw else None)
    diarize = record.options.diarize_options()
    known = list(record.options.known_speakers) or None
    # Linked with the job's known voices, as stitching would: stitching reuses it.
    speakers = await asyncio.to_thread(link_speakers, plans, tracks, diarize, known=known)
    cut: dict[int, TranscribeOptions] = {}
    for i, plan in enumerate(plans):
        turns = speakers.exclusive_turns(plan.start / SAMPLE_RATE, plan.end / SAMPLE_RATE)
        cuts = speaker_cuts(turns, SPEAKER_TURN_S)
        if cuts:
            cut[i] = base.model_copy(update={"cuts": cuts})
    return cut, speakers


async def _ready(value):
    return value


class _Steps:
    """The language pass's steps, resumable: a step's decisions are saved once (field
    `<step>`, by plan key) and each segment it redid is marked (`<plan>:<step>`), in the
    job's `lang` hash (apart from the segment checkpoints)."""

    def __init__(self, store, job_id, plans, audio_path, transcribe, limit, lease) -> None:
        self.store, self.job_id, self.plans, self.lease = store, job_id, plans, lease
        self.audio_path, self.transcribe, self.limit = audio_path, transcribe, limit
        self.index = {plan.key: i for i, plan in enumerate(plans)}

    async def decide(self, step: str, make: Callable) -> dict[int, TranscribeOptions]:
        raw = (await self.store.language_pass(self.job_id)).get(step)
        if raw is not None:
            saved = json.loads(raw)
            if all(key in self.index for key in saved):  # made for this plan
                return {
                    self.index[key]: TranscribeOptions.model_validate_json(options)
                    for key, options in saved.items()
                }
        decided = await make()
        payload = {self.plans[i].key: o.model_dump_json() for i, o in decided.items()}
        await self.store.save_language_pass(self.job_id, step, json.dumps(payload), self.lease)
        return decided

    async def run(self, step: str, options: dict[int, TranscribeOptions]) -> None:
        done = await self.store.language_pass(self.job_id)
        todo = {i: o for i, o in options.items() if f"{self.plans[i].key}:{step}" not in done}

        async def call(plan: SegmentPlan, ref, opts: TranscribeOptions) -> None:
            await self.transcribe(plan, ref, opts)
            field = f"{plan.key}:{step}"
            await self.store.save_language_pass(self.job_id, field, "1", self.lease)

        if todo:
            await _run(self.plans, self.audio_path, todo, call, self.limit)


async def settle_languages(
    store: JobStore,
    record: JobRecord,
    plans: list[SegmentPlan],
    audio_path: Path,
    diarized: bool,
    transcribe: Callable,
    report: Callable,
    changes: Callable | None = None,
    *,
    limit: int,
    lease: str | None = None,
) -> Speakers | None:
    """Redo the segments whose language is in doubt (see the module's doc). Returns the
    recording's linked speakers when it linked them (diarized, several languages), so
    stitching does not link them again.

    Args:
        transcribe: `await transcribe(plan, ref, options)` transcribes one segment again and
            saves its checkpoint (the runner's retried, validated call).
        report: `await report(stage)` says what is happening.
        changes: `await changes(plan, ref)` finds where the voice changes in one segment and
            saves it as the segment's "c" checkpoint (transcription-only jobs).
        limit: model calls in flight at once (the job's max_inflight_segments).
        lease: the runner's lease, checked by every write (LeaseLost once it is lost).

    Each step's decisions (which segments, with which options) and each segment it has
    redone are checkpointed, keyed by the segment's plan: a resumed job repeats no step
    and no segment it already finished.
    """
    plans = sorted(plans, key=lambda p: (p.start, p.index))
    step = _Steps(store, record.id, plans, audio_path, transcribe, limit, lease)
    found, sure = await _languages(store, record.id, plans)
    redo: dict[int, TranscribeOptions] = {}
    hinted: dict[int, TranscribeOptions] = {}
    speakers: Speakers | None = None
    # Windows decoded again choose among the languages the recording is sure of.
    base = record.options.transcribe_options()
    if len(sure) > 1:
        base = base.model_copy(update={"languages": tuple(sorted(sure))})
    if len(sure) > 1 and (diarized or changes is not None):
        if diarized:
            cut, speakers = await _speakers(store, record, plans, base)
            redo = await step.decide("cut", lambda: _ready(cut))
        else:
            await report(f"{len(sure)} languages found: finding where the voice changes")
            redo = await step.decide(
                "cut", lambda: _voice_cuts(store, record, plans, audio_path, changes, base, limit)
            )
        if redo:
            await report(f"{len(sure)} languages found: transcribing {len(redo)} segments by turn")
            await step.run("cut", redo)
        if diarized:

            async def hint() -> dict[int, TranscribeOptions]:
                hints = await _speaker_hints(store, record.id, plans, speakers)
                return {
                    i: (redo.get(i) or base).model_copy(update={"hints": h})
                    for i, h in hints.items()
                }

            hinted = await step.decide("hint", hint)
        if hinted:
            await report(f"giving {len(hinted)} segments their speakers' languages")
            await step.run("hint", hinted)
        found, _ = await _languages(store, record.id, plans)

    async def settle_short() -> dict[int, TranscribeOptions]:
        return {
            i: (redo.get(i) or base).model_copy(update={"language": lang})
            for i, lang in settle(found).items()
        }

    settled = await step.decide("settle", settle_short)
    if settled:
        await report(f"settling the language of {len(settled)} segments")
        await step.run("settle", settled)
    log.info(
        "job %s: languages %s; %d segment(s) cut by turn, %d given speakers' languages, %d settled",
        record.id,
        sorted(sure),
        len(redo),
        len(hinted),
        len(settled),
    )
    return speakers


async def _speaker_hints(
    store: JobStore, job_id: str, plans: list[SegmentPlan], speakers: Speakers
) -> dict[int, tuple[tuple[float, float, str], ...]]:
    """Per segment, the windows whose speaker speaks another language with confidence
    elsewhere (window_language.speaker_hints), segment-relative."""
    spans: list[Spoken] = []
    for i, plan in enumerate(plans):
        raw = await store.checkpoint(job_id, f"{plan.key}:t")
        if raw is None:
            continue
        transcription = Transcription.model_validate_json(raw)
        for seg in transcription.segments:
            one = transcription.model_copy(update={"segments": [seg]})
            words = segment_words(plan, one, SAMPLE_RATE)
            speakers.attribute(words)
            heard: Counter[str] = Counter()
            for w in words:
                if w.speaker:
                    heard[w.speaker] += w.end - w.start
            who = heard.most_common(1)[0][0] if heard else None
            p = seg.language_probability or 0.0
            spans.append(Spoken(i, seg.start, seg.end, seg.language, p, who))
    lengths = {i: (plan.end - plan.start) / SAMPLE_RATE for i, plan in enumerate(plans)}
    return speaker_hints(spans, lengths)


async def _voice_cuts(
    store: JobStore,
    record: JobRecord,
    plans: list[SegmentPlan],
    audio_path: Path,
    changes: Callable,
    base: TranscribeOptions,
    limit: int,
) -> dict[int, TranscribeOptions]:
    """Per segment with speech, options that cut its windows where the voice changes and
    probe its language by region (a segment of one voice may still change language: a
    bilingual person, or a short turn the voice changes missed); each segment's changes
    are asked for once (a resumed job reuses the checkpoints)."""
    keys = set(await store.checkpoint_keys(record.id))
    missing = {i: None for i, plan in enumerate(plans) if f"{plan.key}:c" not in keys}
    if missing:
        await _run(plans, audio_path, missing, lambda plan, ref, _: changes(plan, ref), limit)
    out: dict[int, TranscribeOptions] = {}
    for i, plan in enumerate(plans):
        raw = await store.checkpoint(record.id, f"{plan.key}:c")
        found = SpeakerChanges.model_validate_json(raw) if raw else None
        if found and found.turns:
            cuts = speaker_cuts([(t.start, t.end, t.speaker) for t in found.turns])
            out[i] = base.model_copy(update={"cuts": cuts, "split_languages": True})
    return out


async def _run(plans, audio_path, options: dict, call: Callable, limit: int) -> None:
    """`await call(plan, ref, options[i])` for each segment i in `options`, reading the audio
    once, at most `limit` at a time."""
    spans = read_spans(audio_path, {i: (plans[i].start, plans[i].end) for i in options})
    pending: set[asyncio.Task] = set()
    try:
        while (item := await asyncio.to_thread(next, spans, None)) is not None:
            i, audio = item
            pending.add(asyncio.create_task(call(plans[i], ray.put(audio), options[i])))
            if len(pending) >= limit:  # replicas stay busy, memory bounded
                done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
                for task in done:
                    task.result()
        for task in asyncio.as_completed(pending):
            await task
    finally:
        for task in pending:
            task.cancel()
