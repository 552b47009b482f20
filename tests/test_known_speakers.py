"""Known speakers through the real stack: enroll real voices, name them in a long recording.

Real Ray Serve, Redis and weights; real voices from Debian's prompt packages. Voices are
enrolled from prompts the recording never uses (tests/knownvoices.py). The recording holds two
enrolled held-out voices (never used to calibrate the threshold), one voice never enrolled,
and a third enrolled person is absent.
"""

from __future__ import annotations

import base64
import json
import time
from pathlib import Path

import numpy as np
import pytest

from tests.jobclient import TERMINAL
from tests.knownvoices import enrollment_samples, naming_rates
from tests.realvoices import SAMPLE_RATE, cached_meeting, wav_bytes

pytestmark = [pytest.mark.ray, pytest.mark.models]

VOICES = ["ru", "fr_armelle", "it_menardi"]  # held out from calibration; it_menardi unenrolled
ENROLLED = {"ru": "Olga", "fr_armelle": "Armelle", "en_allison": "Allison"}  # Allison absent


@pytest.fixture(scope="module")
def meeting(tmp_path_factory):
    rec = cached_meeting(VOICES, 2.5, seed=31)
    path = rec.write_wav(tmp_path_factory.mktemp("known") / "meeting.wav")
    return rec, path


def _enroll(http, name: str, samples: list[np.ndarray]):
    files = [
        ("file", (f"{name}-{i}.wav", wav_bytes(s), "audio/wav")) for i, s in enumerate(samples)
    ]
    return http.post("/v1/speakers", data={"name": name}, files=files)


@pytest.fixture(scope="module")
def enrolled(serve_url, meeting):
    import httpx

    rec, _ = meeting
    ids = {}
    with httpx.Client(base_url=serve_url, timeout=120) as http:
        for voice, name in ENROLLED.items():
            r = _enroll(http, name, enrollment_samples(voice, rec, seed=3))
            assert r.status_code == 201, r.text
            ids[name] = r.json()["id"]
    yield ids
    with httpx.Client(base_url=serve_url, timeout=120) as http:
        for speaker_id in ids.values():
            http.delete(f"/v1/speakers/{speaker_id}")


def _run(http, path: Path, **form) -> dict:
    with path.open("rb") as fh:
        r = http.post("/v1/jobs", files={"file": (path.name, fh)}, data=form)
    assert r.status_code == 202, r.text
    job_id = r.json()["id"]
    deadline = time.monotonic() + 600
    while (body := http.get(f"/v1/jobs/{job_id}").json())["status"] not in TERMINAL:
        assert time.monotonic() < deadline
        time.sleep(0.5)
    assert body["status"] == "completed", body
    return body


def test_enrolled_voices_are_named_and_others_are_not(http, meeting, enrolled):
    rec, path = meeting
    job = _run(http, path, speakers=[*ENROLLED.values()])
    assert {k["name"] for k in job["options"]["known_speakers"]} == set(ENROLLED.values())
    assert all("embedding" not in k for k in job["options"]["known_speakers"])
    result = http.get(f"/v1/jobs/{job['id']}/result").json()
    turns = [(t["start"], t["end"], t["speaker"]) for t in result["turns"]]
    rates = naming_rates(rec, turns, ENROLLED)
    print(f"named right {rates.right:.4f}, never-enrolled named {rates.impostor:.4f}")
    # Each person's voice carries their name, the unenrolled voice an anonymous label, and
    # the absent person's name appears nowhere.
    assert rates.majority == {
        "ru": "Olga",
        "fr_armelle": "Armelle",
        "it_menardi": rates.majority["it_menardi"],
    }
    assert rates.majority["it_menardi"].startswith("SPEAKER_")
    assert rates.absent_named == []
    # By speech time. What is left after correct naming is the diarizer's confusion of
    # short pieces (0.3-0.4 s given to another voice); bench/known_speakers.py measures the
    # targets (>= 98 %, <= 2 %) on more held-out speech (docs/BENCHMARKS.md).
    assert rates.right >= 0.95, rates.per_voice
    assert rates.impostor <= 0.05, rates.per_voice
    assert "Allison" not in json.dumps(result)
    matches = {m["speaker"]: m for m in result["speaker_matches"]}
    assert matches["Olga"]["speaker_id"] == enrolled["Olga"] and matches["Olga"]["similarity"] > 0.6
    # Names flow into every format.
    for fmt, needle in (
        ("srt", "Olga"),
        ("vtt", "<v Armelle>"),
        ("rttm", " Olga "),
        ("txt", "Armelle"),
    ):
        body = http.get(f"/v1/jobs/{job['id']}/result", params={"format": fmt}).text
        assert needle in body, fmt
    words = [w for s in result["segments"] for w in s["words"]]
    assert {w["speaker"] for w in words} >= {"Olga", "Armelle"}

    # Name a voice after the fact: the anonymous speaker of this job becomes a known one.
    anonymous = [s for s in result["speakers"] if s.startswith("SPEAKER_")]
    assert anonymous
    r = http.post(
        "/v1/speakers", data={"name": "Menardi", "job_id": job["id"], "speaker": anonymous[0]}
    )
    assert r.status_code == 201, r.text
    try:
        again = _run(http, path, speakers=["Olga", "Armelle", "Menardi"])
        names = http.get(f"/v1/jobs/{again['id']}/result").json()["speakers"]
        assert {"Olga", "Armelle", "Menardi"} <= set(names)
    finally:
        http.delete(f"/v1/speakers/{r.json()['id']}")


def test_bad_samples_get_a_4xx_that_names_the_problem(http, meeting, enrolled):
    rec, _ = meeting
    one = enrollment_samples("it_carlo", rec, samples=2, min_s=3.0, max_s=5.0, seed=5)
    other = enrollment_samples("en_allison", rec, samples=1, min_s=3.0, max_s=5.0, seed=6)[0]
    cases = {
        "too short": ([one[0][: int(0.6 * SAMPLE_RATE)]], 422, "sample_too_short"),
        "silence": ([np.zeros(3 * SAMPLE_RATE, np.float32)], 422, "no_speech"),
        "two voices": (
            [np.concatenate([one[0], np.zeros(4000, np.float32), other])],
            422,
            "two_voices",
        ),
    }
    for label, (samples, status, code) in cases.items():
        r = _enroll(http, f"Carlo {label}", samples)
        assert (r.status_code, r.json()["error"]["code"]) == (status, code), (label, r.text)
        assert "Traceback" not in r.text
    r = http.post(
        "/v1/speakers",
        data={"name": "Olga"},
        files=[("file", ("o.wav", wav_bytes(one[0]), "audio/wav"))],
    )
    assert (r.status_code, r.json()["error"]["code"]) == (409, "name_taken")
    r = http.post("/v1/speakers", data={"name": "x"}, files=[("file", ("n.wav", b"not audio"))])
    assert r.status_code == 422 and "file" in r.json()["error"]["message"]
    r = http.post(
        "/v1/jobs", files={"file": ("a.wav", wav_bytes(one[0]))}, data={"speakers": "Nobody"}
    )
    assert (r.status_code, r.json()["error"]["code"]) == (422, "unknown_speaker")
    # Nothing was enrolled by the refusals, and the list shows no voiceprints.
    listed = http.get("/v1/speakers").json()["data"]
    assert sorted(s["name"] for s in listed) == sorted(ENROLLED.values())
    assert all("embedding" not in s for s in listed)
    one_id = enrolled["Olga"]
    assert http.get(f"/v1/speakers/{one_id}").json()["name"] == "Olga"


def test_openai_client_names_known_speakers_in_diarized_json(serve_url, meeting):
    from openai import OpenAI

    rec, path = meeting
    refs = {}
    for voice, name in (("ru", "agent"), ("fr_armelle", "customer")):
        sample = enrollment_samples(voice, rec, samples=1, min_s=5.0, seed=11)[0]
        refs[name] = "data:audio/wav;base64," + base64.b64encode(wav_bytes(sample)).decode()
    client = OpenAI(base_url=f"{serve_url}/v1", api_key="unused", timeout=600)
    with path.open("rb") as fh:
        result = client.audio.transcriptions.create(
            model="whisper-1",
            file=fh,
            response_format="diarized_json",
            known_speaker_names=list(refs),
            known_speaker_references=list(refs.values()),
        )
    speakers = {s.speaker for s in result.segments}
    assert {"agent", "customer"} <= speakers, speakers
    # Segments named after a reference fall in that person's turns.
    voice = {"agent": "ru", "customer": "fr_armelle"}
    named = inside = 0.0
    for seg in result.segments:
        if seg.speaker in voice:
            named += seg.end - seg.start
            inside += sum(
                max(0.0, min(seg.end, e) - max(seg.start, s))
                for s, e, v in rec.turn_spans
                if v == voice[seg.speaker]
            )
    assert inside >= 0.9 * named > 0


def test_cli_enrolls_lists_uses_and_removes_speakers(serve_url, meeting, tmp_path, capsys):
    from speech_cluster_client.cli import main

    rec, path = meeting
    samples = []
    for i, audio in enumerate(enrollment_samples("ru", rec, seed=21)):
        samples.append(tmp_path / f"ru-{i}.wav")
        samples[-1].write_bytes(wav_bytes(audio))
    base = ["--url", serve_url]
    assert main(["speakers", "add", "Natasha", *map(str, samples), *base]) == 0
    assert main(["speakers", "list", *base]) == 0
    assert "Natasha" in capsys.readouterr().out
    try:
        out = tmp_path / "out"
        code = main(
            [
                "transcribe",
                str(path),
                "--speaker",
                "Natasha",
                "-f",
                "txt",
                "-o",
                str(out),
                "-q",
                *base,
            ]
        )
        assert code == 0
        assert "Natasha" in (out / "meeting.txt").read_text()
    finally:
        assert main(["speakers", "rm", "Natasha", *base]) == 0
    assert "removed Natasha" in capsys.readouterr().out
    assert main(["speakers", "list", *base]) == 0
    assert "Natasha" not in capsys.readouterr().out
