"""Issue 22 item 1: hostile webhook receivers against the outbox, with a real Redis and
real local HTTP receivers (tests/webhook_receiver.py). Through the real app:
tests/test_hardening.py::test_hostile_webhook_receivers_delay_no_one_and_crash_nothing."""

from __future__ import annotations

import asyncio
import ipaddress
import json
import time
import uuid

import pytest

from jobs.integrations.webhooks import check_url, post_once
from jobs.state.job_store import JobStore
from jobs.state.outbox import CLAIM_MARGIN_S, WebhookOutbox
from tests.conftest import WEBHOOK_HOST
from tests.webhook_receiver import WebhookReceiver

ALLOW = [f"{WEBHOOK_HOST}/32"]


@pytest.fixture()
async def store(redis_server):
    s = JobStore(redis_server.url, prefix=f"t{uuid.uuid4().hex[:8]}:", result_ttl_s=60)
    yield s
    await s.close()


async def test_an_endless_body_is_never_read():
    with WebhookReceiver(mode="endless") as receiver:
        started = time.monotonic()
        delivered, what = await post_once(receiver.url, {"a": 1}, "s", "e1", ALLOW, 5.0)
    assert (delivered, what) == (True, "HTTP 200")
    assert time.monotonic() - started < 4.0


async def test_a_trickling_receiver_is_cut_off_at_the_whole_request_timeout():
    with WebhookReceiver(mode="trickle") as receiver:
        started = time.monotonic()
        delivered, what = await post_once(receiver.url, {"a": 1}, "s", "e1", ALLOW, 2.0)
    assert not delivered and what == "no response within 2 s"
    assert time.monotonic() - started < 3.5  # a byte every 3 s: per-read timeouts never fire


async def test_an_internationalised_host_is_sent_as_idna():
    url_host = "bücher.example"
    check_url(f"http://{url_host}/hook", allow=())  # accepted at submit

    async def local(host, port):
        assert host == "xn--bcher-kva.example"
        return [ipaddress.ip_address(WEBHOOK_HOST)]

    with WebhookReceiver() as receiver:
        url = f"http://{url_host}:{receiver.port}/hook"
        delivered, what = await post_once(url, {"a": 1}, None, "e1", [url_host], 5.0, local)
        assert (delivered, what) == (True, "HTTP 204")
        ((headers, _),) = receiver.received
    assert headers["Host"] == f"xn--bcher-kva.example:{receiver.port}"


async def _queue(store: JobStore, url: str) -> str:
    job_id = str(uuid.uuid4())
    entry = {
        "url": url,
        "payload": {"event_id": f"{job_id}:completed", "id": job_id},
        "secret": None,
        "attempts": 0,
        "delivered": False,
        "given_up": False,
        "last_error": None,
    }
    await store.redis.set(store._k("job", job_id, "webhook"), json.dumps(entry))
    await store.redis.zadd(store._k("webhooks", "outbox"), {job_id: time.time()})
    return job_id


async def _entry(store: JobStore, job_id: str) -> dict:
    return json.loads(await store.redis.get(store._k("job", job_id, "webhook")))


async def test_slow_receivers_delay_no_one_and_attempts_count_before_the_post(store):
    outbox = WebhookOutbox(store, max_attempts=3, base_delay_s=0.1, allow=ALLOW, timeout_s=6.0)
    with WebhookReceiver(mode="trickle") as slow, WebhookReceiver() as fine:
        stuck = [await _queue(store, slow.url) for _ in range(3)]
        wanted = await _queue(store, fine.url)
        assert await outbox.deliver_due() == 4
        deadline = time.monotonic() + 3.0
        while not fine.received:  # the receivers run in threads; this loop runs the outbox
            assert time.monotonic() < deadline, "a slow receiver held up another's event"
            await asyncio.sleep(0.1)
        await asyncio.sleep(0.5)
        for job_id in stuck:  # still waiting on the receiver, and already counted
            assert job_id in outbox.in_flight
            assert (await _entry(store, job_id))["attempts"] == 1
        assert await outbox.deliver_due() == 0  # nothing due twice while in flight
        await asyncio.gather(*outbox.in_flight.values())
    assert (await _entry(store, wanted))["delivered"]
    assert (await _entry(store, stuck[0]))["last_error"] == "no response within 6 s"


async def test_an_attempt_that_never_returns_is_counted_and_due_again_soon(store):
    """The manager dies mid-POST (the task is cancelled): the attempt still counts, and the
    claim lapses after one attempt's time instead of minutes."""
    outbox = WebhookOutbox(store, max_attempts=2, base_delay_s=0.1, allow=ALLOW, timeout_s=1.0)
    with WebhookReceiver(mode="trickle") as slow:
        job_id = await _queue(store, slow.url)
        for attempt in (1, 2):
            deadline = time.monotonic() + 1.0 + CLAIM_MARGIN_S + 3.0
            while not await outbox.deliver_due():
                assert time.monotonic() < deadline, "the event was not due again in time"
                await asyncio.sleep(0.2)
            await asyncio.sleep(0.3)
            (task,) = outbox.in_flight.values()
            task.cancel()  # the crash
            await asyncio.gather(task, return_exceptions=True)
            assert (await _entry(store, job_id))["attempts"] == attempt
        # Attempts used up mid-POST: the third claim gives up without posting again.
        deadline = time.monotonic() + 1.0 + CLAIM_MARGIN_S + 3.0
        while not await outbox.deliver_due():
            assert time.monotonic() < deadline
            await asyncio.sleep(0.2)
        await asyncio.gather(*outbox.in_flight.values())
    entry = await _entry(store, job_id)
    assert entry["given_up"] and entry["attempts"] == 2
    assert len(slow.received) == 2
