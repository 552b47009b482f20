"""Stitching segment results: global times, speaker linking, attribution, sentences."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from deployments.core.clustering import cluster
from deployments.core.schemas import (
    Diarization,
    DiarizeOptions,
    SpeakerTrack,
    SpeakerTurn,
    Transcription,
    TranscriptSegment,
    Word,
)
from deployments.core.splitter import SegmentPlan
from jobs.stitching.stitch import JobResult, SegmentOutcome, stitch

SR = 16000
SEG_S = 30.0
DIM = 256


def _unit(v: np.ndarray) -> np.ndarray:
    return v / np.linalg.norm(v)


@pytest.fixture(scope="module")
def voices() -> np.ndarray:
    rng = np.random.default_rng(7)
    return np.stack([_unit(rng.normal(size=DIM)) for _ in range(3)])


def _noisy(v: np.ndarray, rng: np.random.Generator, sigma: float = 0.015) -> list[float]:
    return _unit(v + rng.normal(0, sigma, v.size)).tolist()


def _outcome(
    index: int,
    words: list[tuple[float, float, str]],
    turns: list[tuple[float, float, str]] | None = None,
    embeddings: dict[str, list[float]] | None = None,
    length_s: float = SEG_S,
    start_s: float | None = None,
    language: str = "en",
) -> SegmentOutcome:
    """One segment; all times are local to the segment."""
    start = int((index * SEG_S if start_s is None else start_s) * SR)
    plan = SegmentPlan(index=index, start=start, end=start + int(length_s * SR), forced=False)
    ws = [Word(start=a, end=b, text=t, probability=0.9) for a, b, t in words]
    segments = (
        [
            TranscriptSegment(
                start=ws[0].start, end=ws[-1].end, text="".join(w.text for w in ws), words=ws
            )
        ]
        if ws
        else []
    )
    tr = Transcription(language=language, language_probability=0.99, duration=length_s,
                       segments=segments)  # fmt: skip
    di = None
    if turns is not None:
        st = [SpeakerTurn(start=a, end=b, speaker=s) for a, b, s in turns]
        labels = sorted({s for _, _, s in turns} | set(embeddings or {}))
        # One track per turn, as the diarizer ships them; turns of different speakers
        # were heard apart.
        tracks = [
            SpeakerTrack(
                id=i,
                speaker=s,
                embedding=(embeddings or {})[s],
                weight=b - a,
                cannot_link=[j for j, other in enumerate(turns) if other[2] != s],
                turns=[(a, b)],
                exclusive_turns=[(a, b)],
            )
            for i, (a, b, s) in enumerate(turns)
        ]
        di = Diarization(duration=length_s, turns=st, exclusive_turns=st, speakers=labels,
                         embeddings=embeddings or {}, tracks=tracks)  # fmt: skip
    return SegmentOutcome(plan=plan, transcription=tr, diarization=di)


def _conversation(voices, rng, segments=6, order=((0, 1, 2),) * 6, sigma=0.015):
    """Each segment: three 8 s turns by the given persons, under shuffled local labels."""
    outs, truth = [], []  # truth: (global time, person) per turn
    for k in range(segments):
        persons = order[k % len(order)]
        labels = {p: f"SPEAKER_{j:02d}" for j, p in enumerate(rng.permutation(persons))}
        turns, words = [], []
        for j, p in enumerate(persons):
            t0 = 1.0 + j * 9.0
            turns.append((t0, t0 + 8.0, labels[p]))
            words += [(t0 + 0.5 * i, t0 + 0.5 * i + 0.4, f" w{k}_{j}_{i}") for i in range(10)]
            truth.append((k * SEG_S + t0, p))
        emb = {labels[p]: _noisy(voices[p], rng, sigma) for p in persons}
        outs.append(_outcome(k, words, turns, emb))
    return outs, truth


def _person_to_label(result: JobResult, truth) -> dict[int, set[str]]:
    found: dict[int, set[str]] = {}
    for t, p in truth:
        [turn] = [x for x in result.turns if x.start <= t + 0.5 < x.end]
        found.setdefault(p, set()).add(turn.speaker)
    return found


def test_global_offsets_monotonic_no_loss():
    outs = [
        _outcome(0, [(0.5, 1.0, " Hello"), (1.0, 1.6, " world."), (29.7, 30.4, " late")]),
        _outcome(1, [(0.0, 0.3, " next"), (0.2, 0.9, " one"), (2.0, 2.5, " there.")]),
    ]
    res = stitch(list(reversed(outs)), duration=60.0)  # input order does not matter
    words = [w for s in res.segments for w in s.words]
    assert [w.text for w in words] == [" Hello", " world.", " late", " next", " one", " there."]
    assert (words[0].start, words[0].end) == (0.5, 1.0)
    assert (words[3].start, words[5].start) == (30.0, 32.0)
    assert words[2].end <= 30.0  # clamped into its segment
    for a, b in itertools.pairwise(words):
        assert a.start <= b.start and a.end <= b.start + 1e-9 and a.start <= a.end
    assert res.speakers == [] and res.turns == [] and all(w.speaker is None for w in words)
    assert res.language == "en" and res.duration == 60.0
    assert res.text.startswith("Hello world.")


def test_empty_and_silent_inputs():
    assert stitch([], 0.0).segments == []
    silent = [_outcome(0, [], [], {}), _outcome(1, [], [], {})]
    res = stitch(silent, 60.0, DiarizeOptions(num_speakers=2))
    assert res.segments == [] and res.speakers == [] and res.text == ""
    assert JobResult.model_validate_json(res.model_dump_json()) == res


def test_links_same_person_across_segments(voices):
    outs, truth = _conversation(voices, np.random.default_rng(1))
    res = stitch(outs, 180.0)
    found = _person_to_label(res, truth)
    assert all(len(v) == 1 for v in found.values()), found
    assert len({next(iter(v)) for v in found.values()}) == 3
    assert res.speakers == ["SPEAKER_00", "SPEAKER_01", "SPEAKER_02"]


def test_relabel_in_order_of_first_appearance(voices):
    # Person 2 speaks first, under the local label SPEAKER_01.
    rng = np.random.default_rng(2)
    outs, truth = _conversation(voices, rng, order=((2, 0, 1), (1, 2, 0)))
    res = stitch(outs, 180.0)
    found = _person_to_label(res, truth)
    assert found == {2: {"SPEAKER_00"}, 0: {"SPEAKER_01"}, 1: {"SPEAKER_02"}}
    firsts = [min(t.start for t in res.turns if t.speaker == s) for s in res.speakers]
    assert firsts == sorted(firsts)


def test_cannot_link_within_segment_unless_forced(voices):
    rng = np.random.default_rng(3)
    twin = _noisy(voices[0], rng, 0.003)  # two near-identical voices in one segment
    seg = _outcome(0, [(1.0, 1.5, " a"), (6.0, 6.5, " b")],
                   [(0.5, 5.0, "A"), (5.5, 10.0, "B")], {"A": twin, "B": twin})  # fmt: skip
    assert len(stitch([seg], 30.0).speakers) == 2
    forced = stitch([seg], 30.0, DiarizeOptions(num_speakers=1))
    assert forced.speakers == ["SPEAKER_00"]
    assert {w.speaker for s in forced.segments for w in s.words} == {"SPEAKER_00"}


@pytest.mark.parametrize(
    ("options", "expected"),
    [
        (DiarizeOptions(num_speakers=2), 2),
        (DiarizeOptions(num_speakers=3), 3),
        (DiarizeOptions(max_speakers=2), 2),
        (DiarizeOptions(min_speakers=2, max_speakers=5), 3),
        (None, 3),
        # Three voices: a hint for more never splits one voice; the result says why.
        (DiarizeOptions(num_speakers=4), 3),
        (DiarizeOptions(min_speakers=5), 3),
    ],
)
def test_speaker_count_options(voices, options, expected):
    outs, _ = _conversation(voices, np.random.default_rng(4))
    res = stitch(outs, 180.0, options)
    assert len(res.speakers) == expected
    wanted = (options.num_speakers or options.min_speakers or 0) if options else 0
    assert bool(res.notes) == (wanted > expected)
    if res.notes:
        assert f"{wanted} speakers" in res.notes[0] and "only 3" in res.notes[0]


def test_tiny_speaker_attached_not_new(voices):
    rng = np.random.default_rng(5)
    outs, _ = _conversation(voices, rng, segments=3)
    stranger = _unit(rng.normal(size=DIM)).tolist()  # unreliable embedding, 0.4 s of speech
    turns = [(1.0, 8.0, "X"), (8.2, 8.6, "Y")]
    outs.append(_outcome(3, [(2.0, 2.4, " hi"), (8.2, 8.5, " ok")], turns,
                         {"X": _noisy(voices[1], rng), "Y": stranger}))  # fmt: skip
    res = stitch(outs, 120.0)
    assert len(res.speakers) == 3
    # A light item joins the heavy cluster instead of founding one, even when unlike it.
    result = cluster(np.stack([voices[0], voices[1]]), np.array([10.0, 0.2]))
    assert result.labels.tolist() == [0, 0]


def test_word_speaker_attribution(voices):
    rng = np.random.default_rng(6)
    turns = [(1.0, 3.0, "A"), (3.0, 6.0, "B"), (10.0, 12.0, "A")]
    words = [
        (2.5, 3.4, " mostlyB"),  # 0.5 s in A, 0.4 s in B -> A
        (2.8, 3.9, " moreB"),  # 0.2 s in A, 0.9 s in B -> B
        (6.5, 7.0, " afterB"),  # in no turn, 0.5 s after B
        (8.0, 8.5, " lonely"),  # nearest turn is 1.5 s away -> None
        (9.4, 9.8, " beforeA"),  # 0.2 s before A
    ]
    emb = {"A": _noisy(voices[0], rng), "B": _noisy(voices[1], rng)}
    res = stitch([_outcome(0, words, turns, emb)], 30.0)
    got = {w.text.strip(): w.speaker for s in res.segments for w in s.words}
    assert got == {"mostlyB": "SPEAKER_00", "moreB": "SPEAKER_01", "afterB": "SPEAKER_01",
                   "lonely": None, "beforeA": "SPEAKER_00"}  # fmt: skip


def test_turns_merged_across_boundary(voices):
    rng = np.random.default_rng(8)
    a = _outcome(0, [], [(20.0, 29.95, "S1")], {"S1": _noisy(voices[0], rng)})
    b = _outcome(1, [], [(0.05, 5.0, "S0"), (6.0, 9.0, "S1")],
                 {"S0": _noisy(voices[0], rng), "S1": _noisy(voices[1], rng)})  # fmt: skip
    res = stitch([a, b], 60.0)
    assert [(t.start, t.end, t.speaker) for t in res.turns] == [
        (20.0, 35.0, "SPEAKER_00"),
        (36.0, 39.0, "SPEAKER_01"),
    ]


def test_sentence_segments():
    words = [(0.0, 0.3, " Mr."), (0.3, 0.6, " Smith"), (0.6, 0.9, " came"), (0.9, 1.2, " home.")]
    words += [(1.3, 1.6, " Did"), (1.6, 1.9, " he"), (1.9, 2.2, " stay?")]
    words += [(4.0, 4.3, " After"), (4.3, 4.6, " a"), (4.6, 4.9, " pause")]
    words += [(5.0 + 0.2 * i, 5.15 + 0.2 * i, f" w{i}") for i in range(130)]
    res = stitch([_outcome(0, words, length_s=60.0)], 60.0)
    texts = [s.text for s in res.segments]
    assert texts[:2] == ["Mr. Smith came home.", "Did he stay?"]
    assert texts[2].startswith("After a pause w0 w1")
    assert all(len(s.words) <= 60 and s.end - s.start <= 30.0 for s in res.segments)
    assert sum(len(s.words) for s in res.segments) == len(words)
    assert res.segments[0].start == 0.0 and res.segments[0].end == 1.2


def test_sentences_break_on_speaker_change(voices):
    rng = np.random.default_rng(9)
    turns = [(0.0, 1.0, "A"), (1.0, 2.0, "B")]
    words = [(0.1, 0.4, " one"), (0.5, 0.9, " two"), (1.1, 1.5, " three")]
    emb = {"A": _noisy(voices[0], rng), "B": _noisy(voices[1], rng)}
    res = stitch([_outcome(0, words, turns, emb)], 30.0)
    assert [(s.text, s.speaker) for s in res.segments] == [
        ("one two", "SPEAKER_00"),
        ("three", "SPEAKER_01"),
    ]


def test_majority_language_by_words():
    outs = [
        _outcome(0, [(0.0, 0.5, " a"), (0.5, 1.0, " b")], language="de"),
        _outcome(1, [], language="fr"),
        _outcome(2, [(0.0, 0.5, " c")], language="en"),
    ]
    assert stitch(outs, 90.0).language == "de"


def _with_tracks(
    outcome: SegmentOutcome,
    tracks: list[tuple[str, np.ndarray, list[tuple[float, float]]]],
    rng: np.random.Generator,
) -> SegmentOutcome:
    """Attach tracks (local speaker, voice, exclusive spans); all tracks of a segment are
    heard in one chunk with each other only when they belong to different speakers."""
    from deployments.core.schemas import SpeakerTrack

    d = outcome.diarization.model_copy(update={"tracks": []})
    items = [
        SpeakerTrack(
            id=i,
            speaker=label,
            embedding=_noisy(voice, rng),
            weight=sum(b - a for a, b in spans),
            cannot_link=[j for j, (other, _, _) in enumerate(tracks) if other != label],
            turns=spans,
            exclusive_turns=spans,
        )
        for i, (label, voice, spans) in enumerate(tracks)
    ]
    # Validated, as at the boundary from the replica.
    outcome.diarization = Diarization.model_validate({**d.model_dump(), "tracks": items})
    return outcome


def _tracked_conversation(voices, rng, merged_segment: int | None = None):
    """Like _conversation, with tracks; in merged_segment the diarizer merged persons 0
    and 1 into one local speaker (their tracks still carry their own voices)."""
    outs, truth = _conversation(voices, rng, segments=4)
    for k, oc in enumerate(outs):
        d = oc.diarization
        spans = [(t.start, t.end) for t in d.exclusive_turns]
        persons = [int(np.argmax(voices @ np.asarray(d.embeddings[t.speaker]))) for t in d.turns]
        tracks = [
            (t.speaker, voices[p], [s]) for t, p, s in zip(d.turns, persons, spans, strict=True)
        ]
        if k == merged_segment:
            one = tracks[persons.index(0)][0]
            tracks = [
                (one if p in (0, 1) else lab, v, s)
                for (lab, v, s), p in zip(tracks, persons, strict=True)
            ]
            turns = [(s[0][0], s[0][1], lab) for lab, _, s in tracks]
            labels = sorted({lab for lab, _, _ in tracks})
            emb = {
                lab: _noisy(voices[persons[[t[0] for t in tracks].index(lab)]], rng)
                for lab in labels
            }
            oc = _outcome(k, [], turns, emb)
            oc.transcription = outs[k].transcription
            outs[k] = oc
        outs[k] = _with_tracks(outs[k], tracks, rng)
    return outs, truth


def test_tracks_clustered_jointly_undo_local_merge(voices):
    outs, truth = _tracked_conversation(voices, np.random.default_rng(10), merged_segment=1)
    assert len(outs[1].diarization.speakers) == 2  # the segment alone got it wrong
    res = stitch(outs, 120.0)
    found = _person_to_label(res, truth)
    assert all(len(v) == 1 for v in found.values()), found
    assert res.speakers == ["SPEAKER_00", "SPEAKER_01", "SPEAKER_02"]


@pytest.mark.parametrize(
    ("options", "expected"),
    [(None, 3), (DiarizeOptions(num_speakers=2), 2), (DiarizeOptions(min_speakers=4), 3)],
)
def test_track_clustering_honours_speaker_count(voices, options, expected):
    outs, _ = _tracked_conversation(voices, np.random.default_rng(11))
    assert len(stitch(outs, 120.0, options).speakers) == expected


def test_single_segment_with_tracks_keeps_its_labels(voices):
    rng = np.random.default_rng(12)
    twin = _noisy(voices[0], rng, 0.003)
    seg = _outcome(0, [(1.0, 1.5, " a"), (6.0, 6.5, " b")],
                   [(0.5, 5.0, "A"), (5.5, 10.0, "B")], {"A": twin, "B": twin})  # fmt: skip
    tracks = [("A", voices[0], [(0.5, 5.0)]), ("B", voices[0], [(5.5, 10.0)])]
    seg = _with_tracks(seg, tracks, rng)
    assert len(stitch([seg], 30.0).speakers) == 2  # the diarizer's own decision stands
    assert stitch([seg], 30.0, DiarizeOptions(num_speakers=1)).speakers == ["SPEAKER_00"]


def test_track_must_name_a_known_speaker(voices):
    from pydantic import ValidationError

    seg = _outcome(0, [], [(0.5, 5.0, "A")], {"A": voices[0].tolist()})
    with pytest.raises(ValidationError, match="unknown speaker"):
        _with_tracks(seg, [("B", voices[0], [(0.5, 5.0)])], np.random.default_rng(13))


class _MemorySink:
    """Checkpoints and the result as JobStore keeps them, in a dict (isolates the writer)."""

    def __init__(self, outcomes: list[SegmentOutcome]) -> None:
        self.ckpt = {}
        for oc in outcomes:
            self.ckpt[f"{oc.plan.key}:t"] = oc.transcription.model_dump_json()
            if oc.diarization is not None:
                self.ckpt[f"{oc.plan.key}:d"] = oc.diarization.model_dump_json()
        self.partial: str | None = "stale bytes of an interrupted run"
        self.appends = 0
        self.result: str | None = None

    async def checkpoint(self, job_id, field):
        return self.ckpt.get(field)

    async def result_reset(self, job_id, lease=None):
        self.partial = None

    async def result_append(self, job_id, chunk, offset, lease=None):
        assert self.result is None, "nothing is visible before the commit"
        assert offset == len((self.partial or "").encode()), "each chunk says where it goes"
        self.partial = (self.partial or "") + chunk
        self.appends += 1

    async def result_commit(self, job_id, size, lease=None):
        assert size == len(self.partial.encode())
        self.result, self.partial = self.partial, None

    async def save_voices(self, job_id, voices, lease=None):
        self.voices = voices


@pytest.mark.parametrize("diarized", [True, False])
def test_streamed_stitching_writes_what_stitch_returns(voices, monkeypatch, diarized):
    import asyncio

    from jobs.stitching import result_writer

    outs, _ = _tracked_conversation(voices, np.random.default_rng(21), merged_segment=2)
    # A word ending past its segment, to exercise clamping.
    seg = outs[0].transcription.segments[0]
    words = [*seg.words[:-1], seg.words[-1].model_copy(update={"end": 40.0})]
    outs[0].transcription = outs[0].transcription.model_copy(
        update={"segments": [seg.model_copy(update={"words": words})]}
    )
    if not diarized:
        for oc in outs:
            oc.diarization = None
    options = DiarizeOptions(max_speakers=5) if diarized else None
    expected = stitch(outs, 120.0, options)
    sink = _MemorySink(outs)
    monkeypatch.setattr(result_writer, "CHUNK_CHARS", 2000)  # many appends
    plans = sorted((oc.plan for oc in outs), key=lambda p: p.start)
    asyncio.run(result_writer.stitch_to_store(sink, "job", plans, 120.0, options))
    assert sink.appends > 3
    # Compared as written: a word's language is kept while stitching, never written.
    assert JobResult.model_validate_json(sink.result).model_dump() == expected.model_dump()
    assert len(expected.speakers) == (3 if diarized else 0)
    assert sum(len(s.words) for s in expected.segments) == sum(
        len(oc.transcription.words) for oc in outs
    )


def test_streamed_stitching_fails_loudly_on_a_missing_checkpoint(voices):
    import asyncio

    from jobs.stitching.result_writer import stitch_to_store

    outs, _ = _conversation(voices, np.random.default_rng(22), segments=2)
    sink = _MemorySink(outs)
    del sink.ckpt[f"{outs[1].plan.key}:t"]
    with pytest.raises(LookupError, match="missing"):
        asyncio.run(stitch_to_store(sink, "job", [o.plan for o in outs], 60.0, DiarizeOptions()))
    assert sink.result is None


def test_a_language_the_detection_was_unsure_of_is_said():
    """Segments carry how sure their language is; unsure speech gets a note, sure speech
    none."""

    def part(index: int, language: str, probability: float) -> SegmentOutcome:
        oc = _outcome(index, [(0.0, 1.0, " uno."), (1.5, 3.0, " due.")], language=language)
        segments = [
            s.model_copy(update={"language": language, "language_probability": probability})
            for s in oc.transcription.segments
        ]
        oc.transcription = oc.transcription.model_copy(update={"segments": segments})
        return oc

    res = stitch([part(0, "it", 0.95), part(1, "es", 0.4)], 60.0)
    assert [(s.language, s.language_probability) for s in res.segments] == [
        ("it", 0.95),
        ("it", 0.95),
        ("es", 0.4),
        ("es", 0.4),
    ]
    assert len(res.notes) == 1 and "2.5 s of speech (50%)" in res.notes[0], res.notes
    assert "language_probability" in res.notes[0]
    assert stitch([part(0, "it", 0.95), part(1, "it", 0.9)], 60.0).notes == []


def test_linked_turns_tell_apart_voices_a_segment_merged(voices):
    """The language pass cuts windows where the linked speakers change: in the segment whose
    diarizer gave persons 0 and 1 one label, linking still tells their turns apart."""
    from deployments.core.window_language import speaker_cuts
    from jobs.stitching.speaker_linking import TrackSet
    from jobs.stitching.stitch import link_speakers

    outs, _ = _tracked_conversation(voices, np.random.default_rng(10), merged_segment=1)
    tracks = TrackSet()
    for oc in outs:
        tracks.add(oc.diarization)
    speakers = link_speakers([oc.plan for oc in outs], tracks)
    merged = outs[1].diarization
    local = [(t.start, t.end, t.speaker) for t in merged.exclusive_turns]
    linked = speakers.exclusive_turns(SEG_S, 2 * SEG_S)
    assert [(a, b) for a, b, _ in linked] == [(a, b) for a, b, _ in local]  # segment-relative
    assert len({who for _, _, who in local}) == 2
    assert len({who for _, _, who in linked}) == 3
    assert len(speaker_cuts(local)) == 1 and len(speaker_cuts(linked)) == 2
    # Clipped to the range asked for.
    assert speakers.exclusive_turns(SEG_S + 5.0, SEG_S + 12.0)[0][:2] == (0.0, 4.0)
