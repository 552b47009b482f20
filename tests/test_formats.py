"""Output formats: subtitles, text, RTTM and the OpenAI response shapes (no Ray, no models)."""

from __future__ import annotations

import itertools
import json
import re

import pydantic
import pytest
from openai.types.audio import Transcription, TranscriptionDiarized, TranscriptionVerbose
from pyannote.core import Annotation, Segment
from pyannote.database.util import load_rttm

from deployments.core.schemas import SpeakerTurn
from jobs.stitching.stitch import JobResult, StitchedSegment, StitchedWord
from serve_app.rendering import (
    JOB_FORMATS,
    OPENAI_FORMATS,
    cues,
    render_job,
    render_openai,
)

LONG = (
    "So the first thing we did, once the grant came through, was to hire two more people "
    "for the lab and buy the new sequencer, which took far longer than anyone expected "
    "because the vendor kept changing the delivery date."
)
NO_WORDS = (
    "This sentence has no word timestamps at all so it must be split in proportion to "
    "its length across the whole segment span without losing a single word of it."
)


def _segment(start: float, text: str, speaker: str | None, step: float = 0.45) -> StitchedSegment:
    """A sentence segment with faster-whisper style words (leading spaces), `step` s each."""
    words = [
        StitchedWord(
            start=round(start + i * step, 3),
            end=round(start + (i + 1) * step - 0.05, 3),
            text=" " + tok,
            probability=0.8,
            speaker=speaker,
        )
        for i, tok in enumerate(text.split())
    ]
    return StitchedSegment(
        start=words[0].start, end=words[-1].end, text=text, speaker=speaker, words=words
    )


@pytest.fixture
def result() -> JobResult:
    s0 = _segment(0.5, LONG, "SPEAKER_00")  # ~18 s: several cues
    s1 = _segment(s0.end + 0.3, "Right, and did it work?", "SPEAKER_01")
    s2 = StitchedSegment(
        start=s1.end + 0.5, end=s1.end + 16.5, text=NO_WORDS, speaker="SPEAKER_00", words=[]
    )
    s3 = _segment(s2.end + 0.2, "Eventually it did.", "SPEAKER_01")
    segments = [s0, s1, s2, s3]
    turns = [SpeakerTurn(start=s.start, end=s.end, speaker=s.speaker) for s in segments]
    return JobResult(
        duration=s3.end + 1.0,
        language="en",
        speakers=["SPEAKER_00", "SPEAKER_01"],
        segments=segments,
        turns=turns,
    )


@pytest.fixture
def empty() -> JobResult:
    return JobResult(duration=3.0, language=None, speakers=[], segments=[], turns=[])


_TIME = r"(\d{2}):(\d{2}):(\d{2})[,.](\d{3})"


def _seconds(h: str, m: str, s: str, ms: str) -> float:
    return int(h) * 3600 + int(m) * 60 + int(s) + int(ms) / 1000


def _parse_srt(body: str) -> list[tuple[int, float, float, list[str]]]:
    out = []
    for block in body.strip("\n").split("\n\n") if body.strip() else []:
        number, times, *lines = block.split("\n")
        m = re.fullmatch(f"{_TIME} --> {_TIME}", times)
        assert m, times
        g = m.groups()
        out.append((int(number), _seconds(*g[:4]), _seconds(*g[4:]), lines))
    return out


def _words(text: str) -> list[str]:
    return re.sub(r"\[SPEAKER_\d+\]|<v [^>]+>", " ", text).split()


def test_srt_cues_are_short_numbered_and_labelled(result: JobResult):
    body, media_type = render_job(result, "srt")
    assert media_type.startswith("application/x-subrip")
    parsed = _parse_srt(body)
    assert [n for n, *_ in parsed] == list(range(1, len(parsed) + 1))
    assert len(parsed) > len(result.segments)  # long segments were split
    prev_end = 0.0
    for _, start, end, lines in parsed:
        assert prev_end <= start < end
        assert end - start <= 7.0 + 1e-9
        assert 1 <= len(lines) <= 2
        assert all(len(line) <= 42 for line in lines), lines
        label = re.match(r"\[(SPEAKER_\d\d)\] ", lines[0])
        assert label, lines
        # The cue lies inside one segment of its own speaker: it spans no other speaker.
        assert any(
            s.speaker == label.group(1) and s.start - 1e-3 <= start and end <= s.end + 1e-3
            for s in result.segments
        ), (start, end, lines)
        prev_end = end
    # Splitting loses, duplicates and reorders no word.
    said = [w for _, _, _, lines in parsed for w in _words(" ".join(lines))]
    assert said == result.text.split()


def test_cues_split_at_word_times_and_proportionally(result: JobResult):
    cs = cues(result)
    assert all(c.speaker in ("SPEAKER_00", "SPEAKER_01") for c in cs)
    word_ends = {w.end for s in result.segments for w in s.words}
    starts = {w.start for s in result.segments for w in s.words}
    first = [c for c in cs if result.segments[0].start <= c.start < result.segments[0].end]
    assert len(first) >= 3
    assert all(c.start in starts and c.end in word_ends for c in first)
    # The segment without words is spread over its whole span, not crammed into one cue.
    s2 = result.segments[2]
    inside = [c for c in cs if s2.start <= c.start < s2.end]
    assert len(inside) >= 3
    assert inside[0].start == pytest.approx(s2.start) and inside[-1].end == pytest.approx(s2.end)
    assert " ".join(c.text for c in inside) == NO_WORDS


def test_cue_limits_are_parameters(result: JobResult):
    cs = cues(result, max_s=3.0, max_chars=40)
    assert all(c.end - c.start <= 3.0 + 1e-9 for c in cs)
    assert len(cs) > len(cues(result))


def test_overlapping_and_degenerate_segments_still_give_ordered_cues():
    a = _segment(0.0, "one two three four", "A")
    b = _segment(1.0, "five six", "B")  # overlaps a
    c = StitchedSegment(start=2.5, end=2.5, text="blip", speaker="A", words=[])
    long_word = StitchedSegment(
        start=3.0,
        end=13.0,
        text="Mmmmmmm",
        speaker="B",
        words=[StitchedWord(start=3.0, end=13.0, text=" Mmmmmmm", probability=0.5)],
    )
    r = JobResult(
        duration=14, language="en", speakers=["A", "B"], segments=[a, b, c, long_word], turns=[]
    )
    cs = cues(r)
    for prev, cur in itertools.pairwise(cs):
        assert prev.end <= cur.start
    assert all(c.end > c.start and c.end - c.start <= 7.0 for c in cs)
    assert cs[-1].text == "Mmmmmmm"


def test_unspaced_text_wraps_within_line_limits():
    text = "今日は良い天気ですね" * 12
    seg = StitchedSegment(start=0.0, end=6.0, text=text, speaker="SPEAKER_00", words=[])
    r = JobResult(duration=6, language="ja", speakers=["SPEAKER_00"], segments=[seg], turns=[])
    parsed = _parse_srt(render_job(r, "srt")[0])
    assert all(len(lines) <= 2 and all(len(x) <= 42 for x in lines) for *_, lines in parsed)
    assert "".join(c.text for c in cues(r)) == text


def test_vtt_has_header_and_voice_tags(result: JobResult):
    body, media_type = render_job(result, "vtt")
    assert media_type.startswith("text/vtt")
    assert body.startswith("WEBVTT\n\n")
    blocks = body.strip().split("\n\n")[1:]
    assert len(blocks) == len(cues(result))
    for block in blocks:
        times, first, *_ = block.split("\n")
        assert re.fullmatch(r"\d{2}:\d{2}:\d{2}\.\d{3} --> \d{2}:\d{2}:\d{2}\.\d{3}", times)
        assert re.match(r"<v SPEAKER_0[01]>\S", first)
    said = [w for b in blocks for w in _words(" ".join(b.split("\n")[1:]))]
    assert said == result.text.split()


def test_vtt_escapes_markup():
    seg = _segment(0.0, "x < y & a -> b", "SPEAKER_00")
    r = JobResult(duration=5, language="en", speakers=[], segments=[seg], turns=[])
    body = render_job(r, "vtt")[0]
    assert "x &lt; y &amp; a -&gt; b" in body and "->" not in body.replace(" --> ", "")


def test_without_speakers_no_labels(result: JobResult):
    plain = result.model_copy(
        update={
            "speakers": [],
            "turns": [],
            "segments": [s.model_copy(update={"speaker": None}) for s in result.segments],
        }
    )
    assert "[" not in render_job(plain, "srt")[0]
    assert "<v " not in render_job(plain, "vtt")[0]
    txt = render_job(plain, "txt")[0]
    assert txt.splitlines() == [s.text for s in result.segments]


def test_txt_has_a_paragraph_per_speaker_turn(result: JobResult):
    segments = [*result.segments]
    # A second sentence of the same speaker, and one without a speaker, join the paragraph.
    segments.insert(2, _segment(result.segments[1].end + 0.1, "Tell me.", "SPEAKER_01"))
    segments.insert(3, _segment(result.segments[1].end + 0.3, "Hm.", None))
    body, media_type = render_job(result.model_copy(update={"segments": segments}), "txt")
    assert media_type.startswith("text/plain")
    assert body.split("\n\n") == [
        f"SPEAKER_00: {LONG}",
        "SPEAKER_01: Right, and did it work? Tell me. Hm.",
        f"SPEAKER_00: {NO_WORDS}",
        "SPEAKER_01: Eventually it did.\n",
    ]


def test_rttm_round_trips_through_pyannote(result: JobResult, tmp_path):
    body, _ = render_job(result, "rttm", uri="my meeting 01")
    path = tmp_path / "out.rttm"
    path.write_text(body)
    loaded = load_rttm(str(path))
    assert list(loaded) == ["my_meeting_01"]
    expected = Annotation(uri="my_meeting_01")
    for i, t in enumerate(result.turns):
        expected[Segment(round(t.start, 3), round(t.end, 3)), i] = t.speaker
    got = loaded["my_meeting_01"]
    assert [(round(s.start, 3), round(s.end, 3), lbl) for s, _, lbl in got.itertracks(True)] == [
        (round(s.start, 3), round(s.end, 3), lbl) for s, _, lbl in expected.itertracks(True)
    ]
    assert all(len(line.split()) == 10 for line in body.splitlines())


def test_job_json_is_the_result(result: JobResult):
    body, media_type = render_job(result, "json")
    assert media_type == "application/json"
    assert JobResult.model_validate_json(body) == result


def test_openai_json_and_text(result: JobResult):
    body, media_type = render_openai(result, "json")
    assert media_type == "application/json"
    assert Transcription.model_validate(json.loads(body)).text == result.text
    body, media_type = render_openai(result, "text")
    assert media_type.startswith("text/plain") and body == result.text + "\n"
    assert render_openai(result, "srt")[0] == render_job(result, "srt")[0]
    assert render_openai(result, "vtt")[0] == render_job(result, "vtt")[0]


@pytest.mark.parametrize(
    ("granularities", "has_segments", "has_words"),
    [(("segment",), True, False), (("word",), False, True), (("word", "segment"), True, True)],
)
def test_openai_verbose_json(result: JobResult, granularities, has_segments, has_words):
    with pytest.raises(pydantic.ValidationError):  # the client's models do validate
        TranscriptionVerbose.model_validate({"text": "x"})
    raw = json.loads(render_openai(result, "verbose_json", granularities)[0])
    v = TranscriptionVerbose.model_validate(raw)
    assert raw["task"] == "transcribe"
    assert v.language == "english" and v.duration == result.duration and v.text == result.text
    assert (v.segments is not None) == has_segments and (v.words is not None) == has_words
    if has_segments:
        assert [(s.id, s.start, s.end, s.text) for s in v.segments] == [
            (i, s.start, s.end, s.text) for i, s in enumerate(result.segments)
        ]
        assert all(-1.0 < s.avg_logprob < 0 for s in v.segments[:2])  # p = 0.8
        assert all(s.compression_ratio > 0 for s in v.segments)
    if has_words:
        assert v.words[0].word == LONG.split()[0]  # no leading space
        assert len(v.words) == sum(len(s.words) for s in result.segments)


def test_openai_diarized_json(result: JobResult):
    raw = json.loads(render_openai(result, "diarized_json")[0])
    d = TranscriptionDiarized.model_validate(raw)
    assert d.task == "transcribe" and d.text == result.text
    assert [(s.speaker, s.text) for s in d.segments] == [
        (s.speaker, s.text) for s in result.segments
    ]
    assert len({s.id for s in d.segments}) == len(d.segments)
    assert all(s.type == "transcript.text.segment" for s in d.segments)


def test_language_falls_back_to_the_code(result: JobResult):
    r = result.model_copy(update={"language": "xx"})
    assert json.loads(render_openai(r, "verbose_json")[0])["language"] == "xx"


def test_empty_result_renders_valid_empty_documents(empty: JobResult, tmp_path):
    assert cues(empty) == []
    assert render_job(empty, "srt")[0] == ""
    assert render_job(empty, "vtt")[0].strip() == "WEBVTT"
    assert render_job(empty, "txt")[0] == ""
    assert JobResult.model_validate_json(render_job(empty, "json")[0]) == empty
    path = tmp_path / "empty.rttm"
    path.write_text(render_job(empty, "rttm")[0])
    assert load_rttm(str(path)) == {}
    assert render_openai(empty, "text")[0] == "\n"
    assert Transcription.model_validate(json.loads(render_openai(empty, "json")[0])).text == ""
    v = TranscriptionVerbose.model_validate(
        json.loads(render_openai(empty, "verbose_json", ("word", "segment"))[0])
    )
    assert v.segments == [] and v.words == [] and v.text == ""
    d = TranscriptionDiarized.model_validate(json.loads(render_openai(empty, "diarized_json")[0]))
    assert d.segments == [] and d.text == ""


def test_every_format_renders(result: JobResult):
    for fmt in JOB_FORMATS:
        assert render_job(result, fmt)[0]
    for fmt in OPENAI_FORMATS:
        assert render_openai(result, fmt)[0]


def test_unknown_format_names_the_allowed_ones(result: JobResult):
    with pytest.raises(ValueError, match="json, srt, vtt, txt, rttm"):
        render_job(result, "docx")
    with pytest.raises(ValueError, match="verbose_json, diarized_json"):
        render_openai(result, "txt")
    with pytest.raises(ValueError, match="granularities"):
        render_openai(result, "verbose_json", ("token",))
