"""deployments/models/priority_gate.py: live turns pass batch work between forward passes;
and the real transcriber core decoding both lanes at once."""

from __future__ import annotations

import threading
import time

import numpy as np

from deployments.core.schemas import TranscribeOptions
from deployments.models.priority_gate import LIVE_BATCH, PriorityGate, gated


def test_a_waiting_live_pass_goes_before_waiting_batch_passes():
    gate, order = PriorityGate(), []

    def passes():
        for step in range(3):
            time.sleep(0.1)  # a forward pass, run inside next()
            yield step

    def batch_work(name: str) -> None:
        for step in gated(passes(), gate, live=False):
            order.append((name, step))

    def live_work() -> None:
        with gate.hold(live=True):
            order.append(("live", 0))

    batch = threading.Thread(target=batch_work, args=("batch",))
    batch.start()
    time.sleep(0.03)  # inside the batch's first pass
    live = threading.Thread(target=live_work)
    live.start()
    batch.join()
    live.join()
    # The live pass runs as soon as the pass in progress ends, not after all three.
    assert order.index(("live", 0)) == 1, order
    assert [s for n, s in order if n == "batch"] == [0, 1, 2]


def test_batch_passes_shrink_while_live_traffic_is_recent():
    gate = PriorityGate()
    assert gate.batch_size(8, live=False) == 8
    with gate.hold(live=True):
        pass
    assert gate.batch_size(8, live=False) == LIVE_BATCH
    assert gate.batch_size(8, live=True) == 8


def test_both_lanes_decode_at_once_with_the_results_of_each_alone(whisper_core, jfk_audio):
    opts = TranscribeOptions()
    long = np.concatenate([jfk_audio, np.zeros(16000, np.float32)] * 3)
    alone = [whisper_core.transcribe_many([a], [opts])[0].text for a in (long, jfk_audio)]
    got: dict[bool, str] = {}

    def run(audio, live: bool) -> None:
        got[live] = whisper_core.transcribe_many([audio], [opts], live=live)[0].text

    threads = [threading.Thread(target=run, args=(long, False)),
               threading.Thread(target=run, args=(jfk_audio, True))]  # fmt: skip
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert [got[False], got[True]] == alone


def test_the_async_lock_lets_a_live_call_past_queued_batch_calls():
    import asyncio

    from deployments.models.priority_gate import AsyncPriorityLock

    async def run() -> list[str]:
        lock, order = AsyncPriorityLock(), []

        async def call(name: str, live: bool) -> None:
            async with lock.hold(live):
                order.append(name)
                await asyncio.sleep(0.02)

        tasks = [asyncio.create_task(call(f"job{i}", False)) for i in range(3)]
        await asyncio.sleep(0.005)  # job0 holds the lock, job1 and job2 wait
        tasks.append(asyncio.create_task(call("live", True)))
        await asyncio.gather(*tasks)
        return order

    assert asyncio.run(run()) == ["job0", "live", "job1", "job2"]
