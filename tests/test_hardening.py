"""Issue 11 regressions through the deployed app: real Ray Serve, Redis and weights.

Some cases plant a state in Redis that only a crash or an old bug could leave (a job that
already crashed the manager N times, checkpoints of another split), then let the real
manager meet it.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
import pytest
import soundfile

from deployments.core.schemas import SAMPLE_RATE, Transcription, TranscriptSegment, Word
from jobs.state.audio_files import AudioStorage
from jobs.state.job_store import JobStore
from jobs.state.records import JobOptions, JobRecord
from tests.conftest import JFK, JFK_TEXT, load_audio, wer
from tests.jobclient import (
    calls,
    jobs_created,
    kill_replica,
    manager,
    redis_client,
    replica_actors,
    result,
    submit,
    wait_done,
)
from tests.synth import meeting, write_wav
from tests.webhook_receiver import WebhookReceiver

pytestmark = [pytest.mark.ray, pytest.mark.models]


def plant_job(app_settings, audio: Path, checkpoints: dict[str, str] | None = None, **fields):
    """Store a job the way the ingress would, with `fields` set on its record."""
    import uuid

    job_id = str(uuid.uuid4())

    async def go() -> None:
        store = JobStore(app_settings.redis_url, app_settings.redis_key_prefix)
        try:
            for field, payload in (checkpoints or {}).items():
                plan_key, part = field.rsplit(":", 1)
                await store.save_checkpoint(job_id, plan_key, part, payload)
            with audio.open("rb") as fh:
                path = AudioStorage(app_settings.resolved_storage_dir).save(job_id, fh)
            await store.create(JobRecord(id=job_id, audio_path=str(path), **fields))
        finally:
            await store.close()

    asyncio.run(go())
    manager().start_job.remote(job_id).result()
    return job_id


@pytest.fixture(scope="module")
def jfk_wav(tmp_path_factory) -> Path:
    return write_wav(load_audio(JFK), tmp_path_factory.mktemp("h") / "jfk.wav")


@pytest.fixture(scope="module")
def minute_wav(tmp_path_factory) -> Path:
    return write_wav(meeting(16, seed=41).audio, tmp_path_factory.mktemp("h") / "minute.wav")


# -- item 2: webhook SSRF at submit -------------------------------------------------------
@pytest.mark.parametrize(
    "url", ["http://127.0.0.1:6379/", "http://169.254.169.254/latest", "http://[::1]:8000/"]
)
def test_internal_webhook_urls_are_refused_at_submit(http, app_settings, jfk_wav, url):
    before = jobs_created(app_settings)
    with jfk_wav.open("rb") as fh:
        r = http.post("/v1/jobs", files={"file": fh}, data={"webhook_url": url})
    assert r.status_code == 422, r.text
    assert r.json()["error"]["code"] == "invalid_parameter"
    assert "webhook_allow" in r.json()["error"]["message"]
    assert jobs_created(app_settings) == before


# -- item 4: Redis down -> 503 with Retry-After, and service resumes -------------------
def test_redis_down_answers_503_with_retry_after(http, redis_server):
    redis_server.kill()
    try:
        r = http.get("/v1/jobs")
        assert r.status_code == 503, r.text
        assert r.headers["Retry-After"].isdigit()
        assert r.json()["error"]["code"] == "unavailable"
        assert "Traceback" not in r.text and "Error" not in r.json()["error"]["message"]
        health = http.get("/healthz")
        assert health.status_code == 503 and health.headers["Retry-After"].isdigit()
    finally:
        redis_server.start()
    deadline = time.monotonic() + 30
    while http.get("/v1/jobs").status_code != 200:
        assert time.monotonic() < deadline
        time.sleep(0.5)


# -- item 6 + 12: a retried job gets a fresh budget; the janitor leaves its audio ---------
def test_retrying_a_timed_out_job_gets_a_fresh_budget_and_keeps_its_audio(
    http, app_settings, minute_wav
):
    stale = time.time() - app_settings.job_timeout_s - 3600  # ran out of time long ago
    job_id = plant_job(app_settings, minute_wav, started_at=stale, options=JobOptions(diarize=True))
    first = wait_done(http, job_id)
    assert first["status"] == "failed" and first["error"]["code"] == "job_timeout", first

    r = http.post(f"/v1/jobs/{job_id}/retry")
    assert r.status_code == 202, r.text
    client, prefix = redis_client(app_settings), app_settings.redis_key_prefix
    assert client.zscore(f"{prefix}jobs:finished", job_id) is None  # it is live again
    # As an old finish time would look to the janitor: it must not take a running job's audio.
    client.zadd(f"{prefix}jobs:finished", {job_id: 0})
    status = wait_done(http, job_id)
    assert status["status"] == "completed", status
    assert AudioStorage(app_settings.resolved_storage_dir).exists(job_id)
    assert result(http, job_id)["segments"]


# -- item 7: a job that keeps crashing the manager is failed, not resumed forever ---------
def test_a_job_interrupted_too_often_fails_with_a_message(http, app_settings, jfk_wav):
    crashes = app_settings.max_job_interruptions + 1
    job_id = plant_job(app_settings, jfk_wav, attempts=crashes)
    status = wait_done(http, job_id, timeout_s=60)
    assert status["status"] == "failed", status
    assert status["error"]["code"] == "job_interrupted"
    assert f"interrupted {crashes} times" in status["error"]["message"]
    assert calls(app_settings, job_id) == {}  # not run again


# -- item 8: checkpoints of another split are never stitched ------------------------------
def test_checkpoints_of_another_segment_plan_are_not_reused(http, app_settings, jfk_wav):
    bogus = Transcription(
        language="en",
        language_probability=1.0,
        duration=5.0,
        segments=[
            TranscriptSegment(
                start=0.0,
                end=1.0,
                text="BOGUS",
                words=[Word(start=0, end=1, text=" BOGUS", probability=1.0)],
            )
        ],
    ).model_dump_json()
    # An earlier run split the file elsewhere (and the pre-plan key format of index only).
    planted = {"0:0-80000:t": bogus, "0:t": bogus}
    job_id = plant_job(
        app_settings, jfk_wav, checkpoints=planted, options=JobOptions(diarize=False)
    )
    status = wait_done(http, job_id)
    assert status["status"] == "completed", status
    text = " ".join(s["text"] for s in result(http, job_id)["segments"])
    assert "BOGUS" not in text and wer(JFK_TEXT, text) <= 0.05, text
    made = calls(app_settings, job_id)
    assert len(made) == 1 and next(iter(made)).startswith("0:0-") and "0:0-80000:t" not in made


# -- item 9: a segment that gives up fails the job at once --------------------------------
def test_a_failed_segment_stops_the_rest_of_the_job(http, app_settings, tmp_path):
    audio = meeting(90, seed=8).audio.copy()
    audio[35 * SAMPLE_RATE : 36 * SAMPLE_RATE] = np.nan  # segment 3 cannot be transcribed
    path = tmp_path / "broken.wav"
    soundfile.write(path, audio, SAMPLE_RATE, subtype="FLOAT")
    total = len(audio) / SAMPLE_RATE / 15
    job_id = submit(http, path, diarize=False, segment_s=15)
    status = wait_done(http, job_id)
    assert status["status"] == "failed", status
    assert status["error"]["code"] == "input_rejected", status
    dispatched = {k.rsplit(":", 1)[0] for k in calls(app_settings, job_id)}
    # The in-flight window (6) past the bad segment at most, not the whole file.
    assert len(dispatched) <= 3 + app_settings.max_inflight_segments + 1 < total, dispatched
    # item 4: on the OpenAI path the same input is the caller's error, said in one line.
    with path.open("rb") as fh:
        r = http.post("/v1/audio/transcriptions", files={"file": fh})
    assert r.status_code == 400, r.text
    message = r.json()["error"]["message"]
    assert "non-finite" in message and "\n" not in message and "Traceback" not in message


# -- item 10: language is checked against the model ---------------------------------------
@pytest.mark.parametrize("language", ["zz", "fr"])
def test_a_language_the_model_lacks_is_a_4xx_naming_the_allowed_values(http, language):
    with JFK.open("rb") as fh:
        r = http.post("/v1/jobs", files={"file": fh}, data={"language": language})
    assert r.status_code == 422 and "use one of: en" in r.json()["error"]["message"], r.text
    with JFK.open("rb") as fh:
        r = http.post("/v1/audio/transcriptions", files={"file": fh}, data={"language": language})
    assert r.status_code == 400 and r.json()["error"]["param"] == "language"
    assert "use one of: en" in r.json()["error"]["message"], r.text


def test_a_bad_request_fails_alone_inside_a_transcriber_batch(jfk_audio):
    from ray import serve

    from deployments.core.schemas import TranscribeOptions

    handle = serve.get_deployment_handle("Transcriber", app_name="speech")
    options = [TranscribeOptions(language=x) for x in ("en", "zz", None, "en", "xx", None)]
    responses = [handle.transcribe.remote(jfk_audio, o) for o in options]
    outcomes = []
    for response in responses:
        try:
            outcomes.append(response.result(timeout_s=120))
        except Exception as exc:
            outcomes.append(exc)
    for option, outcome in zip(options, outcomes, strict=True):
        if option.language in ("zz", "xx"):
            assert "not one of this model's: en" in str(outcome), outcome
        else:
            assert wer(JFK_TEXT, outcome.text) <= 0.05, outcome


# -- item 11: concurrent submissions with one Idempotency-Key make one job ----------------
def test_concurrent_submissions_with_one_idempotency_key_make_one_job(
    serve_url, app_settings, jfk_wav
):
    before = jobs_created(app_settings)
    body = jfk_wav.read_bytes()

    def post(_: int) -> httpx.Response:
        with httpx.Client(base_url=serve_url, timeout=120) as client:
            return client.post(
                "/v1/jobs",
                files={"file": ("jfk.wav", body)},
                data={"diarize": "false"},
                headers={"Idempotency-Key": "race-1"},
            )

    with ThreadPoolExecutor(12) as pool:
        responses = list(pool.map(post, range(12)))
    assert all(r.status_code == 202 for r in responses), [r.text for r in responses]
    assert len({r.json()["id"] for r in responses}) == 1
    assert jobs_created(app_settings) == before + 1
    with httpx.Client(base_url=serve_url, timeout=120) as http:
        assert wait_done(http, responses[0].json()["id"])["status"] == "completed"


# -- item 3: the webhook event survives a manager restart --------------------------------
def test_a_pending_webhook_survives_a_manager_restart(http, app_settings, jfk_wav):
    receiver = WebhookReceiver()
    job_id = submit(http, jfk_wav, diarize=False, webhook_url=receiver.url)
    assert wait_done(http, job_id)["status"] == "completed"
    kill_replica("JobManager")  # the receiver is still down: the event waits in Redis
    with receiver:
        assert receiver.wait(lambda got: got, 90), "the event was lost"
        time.sleep(2)  # a repeat would show up here
    assert len(receiver.received) == 1, "the event was sent twice"
    (payload,) = receiver.payloads()
    assert payload["id"] == job_id and payload["event"] == "job.completed"


# -- issue 22 item 1: hostile webhook receivers ------------------------------------------
def test_hostile_webhook_receivers_delay_no_one_and_crash_nothing(http, app_settings, jfk_wav):
    """A receiver that streams an endless body and one that trickles its answer: another
    job's webhook still arrives at once, the manager is never replaced, and each hostile
    attempt is counted (before, the endless body grew the manager until it was killed and
    the uncounted event came back forever; the trickle held the one delivery loop)."""
    manager_before = replica_actors("JobManager")
    store = redis_client(app_settings)
    with (
        WebhookReceiver(mode="endless") as endless,
        WebhookReceiver(mode="trickle") as trickle,
        WebhookReceiver() as fine,
    ):
        hostile = [
            submit(http, jfk_wav, diarize=False, webhook_url=r.url) for r in (endless, trickle)
        ]
        for job_id in hostile:
            assert wait_done(http, job_id)["status"] == "completed"
        assert trickle.wait(lambda got: got, 30), "the trickling receiver was never called"
        job_id = submit(http, jfk_wav, diarize=False, webhook_url=fine.url)
        assert wait_done(http, job_id)["status"] == "completed"
        done_at = time.monotonic()
        assert fine.wait(lambda got: got, 10), "a hostile receiver held up another's event"
        assert time.monotonic() - done_at < 5
        entries = [
            json.loads(store.get(f"{app_settings.redis_key_prefix}job:{j}:webhook"))
            for j in hostile
        ]
    assert entries[0]["delivered"] and entries[0]["attempts"] == 1  # 200, body never read
    assert entries[1]["attempts"] >= 1
    assert replica_actors("JobManager") == manager_before, "the manager was replaced"


# -- issue 22 item 2: followers never lock the ingress ------------------------------------
def test_followers_never_lock_out_health_or_short_requests(
    http, app_settings, serve_url, minute_wav
):
    """70 clients follow one job (the ingress has 64 slots): at most max_streams_per_key
    streams are held, the rest get 429 with Retry-After at once, and /healthz and the job
    list still answer promptly. Before, every follower held a slot and the rest queued,
    /healthz behind them."""
    job_id = submit(http, minute_wav, diarize=True)  # runs long enough to follow
    stop = threading.Event()

    def follow(_: int) -> tuple[int, str | None]:
        timeout = httpx.Timeout(10.0, read=60.0)
        with (
            httpx.Client(base_url=serve_url, timeout=timeout) as c,
            c.stream("GET", f"/v1/jobs/{job_id}/events") as r,
        ):
            if r.status_code == 200:
                stop.wait(60)
            return r.status_code, r.headers.get("retry-after")

    with ThreadPoolExecutor(70) as pool:
        futures = [pool.submit(follow, i) for i in range(70)]
        try:
            time.sleep(3)
            refused = [f.result(timeout=20) for f in futures if f.done()]
            for path in ("/healthz", "/v1/jobs?limit=5"):
                t0 = time.monotonic()
                assert http.get(path, timeout=5).status_code == 200
                assert time.monotonic() - t0 < 5
        finally:
            stop.set()
        answers = [f.result(timeout=60) for f in futures]
    held = app_settings.max_streams_per_key
    assert sum(code == 200 for code, _ in answers) == held
    assert len(refused) >= 70 - held  # refused at once, not after the job
    assert all(code == 429 and after for code, after in answers if code != 200)
    http.delete(f"/v1/jobs/{job_id}")


# -- issue 22 item 3: one OpenAI call, one job ----------------------------------------------
@pytest.fixture(scope="module")
def twelve_minute_ogg(tmp_path_factory) -> Path:
    """A 4 min meeting three times over, as Opus: a small upload for a long job."""
    from tests.media import encode_audio

    audio = np.tile(meeting(64, seed=47).audio, 3)
    return encode_audio(audio, tmp_path_factory.mktemp("h") / "twelve.ogg", "libopus", 48000)


def test_an_openai_call_retried_by_its_client_makes_one_job_and_is_cancelled_when_left(
    http, app_settings, serve_url, twelve_minute_ogg
):
    """The official client times out and retries twice: all three attempts share one job,
    and once no caller waits on it (plus the grace), it is cancelled. Before, three jobs ran
    to completion for nobody."""
    from openai import APITimeoutError, OpenAI

    client = OpenAI(base_url=f"{serve_url}/v1", api_key="unused", timeout=3.0, max_retries=2)
    before = jobs_created(app_settings)
    # A diarized 12 min meeting takes far longer than the client's three 3 s attempts and
    # the grace after them.
    with pytest.raises(APITimeoutError), twelve_minute_ogg.open("rb") as fh:
        client.audio.transcriptions.create(
            model="whisper-1", file=fh, response_format="diarized_json"
        )
    assert jobs_created(app_settings) - before == 1
    (job,) = http.get("/v1/jobs", params={"limit": 1}).json()["data"]
    deadline = time.monotonic() + app_settings.openai_abandon_grace_s + 20
    while (now := http.get(f"/v1/jobs/{job['id']}").json())["status"] != "cancelled":
        assert time.monotonic() < deadline, f"the abandoned call's job kept running: {now}"
        time.sleep(0.5)


# -- issue 22 item 11: OpenAI's statuses, error shape and temperature on the job path ------
def test_the_openai_client_gets_openai_answers_from_the_job_path(
    http, app_settings, serve_url, twelve_minute_ogg
):
    """A cancelled job is a 400 the client does not retry (a 500 made it retry twice, each
    retry starting a new job), and `temperature` reaches the job."""
    import openai

    client = openai.OpenAI(base_url=f"{serve_url}/v1", api_key="unused", max_retries=2)
    before = jobs_created(app_settings)
    outcome: dict = {}

    def call() -> None:
        try:
            with twelve_minute_ogg.open("rb") as fh:
                client.audio.transcriptions.create(
                    model="whisper-1", file=fh, response_format="diarized_json", temperature=0.4
                )
        except openai.APIStatusError as exc:
            outcome["error"] = exc

    caller = threading.Thread(target=call)
    caller.start()
    deadline = time.monotonic() + 60
    while jobs_created(app_settings) == before:
        assert time.monotonic() < deadline, "the call made no job"
        time.sleep(0.2)
    (job,) = http.get("/v1/jobs", params={"limit": 1}).json()["data"]
    options = http.get(f"/v1/jobs/{job['id']}").json()["options"]
    assert options["temperature"] == 0.4  # no longer dropped on the job path
    assert http.delete(f"/v1/jobs/{job['id']}").status_code == 200
    caller.join(timeout=60)
    error = outcome["error"]
    assert isinstance(error, openai.BadRequestError), error
    assert error.body["code"] == "job_cancelled" and error.body["type"] == "invalid_request_error"
    assert jobs_created(app_settings) - before == 1  # not retried into new jobs


def test_an_expired_job_is_410_to_openai_clients():
    from serve_app.errors import ApiError
    from serve_app.routers.openai import _job_error

    with pytest.raises(ApiError) as err:
        _job_error("j1", None)
    assert (err.value.status, err.value.code) == (410, "job_expired")


# -- issue 22 item 4: a cancelled job's audio goes at once --------------------------------
def test_a_cancelled_jobs_audio_is_deleted_at_once(http, app_settings, minute_wav):
    """ "Upload 200 MB, cancel" in a loop must not fill the disk for audio_ttl_s."""
    job_id = submit(http, minute_wav, diarize=True)
    record = json.loads(
        redis_client(app_settings).get(f"{app_settings.redis_key_prefix}job:{job_id}")
    )
    audio = Path(record["audio_path"])
    assert audio.exists()
    r = http.delete(f"/v1/jobs/{job_id}")
    assert r.status_code == 200 and r.json()["status"] == "cancelled", r.text
    assert not audio.exists()
    r = http.post(f"/v1/jobs/{job_id}/retry")
    assert r.status_code == 410 and r.json()["error"]["code"] == "audio_expired"
