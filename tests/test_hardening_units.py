"""Issue 11 items isolated below the app: webhook targets, exposure, listing pages, the
embedded Redis under SIGKILL, Redis retries and one request's failure inside a batch.

Redis and the model are real here; what is faked is named in each test.
"""

from __future__ import annotations

import ipaddress
import os
import signal
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, HTTPServer

import numpy as np
import pytest
import redis
import yaml

from jobs.integrations.webhooks import WebhookRefused, check_url, post_once, resolve_checked
from jobs.state.job_index import trim_listing
from jobs.state.records import JobRecord, JobStatus
from serve_app.exposure import ExposedWithoutKeys, check_exposure
from serve_app.settings import Settings
from tests.conftest import REPO, WEBHOOK_HOST


# -- item 1: open by default ------------------------------------------------------------
def test_a_non_loopback_bind_without_keys_refuses_to_start():
    open_settings = Settings()
    for host in ("0.0.0.0", "::", "10.1.2.3", "speech.example.com"):
        with pytest.raises(ExposedWithoutKeys, match="api_keys") as err:
            check_exposure(open_settings, host)
        assert "allow_unauthenticated" in str(err.value)
    for host in ("127.0.0.1", "::1", "localhost", None):
        check_exposure(open_settings, host)  # local only: fine without keys
    check_exposure(Settings(api_keys=["k"]), "0.0.0.0")
    check_exposure(Settings(allow_unauthenticated=True), "0.0.0.0")


def test_the_default_config_binds_loopback():
    config = yaml.safe_load((REPO / "serve_config.yaml").read_text())
    assert config["http_options"]["host"] == "127.0.0.1"


# -- item 2: webhook SSRF -----------------------------------------------------------------
INTERNAL = [
    "http://127.0.0.1:6379/",
    "http://localhost:8000/v1/jobs",
    "http://[::1]/",
    "http://169.254.169.254/latest/meta-data/",
    "http://10.0.0.7/hook",
    "http://192.168.1.1/",
    "http://[::ffff:127.0.0.1]/",
    "http://0.0.0.0:6379/",
    "http://100.64.0.1/",
    # issue 22 item 9: internal IPv4 wrapped in IPv6 forms, and legacy IPv4 spellings
    "http://[64:ff9b::a9fe:a9fe]/",  # NAT64 of 169.254.169.254
    "http://[64:ff9b:1::a9fe:a9fe]/",  # local-use NAT64
    "http://[2002:a9fe:a9fe::1]/",  # 6to4
    "http://[2001:0:4136:e378:8000:63bf:80ff:fffe]/",  # Teredo, client 127.0.0.1
    "http://[::7f00:1]/",  # IPv4-compatible 127.0.0.1
    "http://2130706433/",
    "http://0x7f000001/",
    "http://0177.0.0.1/",
    "http://127.1/",
    "http://10.1:8080/",
]


@pytest.mark.parametrize("url", INTERNAL)
def test_literal_internal_webhook_targets_are_refused(url):
    with pytest.raises(WebhookRefused):
        check_url(url, allow=())


def test_the_allow_list_admits_named_receivers_only():
    check_url("http://10.0.0.7/hook", allow=["10.0.0.0/8"])
    check_url("https://hooks.example.com/x", allow=())
    with pytest.raises(WebhookRefused):
        check_url("http://10.0.0.7/hook", allow=["192.168.0.0/16"])


@pytest.mark.parametrize("url", INTERNAL)
async def test_internal_targets_are_refused_at_delivery_too(url):
    async def public(host, port):
        return [ipaddress.ip_address("93.184.215.14")]

    with pytest.raises(WebhookRefused):
        await resolve_checked(url, (), public)


def test_public_addresses_in_the_same_forms_pass():
    for url in (
        "http://[64:ff9b::5db8:d70e]/",
        "http://[2002:5db8:d70e::1]/",
        "http://1572395790/",
    ):
        check_url(url, allow=())


async def test_a_dns_failure_is_retried_not_given_up():
    async def down(host, port):
        raise socket.gaierror(socket.EAI_AGAIN, "Temporary failure in name resolution")

    delivered, what = await post_once("http://hooks.example.com/x", {}, None, "e", (), 2.0, down)
    assert not delivered and "did not resolve" in what
    assert not what.startswith("refused")  # the outbox gives up at once only on "refused"


async def test_a_name_is_checked_by_what_it_resolves_to_at_delivery():
    """DNS rebinding: a public-looking name that resolves to 127.0.0.1 when delivered."""

    async def rebinding(host, port):
        return [ipaddress.ip_address("127.0.0.1")]

    url = "http://hooks.example.com/x"
    check_url(url, allow=())  # nothing to see at submit
    with pytest.raises(WebhookRefused, match="non-public"):
        await resolve_checked(url, (), rebinding)
    delivered, what = await post_once(url, {"a": 1}, "s", "e1", (), 2.0, rebinding)
    assert not delivered and what.startswith("refused")

    async def internal_name(host, port):
        return [ipaddress.ip_address("10.0.0.9")]

    host, ip = await resolve_checked("http://hooks.internal/x", ["hooks.internal"], internal_name)
    assert (host, str(ip)) == ("hooks.internal", "10.0.0.9")


class _Redirect(BaseHTTPRequestHandler):
    hits: list[str] = []  # noqa: RUF012

    def do_POST(self):
        _Redirect.hits.append(self.path)
        self.rfile.read(int(self.headers["Content-Length"]))
        self.send_response(307)
        self.send_header("Location", "http://127.0.0.1:6379/")
        self.end_headers()

    def log_message(self, *args):
        pass


async def test_redirects_are_never_followed():
    server = HTTPServer((WEBHOOK_HOST, 0), _Redirect)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://{WEBHOOK_HOST}:{server.server_port}/hook"
        delivered, what = await post_once(url, {"a": 1}, "s", "e1", [f"{WEBHOOK_HOST}/32"], 5.0)
    finally:
        server.shutdown()
    assert not delivered and what == "HTTP 307"
    assert _Redirect.hits == ["/hook"]


# -- item 13: listing pages by the filtered list; expired ids leave the index -------------


async def test_status_filtered_listing_pages_neither_skip_nor_repeat(client):
    store = client.services.store
    completed = []
    for i in range(12):
        record = await store.create(JobRecord(id=_uuid(), audio_path="/x", created_at=1000 + i))
        if i % 3 == 0:
            record.status = JobStatus.COMPLETED
            await store.finish(record)
            completed.append(record.id)
    expected = list(reversed(completed))  # newest first
    pages, offset = [], 0
    while True:
        r = await client.get(
            "/v1/jobs", params={"status": "completed", "limit": 3, "offset": offset}
        )
        body = r.json()
        pages += [job["id"] for job in body["data"]]
        offset += 3
        if not body["has_more"]:
            break
    assert pages == expected
    r = await client.get("/v1/jobs", params={"status": "completed", "limit": 2, "offset": 2})
    assert [j["id"] for j in r.json()["data"]] == expected[2:4]


async def _follow(client, **params) -> tuple[list[str], int]:
    """Every id the listing gives by following next_cursor, and the number of pages."""
    ids, pages, cursor = [], 0, None
    while True:
        query = {**params, **({"cursor": cursor} if cursor else {})}
        body = (await client.get("/v1/jobs", params=query)).json()
        ids += [job["id"] for job in body["data"]]
        pages += 1
        cursor = body["next_cursor"]
        assert body["has_more"] == (cursor is not None)
        if cursor is None:
            return ids, pages


async def test_cursor_pages_neither_skip_nor_repeat_ties_or_new_jobs(client):
    """Issue 22 item 12: pages by position, so equal creation times and jobs created while
    a caller pages shift nothing."""
    store = client.services.store
    made = [
        await store.create(JobRecord(id=_uuid(), audio_path="/x", created_at=5000 + i // 4))
        for i in range(11)  # four jobs per second: ties in the index
    ]
    expected = [r.id for r in sorted(made, key=lambda r: (r.created_at, r.id), reverse=True)]
    first = (await client.get("/v1/jobs", params={"limit": 3})).json()
    await store.create(JobRecord(id=_uuid(), audio_path="/x", created_at=9000))  # newest
    rest, _ = await _follow(client, limit=3, cursor=first["next_cursor"])
    assert [j["id"] for j in first["data"]] + rest == expected
    r = await client.get("/v1/jobs", params={"cursor": "bm90IGEgY3Vyc29y"})
    assert r.status_code == 422 and "cursor" in r.json()["error"]["message"]
    r = await client.get("/v1/jobs", params={"offset": 100_000})
    assert r.status_code == 422 and "offset" in r.json()["error"]["message"]


async def test_a_sparse_status_filter_reads_a_bounded_slice_per_request(client, monkeypatch):
    """2,500 jobs, one failed and oldest: each request reads at most SCAN_BUDGET index
    entries (in batches), and the cursor reaches the failed job without reading any twice."""
    from serve_app.services import listing

    store = client.services.store
    failed = await store.create(JobRecord(id=_uuid(), audio_path="/x", created_at=1.0))
    failed.status = JobStatus.FAILED
    await store.finish(failed)
    async with store.redis.pipeline(transaction=False) as pipe:
        for i in range(2500):
            job_id = _uuid()
            pipe.set(
                store._k("job", job_id), JobRecord(id=job_id, audio_path="/x").model_dump_json()
            )
            pipe.zadd(store._k("jobs", "created"), {job_id: 100.0 + i})
        await pipe.execute()
    read: list[int] = []
    get_many = store.get_many

    async def counted(ids):
        read.append(len(ids))
        return await get_many(ids)

    monkeypatch.setattr(store, "get_many", counted)
    ids, pages = await _follow(client, status="failed", limit=5)
    assert ids == [failed.id]
    assert pages == 2 and sum(read) == 2501  # every entry read once, over two requests
    assert max(read) <= listing.BATCH


async def test_expired_jobs_leave_the_listing_index(client):
    store = client.services.store
    kept = await store.create(JobRecord(id=_uuid(), audio_path="/x", created_at=2000))
    gone = await store.create(JobRecord(id=_uuid(), audio_path="/x", created_at=1000))
    await store.redis.delete(store._k("job", gone.id))  # its retention ran out
    r = await client.get("/v1/jobs")
    assert [j["id"] for j in r.json()["data"]] == [kept.id]
    assert await store.redis.zscore(store._k("jobs", "created"), gone.id) is None
    old = await store.create(JobRecord(id=_uuid(), audio_path="/x", created_at=10.0))
    assert await trim_listing(store, created_before=100.0) == 1
    assert await store.redis.zscore(store._k("jobs", "created"), old.id) is None


def _uuid() -> str:
    import uuid

    return str(uuid.uuid4())


# -- item 15: the embedded Redis survives SIGKILL with every acknowledged write -----------
def test_embedded_redis_keeps_acknowledged_writes_through_sigkill_and_is_restarted(tmp_path):
    from jobs.state.redis_server import ensure_embedded_redis

    url = ensure_embedded_redis(tmp_path)
    conf = (tmp_path / "redis" / "redis.conf").read_text()
    assert "appendfsync always" in conf
    client = redis.Redis.from_url(url)
    for i in range(200):
        client.set(f"k{i}", i)  # acknowledged: must survive
    pid = int((tmp_path / "redis" / "redis.pid").read_text())
    os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 10
    while _running(pid):
        assert time.monotonic() < deadline
        time.sleep(0.05)
    # What the manager's watchdog does on every pass: find it dead, start it again.
    assert ensure_embedded_redis(tmp_path) == url
    client = redis.Redis.from_url(url)
    try:
        assert [int(client.get(f"k{i}")) for i in range(200)] == list(range(200))
    finally:
        client.shutdown(nosave=True)


def _running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    with open(f"/proc/{pid}/stat") as fh:
        return fh.read().split()[2] != "Z"


# -- item 16: every command the store sends may be resent safely --------------------------
async def test_a_resent_call_count_counts_once(redis_server):
    from jobs.state.job_store import JobStore

    store = JobStore(redis_server.url, prefix=f"u{_uuid()[:6]}:")
    try:
        await store.count_call("j", "0:0-1", "t", nonce="a")
        assert await store.calls("j") == {"0:0-1:t": 1}
        # The reply was lost and the client resent the same command: still one call.
        await store.count_call("j", "0:0-1", "t", nonce="a")
        assert await store.calls("j") == {"0:0-1:t": 1}
        await store.count_call("j", "0:0-1", "t")
        assert await store.calls("j") == {"0:0-1:t": 2}
    finally:
        await store.close()


# -- item 10: one request's failure stays its own inside a shared batch --------------------
@pytest.mark.models
def test_one_failing_request_does_not_fail_its_batch(whisper_core, jfk_audio, monkeypatch):
    from deployments.core.schemas import InputRejected, TranscribeOptions
    from tests.conftest import JFK_TEXT, wer

    bad = np.zeros(12345, np.float32)  # stands in for input that breaks the decoder
    real = whisper_core._decode_group

    seen: list[int] = []

    def fragile(audios, opt, own=None, live=False):  # the production signature, passed on
        seen.append(len(audios))
        if any(len(a) == len(bad) for a in audios):
            raise RuntimeError("decoder choked on one request")
        return real(audios, opt, own, live)

    monkeypatch.setattr(whisper_core, "_decode_group", fragile)
    opts = TranscribeOptions()
    results = whisper_core.transcribe_many(
        [jfk_audio, bad, jfk_audio, jfk_audio], [opts, opts, opts, TranscribeOptions(language="zz")]
    )
    assert wer(JFK_TEXT, results[0].text) <= 0.05 and wer(JFK_TEXT, results[2].text) <= 0.05
    assert isinstance(results[1], RuntimeError)
    assert isinstance(results[3], InputRejected)
    assert "language 'zz' is not one of this model's: en" in str(results[3])
    assert seen == [3, 1, 1, 1]  # the shared batch, then each of its requests alone
