"""The HTTP contract in process (httpx ASGITransport): real app, real Redis, fake replicas.

The same paths run end to end against the deployed app in test_api_e2e.py.
"""

from __future__ import annotations

import asyncio
import json

import httpx
import pytest
from pydantic import SecretStr

from deployments.core.schemas import SpeakerTurn
from jobs.state.records import JobStatus
from jobs.stitching.stitch import JobResult, StitchedSegment, StitchedWord
from serve_app.app import api
from tests.api_fakes import fake_services
from tests.conftest import JFK

WAV_JFK = JFK.read_bytes()


async def _submit(client, content=WAV_JFK, headers=None, **form) -> httpx.Response:
    return await client.post(
        "/v1/jobs",
        files={"file": ("a.flac", content)},
        data={k: str(v) for k, v in form.items()},
        headers=headers or {},
    )


async def _complete(client, job_id: str) -> None:
    """Play the manager's part: write a result and mark the job completed."""
    store = client.services.store
    words = [
        StitchedWord(
            start=0.5 + i, end=0.9 + i, text=f" w{i}", probability=0.9, speaker=f"SPEAKER_0{i % 2}"
        )
        for i in range(4)
    ]
    segs = [
        StitchedSegment(start=w.start, end=w.end, text=w.text.strip(), speaker=w.speaker, words=[w])
        for w in words
    ]
    result = JobResult(
        duration=5.0,
        language="en",
        speakers=["SPEAKER_00", "SPEAKER_01"],
        segments=segs,
        turns=[SpeakerTurn(start=w.start, end=w.end, speaker=w.speaker) for w in words],
    )
    body = result.model_dump_json()
    await store.result_reset(job_id)
    await store.result_append(job_id, body, 0)
    await store.result_commit(job_id, len(body.encode()))
    record = await store.get(job_id)
    record.status, record.stage = JobStatus.COMPLETED, "completed"
    await store.finish(record)


async def test_submit_returns_202_with_links_and_wakes_the_manager(client):
    r = await _submit(client, num_speakers=2)
    assert r.status_code == 202
    body = r.json()
    assert body["status"] == "queued" and body["status_url"] == f"/v1/jobs/{body['id']}"
    assert client.services.manager.started == [body["id"]]
    assert client.services.storage.path(body["id"]).exists()  # durable before accepted
    got = (await client.get(body["status_url"])).json()
    assert got["options"]["num_speakers"] == 2 and got["segments_total"] is None


async def test_list_paginates_and_filters_by_status(client):
    ids = [(await _submit(client)).json()["id"] for _ in range(3)]
    await _complete(client, ids[0])
    page = (await client.get("/v1/jobs", params={"limit": 2})).json()
    assert [j["id"] for j in page["data"]] == ids[::-1][:2] and page["has_more"]
    done = (await client.get("/v1/jobs", params={"status": "completed"})).json()
    assert [j["id"] for j in done["data"]] == [ids[0]]
    r = await client.get("/v1/jobs", params={"status": "sleeping"})
    assert r.status_code == 422 and "status" in r.json()["error"]["message"]


async def test_cancel_retry_and_result_states(client):
    job_id = (await _submit(client)).json()["id"]
    r = await client.get(f"/v1/jobs/{job_id}/result")
    assert r.status_code == 409 and "queued" in r.json()["error"]["message"]
    assert (await client.post(f"/v1/jobs/{job_id}/retry")).status_code == 409
    r = await client.delete(f"/v1/jobs/{job_id}")
    assert r.status_code == 200 and r.json()["status"] == "cancelled"
    r = await client.post(f"/v1/jobs/{job_id}/retry")
    assert r.status_code == 202 and r.json()["status"] == "queued"
    await _complete(client, job_id)
    assert (await client.delete(f"/v1/jobs/{job_id}")).status_code == 409


@pytest.mark.parametrize("fmt", ["json", "srt", "vtt", "txt", "rttm"])
async def test_result_formats(client, fmt):
    job_id = (await _submit(client)).json()["id"]
    await _complete(client, job_id)
    r = await client.get(f"/v1/jobs/{job_id}/result", params={"format": fmt})
    assert r.status_code == 200
    if fmt == "json":
        assert JobResult.model_validate(r.json()).speakers == ["SPEAKER_00", "SPEAKER_01"]
    elif fmt == "srt":
        assert "00:00:00,500 --> " in r.text and "SPEAKER_00" in r.text
    elif fmt == "vtt":
        assert r.text.startswith("WEBVTT") and "<v SPEAKER_01>" in r.text
    elif fmt == "rttm":
        lines = r.text.strip().splitlines()
        assert len(lines) == 4 and all(line.startswith("SPEAKER ") for line in lines)
    else:
        assert "w0" in r.text


async def test_events_stream_ends_with_the_job(client):
    job_id = (await _submit(client)).json()["id"]
    await _complete(client, job_id)
    r = await client.get(f"/v1/jobs/{job_id}/events")
    assert r.headers["content-type"].startswith("text/event-stream")
    events = [block for block in r.text.split("\n\n") if block.strip()]
    assert events[-1].startswith("id: ") and "event: end" in events[-1]
    statuses = [
        json.loads(e.split("data: ", 1)[1])["status"] for e in events if "event: progress" in e
    ]
    assert statuses[0] == "queued" and statuses[-1] == "completed"


@pytest.mark.parametrize(
    ("form", "content", "status", "code", "names"),
    [
        ({}, b"", 400, "empty_file", "file"),
        ({}, b"%PDF-1.4 not audio at all" * 20, 400, "unsupported_media", "file"),
        ({}, b"RIFF\x24\x00\x00\x00WAVEfmt ", 400, "unsupported_media", "file"),
        ({"min_speakers": 3, "max_speakers": 2}, WAV_JFK, 422, "invalid_parameter", "min_speakers"),
        ({"num_speakers": 0}, WAV_JFK, 422, "invalid_parameter", "num_speakers"),
        ({"num_speakers": "two"}, WAV_JFK, 422, "invalid_parameter", "num_speakers"),
        ({"segment_s": 5000}, WAV_JFK, 422, "invalid_parameter", "segment_s"),
        ({"webhook_url": "ftp://x"}, WAV_JFK, 422, "invalid_parameter", "webhook_url"),
        ({}, b"\0" * 2_100_000, 413, "file_too_large", "limit"),
    ],
    ids=[
        "empty",
        "pdf",
        "truncated-wav",
        "min>max",
        "num=0",
        "num=two",
        "segment_s",
        "webhook",
        "oversize",
    ],
)
async def test_bad_job_inputs_get_specific_4xx(client, form, content, status, code, names):
    r = await _submit(client, content=content, **form)
    assert r.status_code == status, r.text
    assert r.json()["error"]["code"] == code and names in r.json()["error"]["message"]
    assert client.services.manager.started == []
    assert not list(client.services.storage.root.glob("*/*"))  # nothing left half-written
    assert (await client.get("/healthz")).status_code == 200


@pytest.mark.parametrize(
    "job_id", ["nope", "12345", "..%2F..%2Fetc%2Fpasswd", "00000000-0000-4000-8000-000000000000"]
)
async def test_unknown_and_malformed_ids_get_404(client, job_id):
    for method, path in [
        ("GET", ""),
        ("GET", "/result"),
        ("DELETE", ""),
        ("POST", "/retry"),
        ("GET", "/events"),
    ]:
        r = await client.request(method, f"/v1/jobs/{job_id}{path}")
        assert r.status_code == 404, (method, path, r.text)
        assert r.json()["error"]["code"] in ("job_not_found", "not_found")


async def test_json_body_where_multipart_is_expected(client):
    r = await client.post("/v1/jobs", json={"file": "jfk.flac"})
    assert r.status_code == 422 and "file" in r.json()["error"]["message"]


async def test_openai_endpoint_formats_and_bad_values(client):
    r = await client.post(
        "/v1/audio/transcriptions",
        files={"file": ("a.flac", WAV_JFK)},
        data={
            "model": "whisper-1",
            "response_format": "verbose_json",
            "timestamp_granularities[]": ["word", "segment"],
        },
    )
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["words"] and body["segments"] and body["text"].startswith("hello")
    r = await client.post(
        "/v1/audio/transcriptions",
        files={"file": ("a.flac", WAV_JFK)},
        data={"model": "whisper-1", "response_format": "xml"},
    )
    assert r.status_code == 400, r.text  # OpenAI's status and error shape on its routes
    error = r.json()["error"]
    assert error["type"] == "invalid_request_error" and error["param"] == "response_format"
    assert "response_format" in error["message"] and error["code"] == "invalid_parameter"


async def test_api_keys_scope_jobs_to_their_key(redis_server, tmp_path):
    services = fake_services(
        redis_server, tmp_path, api_keys=[SecretStr("key-a"), SecretStr("key-b")]
    )
    api.state.services = services
    transport = httpx.ASGITransport(app=api)
    async with httpx.AsyncClient(transport=transport, base_url="http://api") as c:
        assert (await c.get("/healthz")).status_code == 200  # open without a key
        assert (await _submit(c)).status_code == 401
        r = await _submit(c, headers={"Authorization": "Bearer wrong"})
        assert r.status_code == 401 and r.json()["error"]["code"] == "invalid_api_key"
        job_id = (await _submit(c, headers={"Authorization": "Bearer key-a"})).json()["id"]
        a, b = {"Authorization": "Bearer key-a"}, {"X-API-Key": "key-b"}
        assert (await c.get(f"/v1/jobs/{job_id}", headers=a)).status_code == 200
        assert (await c.get(f"/v1/jobs/{job_id}", headers=b)).status_code == 404
        assert (await c.delete(f"/v1/jobs/{job_id}", headers=b)).status_code == 404
        assert (await c.get("/v1/jobs", headers=b)).json()["data"] == []
        assert [j["id"] for j in (await c.get("/v1/jobs", headers=a)).json()["data"]] == [job_id]
        assert (await c.get("/v1/models")).status_code == 401
    api.state.services = None
    await services.store.close()


async def test_openapi_document_lists_every_route(client):
    spec = (await client.get("/openapi.json")).json()
    for path in [
        "/v1/jobs",
        "/v1/jobs/{job_id}",
        "/v1/jobs/{job_id}/result",
        "/v1/jobs/{job_id}/events",
        "/v1/jobs/{job_id}/retry",
        "/v1/audio/transcriptions",
        "/v1/models",
        "/healthz",
    ]:
        assert path in spec["paths"], path
    assert (await client.get("/docs")).status_code == 200


async def test_full_queue_gets_429_with_retry_after_and_stores_nothing(redis_server, tmp_path):
    api.state.services = services = fake_services(redis_server, tmp_path, max_active_jobs=2)
    try:
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=api), base_url="http://api"
        ) as c:
            c.services = services
            accepted = [await _submit(c, diarize="false") for _ in range(2)]
            assert [r.status_code for r in accepted] == [202, 202]
            refused = await _submit(c, diarize="false")
            assert refused.status_code == 429, refused.text
            assert refused.json()["error"]["code"] == "too_many_jobs"
            assert int(refused.headers["Retry-After"]) > 0
            assert len(list(services.storage.root.glob("*/*"))) == 2  # the refused one: nothing
            assert len(services.manager.started) == 2
            await _complete(c, accepted[0].json()["id"])  # a slot frees up
            assert (await _submit(c, diarize="false")).status_code == 202
    finally:
        api.state.services = None
        await services.store.close()


async def test_each_key_has_its_own_caps_on_active_jobs_and_stored_audio(redis_server, tmp_path):
    """Issue 22 item 4: one key cannot hold every active-job slot or fill the disk; the caps
    are checked in the same Redis step as creation, so concurrent submissions cannot pass."""
    from serve_app.auth import owner_id

    services = fake_services(
        redis_server,
        tmp_path,
        api_keys=[SecretStr("key-a"), SecretStr("key-b")],
        max_active_jobs_per_key=2,
        max_stored_mb_per_key=2.5 * len(WAV_JFK) / 1e6,
    )
    api.state.services = services
    a, b = {"Authorization": "Bearer key-a"}, {"Authorization": "Bearer key-b"}
    transport = httpx.ASGITransport(app=api)
    async with httpx.AsyncClient(transport=transport, base_url="http://api") as c:
        burst = await asyncio.gather(*(_submit(c, headers=a) for _ in range(5)))
        assert sorted(r.status_code for r in burst) == [202, 202, 429, 429, 429]
        refused = next(r for r in burst if r.status_code == 429)
        assert refused.json()["error"]["code"] == "too_many_jobs_for_key"
        assert refused.headers["Retry-After"]
        assert (await _submit(c, headers=b)).status_code == 202  # other keys are not held up

        cancelled = next(r.json()["id"] for r in burst if r.status_code == 202)
        assert (await c.delete(f"/v1/jobs/{cancelled}", headers=a)).status_code == 200
        # A job slot is free, but the cancelled job's audio still counts (this fake manager
        # keeps it): two uploads stored, a third passes 2.5 uploads' worth.
        r = await _submit(c, headers=a)
        assert r.status_code == 429 and r.json()["error"]["code"] == "storage_full_for_key"
        # The real manager deletes a cancelled job's audio at once and forgets it here.
        await services.store.forget_audio(owner_id("key-a"), cancelled)
        assert (await _submit(c, headers=a)).status_code == 202
    api.state.services = None
    await services.store.close()


def _sse_events(body: str) -> list[dict]:
    return [json.loads(line[6:]) for line in body.splitlines() if line.startswith("data: ")]


async def test_openai_stream_true_answers_server_sent_events(client):
    for route in ("/v1/audio/transcriptions", "/v1/audio/translations"):
        r = await client.post(
            route,
            files={"file": ("a.flac", WAV_JFK)},
            data={"model": "whisper-1", "stream": "true"},
        )
        assert r.status_code == 200, r.text
        assert r.headers["content-type"].startswith("text/event-stream")
        events = _sse_events(r.text)
        assert [e["type"] for e in events] == ["transcript.text.delta", "transcript.text.done"]
        assert events[0]["delta"] == events[1]["text"] == "hello from the fake transcriber."
        assert events[1]["usage"] == {"type": "duration", "seconds": 11.0}
    assert client.services.held_requests().held == 0  # the stream gave its place back


async def test_openai_stream_rejects_bad_input_before_the_answer_begins(client):
    r = await client.post(
        "/v1/audio/transcriptions",
        files={"file": ("a.flac", b"this is not audio" * 50)},
        data={"model": "whisper-1", "stream": "true"},
    )
    assert r.status_code == 400 and r.headers["content-type"].startswith("application/json")
    error = r.json()["error"]
    assert error["type"] == "invalid_request_error" and "file" in error["message"]
    assert "Traceback" not in r.text
    assert client.services.held_requests().held == 0
