"""Many languages through the real stack: the bundled multilingual base model, a language per
window of speech in a meeting of real voices speaking English, French and Italian, the
language validation, and OpenAI-compatible translation.

The suite's app serves tiny.en as its default and base beside it (tests/conftest.py), so
these tests name base; serve_config.yaml makes base the default.

The meeting's voices are the tune voices (tests/realvoices.py); the held-out voices' numbers
come from bench/multilingual.py.
"""

from __future__ import annotations

import re

import numpy as np
import pytest

from tests import jobclient
from tests.conftest import JFK
from tests.multilingual import (
    language_scores,
    language_time_share,
    speech_transcribed,
    words_by_language,
)
from tests.multilingual import wer as language_wer
from tests.realvoices import (
    LANGUAGE,
    cached_meeting,
    texts_by_language,
    turn_languages,
    voice_prompts,
    wav_bytes,
)

SR = 16_000
VOICES = ["en_allison", "fr_june", "it_carlo"]
# Issue 20's target for transcription-only jobs, by speech time: the 6 min tune meeting went
# from 0.846 to 0.996 when each stretch of speech's language was probed (BENCHMARKS 9g).
MIN_TRANSCRIPTION_ONLY_SHARE = 0.9


@pytest.fixture(scope="module")
def meeting(tmp_path_factory):
    """2.5 min of three people taking turns, each in their own language."""
    rec = cached_meeting(VOICES, 2.5, seed=3)
    return rec, rec.write_wav(tmp_path_factory.mktemp("ml") / "meeting.wav")


@pytest.fixture(scope="module")
def meeting_result(serve_url, meeting):
    import httpx

    _, path = meeting
    with httpx.Client(base_url=serve_url, timeout=120) as http:
        job_id = jobclient.submit(http, path, diarize=True, model="base")
        body = jobclient.wait_done(http, job_id)
        assert body["status"] == "completed", body
        return body, jobclient.result(http, job_id)


def _prompts_alike(voice: str, names: list[str]) -> np.ndarray:
    gap = np.zeros(SR // 2, np.float32)
    by_name = {p.name: p for p in voice_prompts(voice)}
    return np.concatenate([x for n in names for x in (by_name[n].audio, gap)])


def test_models_lists_every_served_model(http):
    ids = [m["id"] for m in http.get("/v1/models").json()["data"]]
    assert ids == ["whisper-1", "tiny.en", "base"]


def test_each_segment_speaks_its_own_language(meeting, meeting_result):
    rec, _ = meeting
    body, result = meeting_result
    share, scored = language_scores(result["segments"], turn_languages(rec))
    assert scored >= 20, scored
    assert share >= 0.9, share
    # Word-bounded segments leave turn edges out: 0.933 measured (docs/BENCHMARKS.md 9e).
    assert speech_transcribed(result["segments"], turn_languages(rec, speech=True)) >= 0.9
    assert set(result["languages"]) == {"en", "fr", "it"}
    assert result["language"] in {"en", "fr", "it"}
    # Turns take the language of their words: each speaker's turns are in their language.
    voice_of = {}
    for turn in result["turns"]:
        if turn["language"] is None:
            continue
        mid = (turn["start"] + turn["end"]) / 2
        near = min(rec.turn_spans, key=lambda t: 0 if t[0] <= mid <= t[1] else abs(t[0] - mid))
        voice_of.setdefault(turn["speaker"], []).append(turn["language"] == LANGUAGE[near[2]])
    right = [ok for oks in voice_of.values() for ok in oks]
    assert sum(right) >= 0.9 * len(right) > 0
    assert body["options"]["task"] == "transcribe" and body["options"]["model"] == "base"


STEPS = ("cut", "hint", "settle")  # the language pass's decisions (jobs/pipeline/language_pass.py)


def _pass_state(app_settings, job_id: str) -> tuple[dict, list[str]]:
    """The job's language-pass hash and its transcription calls, read in one transaction."""
    key = f"{app_settings.redis_key_prefix}job:{job_id}"
    with jobclient.redis_client(app_settings).pipeline(transaction=True) as pipe:
        pipe.hgetall(f"{key}:lang")
        pipe.hkeys(f"{key}:calls")
        lang, fields = pipe.execute()
    return lang, [f for f in fields if f.split("#", 1)[0].endswith(":t")]


def test_manager_killed_during_the_language_pass_redoes_only_what_was_in_flight(
    http, app_settings, tmp_path
):
    """Issue 22 item 6 through the real app: the manager dies once the pass has redone some
    segments and has more to do; the job resumes on the next manager, repeating no finished
    step or segment. Only the calls in flight at the kill are made again. A 2 min meeting in
    short segments, so the pass has more segments to redo than fit in flight at once (they
    share a batch and return together)."""
    import json
    import time

    rec = cached_meeting(VOICES, 2, seed=4)
    path = rec.write_wav(tmp_path / "meeting.wav")
    job_id = jobclient.submit(http, path, diarize=True, model="base", segment_s=10)
    deadline = time.monotonic() + 600
    while True:
        lang, t_calls = _pass_state(app_settings, job_id)
        marks = [f for f in lang if f not in STEPS]
        planned = sum(len(json.loads(lang[s])) for s in STEPS if s in lang)
        if marks and len(marks) < planned:
            jobclient.kill_replica("JobManager")
            # What the dead manager left: its next one takes the job when the lease (15 s)
            # lapses, and nothing writes meanwhile.
            time.sleep(1.0)
            lang, t_calls = _pass_state(app_settings, job_id)
            marks = [f for f in lang if f not in STEPS]
            break
        status = http.get(f"/v1/jobs/{job_id}").json()["status"]
        assert status not in jobclient.TERMINAL, ("no kill landed", marks, planned)
        assert time.monotonic() < deadline, "the language pass never started"
        time.sleep(0.05)
    body = jobclient.wait_done(http, job_id, timeout_s=600)
    assert body["status"] == "completed", body
    segments = body["segments_total"]
    # Calls dispatched at the kill beyond the first transcriptions and the finished redos:
    in_flight = len(t_calls) - segments - len(marks)
    assert 0 <= in_flight <= app_settings.max_inflight_segments, (len(t_calls), marks)
    lang, t_calls = _pass_state(app_settings, job_id)
    redone = len(t_calls) - segments - len([f for f in lang if f not in STEPS])
    print(f"killed with {len(marks)}/{planned} redone, {in_flight} in flight; {redone} redone")
    # A pass that restarted from scratch would redo the finished ones too.
    assert redone <= in_flight, (redone, in_flight, len(marks))
    # And every turn still speaks its language.
    share, _ = language_scores(jobclient.result(http, job_id)["segments"], turn_languages(rec))
    assert share >= 0.9, share


def test_a_transcription_only_job_finds_each_language(http, meeting):
    """Without diarization the job asks the diarizer where the voice changes (no speakers),
    probes each stretch of speech's language and cuts its language windows at both; every
    segment says how sure its language is."""
    rec, path = meeting
    job_id = jobclient.submit(http, path, diarize=False, model="base")
    body = jobclient.wait_done(http, job_id)
    assert body["status"] == "completed", body
    result = jobclient.result(http, job_id)
    share, scored = language_time_share(result["segments"], turn_languages(rec, speech=True))
    assert scored >= 100, scored
    assert share >= MIN_TRANSCRIPTION_ONLY_SHARE, share
    # Before the probe, Allison's short English turns all came out French in one run.
    assert set(result["languages"]) == {"en", "fr", "it"}, result["languages"]
    assert result["speakers"] == []
    # Windows holding two languages lost whole turns: 0.676 of the speech was transcribed,
    # 0.920 since their unheard speech is decoded again (deployments/core/unheard.py).
    assert speech_transcribed(result["segments"], turn_languages(rec, speech=True)) >= 0.88
    probabilities = [s["language_probability"] for s in result["segments"]]
    assert all(0.0 <= p <= 1.0 for p in probabilities), probabilities
    unsure = [s for s in result["segments"] if s["language_probability"] < 0.7]
    assert bool(unsure) == any("language_probability" in n for n in result["notes"])


def test_each_language_is_transcribed_as_well_as_on_its_own(meeting, meeting_result, models_dir):
    """WER per language vs faster-whisper's batched pipeline (same model) on that language's
    turns alone, in this run."""
    from faster_whisper import BatchedInferencePipeline, WhisperModel

    from deployments.models.model_store import resolve_whisper

    rec, _ = meeting
    _, result = meeting_result
    model = WhisperModel(resolve_whisper("base", models_dir, False), compute_type="int8")
    pipeline = BatchedInferencePipeline(model)
    hyp = words_by_language(result["segments"], turn_languages(rec))
    gap = np.zeros(SR // 2, np.float32)
    pooled = {"job": 0.0, "batched": 0.0, "words": 0}
    for lang, ref in texts_by_language(rec).items():
        alone = np.concatenate(
            [
                x
                for s, e, v in rec.turn_spans
                if LANGUAGE[v] == lang
                for x in (rec.audio[int(s * SR) : int(e * SR)], gap)
            ]
        )
        segments, _ = pipeline.transcribe(alone, batch_size=8)
        batched = language_wer(ref, " ".join(s.text for s in segments), lang)
        job = language_wer(ref, hyp.get(lang, ""), lang)
        # ~40-70 words a language here: one word is 1.5-2.5 points. The +1 point target is
        # measured by bench/multilingual.py on longer meetings; this catches a language gone
        # wrong (decoded in another one: WER 0.6-1.0).
        assert job <= batched + 0.10, (lang, job, batched)
        words = len(ref.split())
        pooled["job"] += job * words
        pooled["batched"] += batched * words
        pooled["words"] += words
    assert pooled["job"] <= pooled["batched"] + 0.04 * pooled["words"], pooled


def test_a_given_language_is_used_everywhere(http, tmp_path):
    path = tmp_path / "fr.wav"
    path.write_bytes(wav_bytes(_prompts_alike("fr_june", ["vm-goodbye", "conf-getpin"])))
    job_id = jobclient.submit(http, path, diarize=False, language="fr", model="base")
    assert jobclient.wait_done(http, job_id)["status"] == "completed"
    result = jobclient.result(http, job_id)
    assert result["languages"] == ["fr"] and result["language"] == "fr"
    assert result["segments"] and {s["language"] for s in result["segments"]} == {"fr"}


def test_a_turn_base_looped_on_comes_back_as_its_words(http, tmp_path):
    """The French turn Whisper base's beam search went round on ("3, 2, 1, 2, 1, ...",
    tests/test_loop_fallback.py) as a job of its own: the replica decodes it again."""
    from deployments.models.loop_fallback import compression_ratio
    from tests.test_loop_fallback import looping_turn

    path = tmp_path / "turn.wav"
    path.write_bytes(wav_bytes(looping_turn()))
    job_id = jobclient.submit(http, path, diarize=False, language="fr", model="base")
    assert jobclient.wait_done(http, job_id)["status"] == "completed"
    text = " ".join(s["text"] for s in jobclient.result(http, job_id)["segments"])
    assert 2 <= len(text.split()) <= 15 and compression_ratio(text) < 2.4, text


@pytest.mark.parametrize(
    ("form", "named"),
    [
        ({"language": "zz", "model": "base"}, "model 'base'; use one of: af, am, ar"),
        ({"language": "fr", "model": "tiny.en"}, "use one of: en"),
        ({"language": "fr", "model": "whisper-1"}, "model 'tiny.en'; use one of: en"),
        ({"task": "translate", "model": "tiny.en"}, "English-only"),
        ({"task": "translate"}, "English-only"),  # whisper-1 is this app's tiny.en
        ({"model": "small"}, "not served"),
    ],
)
def test_invalid_language_or_model_gets_a_4xx_naming_the_choices(http, form, named):
    jfk_wav = JFK.read_bytes()
    for url in ("/v1/jobs", "/v1/audio/transcriptions"):
        data = dict(form)
        if url.endswith("transcriptions") and data.pop("task", None):
            url = "/v1/audio/translations"
        r = http.post(url, files={"file": ("a.wav", jfk_wav)}, data=data)
        # The jobs API's documented 422; OpenAI's 400 on its routes (issue 22 item 11).
        assert r.status_code == (422 if url == "/v1/jobs" else 400), r.text
        assert named in r.json()["error"]["message"], r.text


# French prompts and the words (stems) any English translation of them must hold: the nouns
# and the one adjective that carry their meaning.
TRANSLATED = {
    "conf-getpin": ("code", "conferenc"),  # ... le code d'accès de la conférence ...
    "conf-onlyperson": ("only", "conferenc"),  # ... le seul participant à cette conférence
    "vm-nomore": ("messag",),  # Il n'y a plus de messages.
}


def _missing_stems(text: str) -> list[str]:
    words = re.findall(r"[a-z]+", text.lower())
    wanted = {stem for stems in TRANSLATED.values() for stem in stems}
    return sorted(stem for stem in wanted if not any(w.startswith(stem) for w in words))


def test_openai_client_translates_french_to_english(serve_url):
    from openai import OpenAI

    audio = _prompts_alike("fr_june", list(TRANSLATED))
    client = OpenAI(base_url=f"{serve_url}/v1", api_key="unused", timeout=300)
    text = client.audio.translations.create(
        model="base", file=("fr.wav", wav_bytes(audio)), response_format="text"
    )
    assert not _missing_stems(text), text
    assert not re.search(r"\b(le|la|les|vous|est)\b", text.lower()), text  # not French
    verbose = client.audio.translations.create(
        model="base", file=("fr.wav", wav_bytes(audio)), response_format="verbose_json"
    )
    assert verbose.language == "english" and verbose.segments
    assert not _missing_stems(verbose.text), verbose.text


def test_jobs_translate_a_meeting_with_speakers(http, meeting, tmp_path):
    rec, _ = meeting
    path = tmp_path / "m.wav"  # its first 67 s: each voice speaks, French and Italian at length
    path.write_bytes(wav_bytes(rec.audio[: 67 * SR]))
    job_id = jobclient.submit(http, path, diarize=True, task="translate", model="base")
    assert jobclient.wait_done(http, job_id)["status"] == "completed"
    result = jobclient.result(http, job_id)
    assert result["task"] == "translate" and len(result["speakers"]) >= 2
    # The French and Italian turns come back in English; their language stays what was said.
    spoken = {s["language"] for s in result["segments"] if s["text"]}
    assert {"fr", "it"} <= spoken
    # What was said in French reads as English: translated, not transcribed.
    french = " ".join(s["text"].lower() for s in result["segments"] if s["language"] == "fr")
    english = len(re.findall(r"\b(the|you|to|your|is|press|of|and|not)\b", french))
    left = len(re.findall(r"\b(le|la|les|de|des|et|vous|pour|est|une|pas|sur)\b", french))
    assert english >= 10 and left <= 0.2 * english, french
    srt = http.get(f"/v1/jobs/{job_id}/result", params={"format": "srt"}).text
    assert "-->" in srt


def test_cli_picks_the_model_and_translates(serve_url, tmp_path):
    import json

    from speech_cluster_client.cli import main

    path = tmp_path / "appel.wav"
    path.write_bytes(wav_bytes(_prompts_alike("fr_june", list(TRANSLATED))))
    out = tmp_path / "out"
    base = ["--url", serve_url, "-q", "-o", str(out), "-f", "json"]
    cli = ["transcribe", str(path), "--model", "base", "--translate", "--no-diarize"]
    assert main([*cli, *base]) == 0
    result = json.loads((out / "appel.json").read_text())
    assert result["task"] == "translate" and result["languages"] == ["fr"]
    assert not _missing_stems(" ".join(s["text"] for s in result["segments"]))
    # tiny.en cannot be asked for French: the CLI reports the 422 and fails.
    assert main(["transcribe", str(path), "--model", "tiny.en", "--language", "fr", *base]) != 0
    assert main(["transcribe", str(path), "--model", "tiny.en", "--translate", *base]) != 0
