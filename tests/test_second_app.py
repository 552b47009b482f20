"""A second application beside the session's, as an operator would deploy one: API keys on,
a small queue, its own manager. Real Ray Serve, Redis and weights.

Covers issue 11 items 1 (keys, scoped listing), 3 (per-job webhook secret), 5 (a manager
per application that redeploys and shuts down with it) and the load run with a small
queue (429 + Retry-After under real concurrency, every refused submission retried), and
issue 13's per-key enrolled speakers.
"""

from __future__ import annotations

import json
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
from pydantic import SecretStr

from jobs.integrations.webhooks import SIGNATURE_HEADER, verify
from serve_app.app import build_app
from tests.conftest import JFK, JFK_TEXT, TEST_HTTP_PORT, load_audio, wer
from tests.jobclient import TERMINAL, manager, replica_actors
from tests.synth import write_wav
from tests.webhook_receiver import WebhookReceiver

pytestmark = [pytest.mark.ray, pytest.mark.models]

APP, PREFIX = "keyed", "/keyed"
ALPHA, BETA = "key-alpha-0123456789", "key-beta-9876543210"
SMALL_QUEUE = 3


def _settings(app_settings, **changes):
    return app_settings.model_copy(
        update={
            "app_name": APP,
            "api_keys": [SecretStr(ALPHA), SecretStr(BETA)],
            "webhook_secret": None,
            "redis_key_prefix": "keyed:",
            "max_active_jobs": SMALL_QUEUE,
            "max_concurrent_jobs": 2,
            "extra_whisper_models": [],  # keys and queues, not models: one model is enough
            **changes,
        }
    )


def _deploy(settings) -> None:
    from ray import serve

    one = {"num_replicas": 1, "autoscaling_config": None, "ray_actor_options": {"num_cpus": 0.5}}
    serve.run(build_app(settings, transcriber=one, diarizer=one), name=APP, route_prefix=PREFIX)


def _wait_healthy(url: str) -> None:
    deadline = time.monotonic() + 180
    while True:
        try:
            if httpx.get(f"{url}/healthz", timeout=10).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        assert time.monotonic() < deadline, "second app not healthy"
        time.sleep(1)


@pytest.fixture(scope="module")
def keyed(serve_url, app_settings):
    settings = _settings(app_settings)
    _deploy(settings)
    url = f"http://127.0.0.1:{TEST_HTTP_PORT}{PREFIX}"
    _wait_healthy(url)
    yield url, settings
    from ray import serve

    if APP in serve.status().applications:
        serve.delete(APP)


def _client(url: str, key: str | None) -> httpx.Client:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    return httpx.Client(base_url=url, timeout=120, headers=headers)


@pytest.fixture(scope="module")
def clip(tmp_path_factory) -> Path:
    return write_wav(load_audio(JFK), tmp_path_factory.mktemp("keyed") / "jfk.wav")


def _submit(client: httpx.Client, clip: Path, **form) -> httpx.Response:
    return client.post(
        "/v1/jobs",
        files={"file": ("jfk.wav", clip.read_bytes())},
        data={"diarize": "false", **form},
    )


def _wait(client: httpx.Client, job_id: str, timeout_s: float = 300) -> dict:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        body = client.get(f"/v1/jobs/{job_id}").json()
        if body["status"] in TERMINAL:
            return body
        time.sleep(0.5)
    raise AssertionError(f"job {job_id} not finished")


def test_keys_are_required_and_each_key_sees_only_its_jobs(keyed, clip, http):
    url, _ = keyed
    with _client(url, None) as anonymous:
        assert anonymous.get("/v1/jobs").status_code == 401
        assert _submit(anonymous, clip).status_code == 401
    with _client(url, ALPHA) as alpha, _client(url, BETA) as beta:
        job_id = _submit(alpha, clip).json()["id"]
        assert _wait(alpha, job_id)["status"] == "completed"
        assert [j["id"] for j in alpha.get("/v1/jobs").json()["data"]] == [job_id]
        assert beta.get("/v1/jobs").json()["data"] == []
        assert beta.get(f"/v1/jobs/{job_id}").status_code == 404
        assert beta.get(f"/v1/jobs/{job_id}/result").status_code == 404
        text = alpha.get(f"/v1/jobs/{job_id}/result", params={"format": "txt"}).text
        assert wer(JFK_TEXT, text) <= 0.05
    # The keyless session app is another application with its own jobs.
    assert job_id not in {j["id"] for j in http.get("/v1/jobs").json()["data"]}


def test_enrolled_speakers_belong_to_the_key_that_enrolled_them(keyed, clip):
    import io

    import soundfile as sf

    from tests.knownvoices import enrollment_samples

    url, _ = keyed

    def sample() -> bytes:
        buf = io.BytesIO()
        audio = enrollment_samples("it_carlo", None, samples=1, seed=41)[0]
        sf.write(buf, audio, 16000, format="WAV", subtype="PCM_16")
        return buf.getvalue()

    files = [("file", ("carlo.wav", sample(), "audio/wav"))]
    with _client(url, ALPHA) as alpha, _client(url, BETA) as beta:
        r = alpha.post("/v1/speakers", data={"name": "Carlo"}, files=files)
        assert r.status_code == 201, r.text
        carlo = r.json()["id"]
        try:
            assert [s["id"] for s in alpha.get("/v1/speakers").json()["data"]] == [carlo]
            assert beta.get("/v1/speakers").json()["data"] == []
            assert beta.get(f"/v1/speakers/{carlo}").status_code == 404
            assert beta.delete(f"/v1/speakers/{carlo}").status_code == 404
            for ref in ("Carlo", carlo):
                r = _submit(beta, clip, diarize="true", speakers=ref)
                assert (r.status_code, r.json()["error"]["code"]) == (422, "unknown_speaker")
            # Names are per key: another key may use the same one.
            r = beta.post("/v1/speakers", data={"name": "Carlo"}, files=files)
            assert r.status_code == 201, r.text
            assert beta.delete(f"/v1/speakers/{r.json()['id']}").status_code == 200
        finally:
            assert alpha.delete(f"/v1/speakers/{carlo}").status_code == 200


def test_webhooks_are_signed_with_a_per_job_secret_returned_at_submit(keyed, clip):
    url, _ = keyed
    with WebhookReceiver() as receiver, _client(url, ALPHA) as alpha:
        r = _submit(alpha, clip, webhook_url=receiver.url)
        secret, job_id = r.json()["webhook_secret"], r.json()["id"]
        assert secret and secret.startswith("whsec_")
        assert alpha.get(f"/v1/jobs/{job_id}").json().get("webhook_secret") is None
        assert _wait(alpha, job_id)["status"] == "completed"
        assert receiver.wait(lambda got: got, 30), "webhook never delivered"
    headers, body = receiver.received[0]
    assert verify(secret, headers[SIGNATURE_HEADER], body)
    assert json.loads(body)["id"] == job_id


def test_a_small_queue_refuses_with_429_and_every_refused_submission_succeeds_later(keyed, clip):
    url, _ = keyed
    body = clip.read_bytes()

    def post_until_accepted(i: int) -> tuple[str, int]:
        refusals = 0
        with _client(url, ALPHA) as client:
            deadline = time.monotonic() + 600
            while True:
                r = client.post(
                    "/v1/jobs", files={"file": (f"c{i}.wav", body)}, data={"diarize": "false"}
                )
                if r.status_code == 202:
                    return r.json()["id"], refusals
                assert r.status_code == 429, r.text
                assert r.headers["Retry-After"].isdigit()
                refusals += 1
                assert time.monotonic() < deadline, "never accepted"
                time.sleep(1.0)  # a client honouring Retry-After would wait longer

    with ThreadPoolExecutor(20) as pool:
        outcomes = list(pool.map(post_until_accepted, range(20)))
    assert sum(refused for _, refused in outcomes) > 0, "the small queue never filled"
    with _client(url, ALPHA) as alpha:
        for job_id, _ in outcomes:
            assert _wait(alpha, job_id, timeout_s=600)["status"] == "completed"
            text = alpha.get(f"/v1/jobs/{job_id}/result", params={"format": "txt"}).text
            assert wer(JFK_TEXT, text) <= 0.05, text


def test_each_app_has_its_own_manager_and_a_redeploy_applies_new_settings(keyed, app_settings):
    url, settings = keyed
    ours = manager(APP).ping.remote().result()
    theirs = manager("speech").ping.remote().result()
    assert ours["app_name"] == APP and theirs["app_name"] == "speech"
    assert ours["pid"] != theirs["pid"]
    assert ours["config"] == settings.jobs_config().fingerprint()

    changed = _settings(app_settings, max_concurrent_jobs=1, segment_max_attempts=2)
    _deploy(changed)
    _wait_healthy(url)
    now = manager(APP).ping.remote().result()
    assert now["config"] == changed.jobs_config().fingerprint() != ours["config"]
    assert manager("speech").ping.remote().result()["pid"] == theirs["pid"]  # untouched


def test_rolling_updates_and_key_rotation_during_a_job(keyed, app_settings, tmp_path):
    """Issue 22 items 10 and 12, on one running job.

    10: each graceful stop of the manager hands the job on uncounted. Before, the run each
    update interrupted counted as a crash, and the second update (with
    max_job_interruptions=1) failed the job as job_interrupted.
    12: the job belongs to a tenant, not to a key: the key that submitted it is rotated out
    while it runs, and the tenant's new key sees it to the end.
    """
    from tests.synth import meeting

    url, _ = keyed
    wav = write_wav(meeting(240, seed=52).audio, tmp_path / "four.wav")
    old, new = "key-acme-old-0123456789", "key-acme-new-9876543210"
    tenants = [{"acme": [old]}, {"acme": [old, new]}, {"acme": [new]}]
    tenants = [{t: [SecretStr(k) for k in keys] for t, keys in step.items()} for step in tenants]

    def deploy(step: int) -> None:
        keys = {"api_keys": [], "api_key_tenants": tenants[step]}
        _deploy(
            _settings(
                app_settings,
                **keys,
                max_job_interruptions=1,
                max_inflight_segments=1,
                segment_max_attempts=2 + step,  # a manager setting: each deploy rolls it
            )
        )
        _wait_healthy(url)

    deploy(0)
    with _client(url, old) as client, wav.open("rb") as fh:
        form = {"diarize": "false", "segment_s": "10"}
        r = client.post("/v1/jobs", files={"file": fh}, data=form)
        assert r.status_code == 202, r.text
        job_id = r.json()["id"]
    for step in (1, 2):  # two rolling updates of the manager while the job runs
        with _client(url, old if step == 1 else new) as client:
            deadline = time.monotonic() + 120
            while True:  # a manager is running it (again)
                now = client.get(f"/v1/jobs/{job_id}").json()
                assert now["status"] not in TERMINAL, now
                if now["segments_done"] >= 1 and "handed" not in now["stage"]:
                    break
                assert time.monotonic() < deadline, f"the job made no progress: {now}"
                time.sleep(0.5)
        deploy(step)
    with _client(url, new) as client:
        status = _wait(client, job_id, timeout_s=600)
        assert status["status"] == "completed", status
        assert job_id in {j["id"] for j in client.get("/v1/jobs").json()["data"]}
        assert client.get(f"/v1/jobs/{job_id}/result").status_code == 200
    with _client(url, old) as client:
        assert client.get(f"/v1/jobs/{job_id}").status_code == 401  # rotated out
    import redis

    store = redis.Redis.from_url(app_settings.redis_url, decode_responses=True)
    record = json.loads(store.get(f"keyed:job:{job_id}"))
    assert record["owner"] == "acme"
    assert record["attempts"] == 1, record  # only the run that finished counts
    events = store.xrange(f"keyed:job:{job_id}:events")
    stages = [json.loads(fields["data"])["stage"] for _, fields in events]
    handed = [s for s in stages if "handed to a new job manager" in s]
    assert len(handed) == 2, "\n".join(stages)


def test_deleting_the_app_leaves_no_manager_behind(keyed):
    from ray import serve

    assert replica_actors("JobManager", APP)
    serve.delete(APP)
    deadline = time.monotonic() + 60
    while replica_actors("JobManager", APP):
        assert time.monotonic() < deadline, "the manager outlived its application"
        time.sleep(0.5)
    assert replica_actors("JobManager", "speech")  # the other app keeps its own
