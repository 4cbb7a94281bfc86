"""The engine loop and a model's queue, with a fake engine: who tokenizes, batching, errors, shutdown."""

from __future__ import annotations

import asyncio
import threading
import time
from functools import partial
from types import SimpleNamespace

import pytest

from poolkit.request import Prepared
from poolkit.server.errors import APIError
from poolkit.server.engine_loop import EngineLoop
from poolkit.server.queue import ModelWorker


class FakeEngine:
    """prepare: one prompt per text, ids of its length; run_batch: each prompt's text length, slowly."""

    max_batch_tokens = 64

    def __init__(self, forward_seconds: float = 0.0) -> None:
        self.forward_seconds = forward_seconds
        self.prepared_on: list[str] = []
        self.batches: list[int] = []
        self.adapter = object()

    def prepare(self, texts: list[str]):
        self.prepared_on.append(threading.current_thread().name)
        if any(t == "bad" for t in texts):
            raise ValueError("bad input")
        tokens = [SimpleNamespace(ids=list(range(len(t)))) for t in texts]
        return Prepared(self.adapter, tokens, [None] * len(texts))

    def run_batch(self, adapter, tokens, params):
        time.sleep(self.forward_seconds)
        self.batches.append(len(tokens))
        return [len(t.ids) for t in tokens]


@pytest.fixture
def loop_and_worker():
    made = []

    def make(engine, **kwargs):
        engine_loop = EngineLoop()
        worker = ModelWorker(engine, engine_loop, **kwargs)
        engine_loop.start()
        made.append((engine_loop, worker))
        return engine_loop, worker

    yield make
    for engine_loop, worker in made:
        worker.close()
        engine_loop.stop()


def run(worker, engine, texts):
    return worker.run(engine.prepare, texts)


def test_idle_loop_tokenizes_itself_busy_loop_leaves_it_to_the_tokenizer_thread(loop_and_worker):
    engine = FakeEngine(forward_seconds=0.05)
    _, worker = loop_and_worker(engine)

    async def scenario():
        await asyncio.sleep(0.05)  # the loop is waiting for work
        prepared, pooled = await run(worker, engine, ["abc", "de"])
        assert pooled == [3, 2] and len(prepared.tokens) == 2
        first = engine.prepared_on[-1]
        # while a batch runs, more requests arrive: the tokenizer thread prepares them
        results = await asyncio.gather(*(run(worker, engine, ["x" * (i + 1)]) for i in range(12)))
        return first, [r[1] for r in results]

    first, pooled = asyncio.run(scenario())
    assert first == "poolkit-engine-loop"
    assert pooled == [[i + 1] for i in range(12)]  # every result back to its own request, in order
    assert any(name.startswith("poolkit-tokenize") for name in engine.prepared_on)
    assert max(engine.batches) > 1  # requests that waited together share a forward pass


def test_bad_input_fails_its_request_on_either_path(loop_and_worker):
    engine = FakeEngine(forward_seconds=0.02)
    _, worker = loop_and_worker(engine)

    async def scenario():
        await asyncio.sleep(0.05)
        with pytest.raises(ValueError, match="bad input"):  # idle: prepared on the engine loop
            await run(worker, engine, ["bad"])
        outcome = await asyncio.gather(run(worker, engine, ["fine"]), run(worker, engine, ["bad"]),
                                       run(worker, engine, ["also fine"]), return_exceptions=True)
        return outcome

    good, bad, also = asyncio.run(scenario())
    assert good[1] == [4] and also[1] == [9] and isinstance(bad, ValueError)


def test_plugin_style_requests_never_run_on_the_engine_loop(loop_and_worker):
    engine = FakeEngine()
    _, worker = loop_and_worker(engine)

    async def scenario():
        await asyncio.sleep(0.05)
        return await worker.run(engine.prepare, ["abc"], direct=False)

    assert asyncio.run(scenario())[1] == [3]
    assert engine.prepared_on == ["poolkit-tokenize_0"]


def test_closed_worker_answers_503_and_drains(loop_and_worker):
    engine = FakeEngine(forward_seconds=0.02)
    engine_loop, worker = loop_and_worker(engine)

    async def scenario():
        pending = [asyncio.ensure_future(run(worker, engine, ["abcd"])) for _ in range(5)]
        await asyncio.sleep(0.01)
        await asyncio.get_running_loop().run_in_executor(None, worker.close)
        with pytest.raises(APIError) as err:
            await run(worker, engine, ["late"])
        return err.value.status, await asyncio.gather(*pending)

    status, done = asyncio.run(scenario())
    assert status == 503 and all(r[1] == [4] for r in done)


def test_a_client_whose_event_loop_is_gone_does_not_stop_the_engine_loop(loop_and_worker):
    engine = FakeEngine(forward_seconds=0.2)
    _, worker = loop_and_worker(engine)

    async def leave_early():
        with pytest.raises(asyncio.TimeoutError):
            await asyncio.wait_for(run(worker, engine, ["abc"]), 0.05)

    asyncio.run(leave_early())  # its event loop is closed before the forward pass ends
    time.sleep(0.3)

    async def next_request():
        return await asyncio.wait_for(run(worker, engine, ["abcdef"]), 10)

    assert asyncio.run(next_request())[1] == [6]


def test_a_request_larger_than_the_whole_queue_is_413_not_429(loop_and_worker):
    engine = FakeEngine()
    _, worker = loop_and_worker(engine, max_queue_tokens=10)

    async def scenario():
        with pytest.raises(APIError) as too_big:
            await run(worker, engine, ["x" * 11])
        return too_big.value.status, await run(worker, engine, ["x" * 10])

    status, fits = asyncio.run(scenario())
    assert status == 413 and fits[1] == [10]


def _queued(worker, engine, texts, priority=0):
    """Queue a request directly (no engine loop thread): its _Request."""
    from poolkit.server.queue import _Request

    request = _Request(asyncio.new_event_loop().create_future(), priority)
    worker._prepare_and_queue(partial(engine.prepare, texts), request)
    return request


def test_batches_are_filled_round_robin_least_served_first():
    engine = FakeEngine()
    worker = ModelWorker(engine, EngineLoop(), max_batch_tokens=40)  # 5 prompts of 8 tokens per batch
    bulk = _queued(worker, engine, ["b" * 8] * 20)
    first = worker._next_batch()
    assert [i.request for i in first] == [bulk] * 5
    single = _queued(worker, engine, ["s" * 8])  # arrives while the bulk request is being computed
    second = worker._next_batch()
    assert second[0].request is single and len(second) == 5  # the next pass, first in it, the rest bulk
    two = _queued(worker, engine, ["t" * 8] * 2)
    third = worker._next_batch()
    assert [i.request for i in third][:2] == [two, bulk] and sum(i.request is two for i in third) == 2


def test_priority_is_strict():
    engine = FakeEngine()
    worker = ModelWorker(engine, EngineLoop(), max_batch_tokens=40)
    low = _queued(worker, engine, ["l" * 8] * 10)
    urgent = _queued(worker, engine, ["u" * 8] * 7, priority=-1)
    assert [i.request for i in worker._next_batch()] == [urgent] * 5
    assert [i.request for i in worker._next_batch()] == [urgent] * 2 + [low] * 3  # what is left goes to the rest


def test_a_new_short_request_gets_a_short_pass_of_its_own_at_most_every_other_batch():
    engine = FakeEngine()
    worker = ModelWorker(engine, EngineLoop(), max_batch_tokens=128)  # 4 bulk prompts of 32 tokens per pass
    bulk = _queued(worker, engine, ["b" * 32] * 40)
    assert [i.request for i in worker._next_batch()] == [bulk] * 4
    single = _queued(worker, engine, ["s" * 4])
    assert [i.request for i in worker._next_batch()] == [single]  # not padded to 32 nor taking a bulk slot
    another = _queued(worker, engine, ["a" * 4])
    third = worker._next_batch()  # the bulk request's turn: the new one rides along, no second short pass
    assert [i.request for i in third] == [another] + [bulk] * 3
    late = _queued(worker, engine, ["l" * 4])
    assert [i.request for i in worker._next_batch()] == [late]


def test_the_engine_loop_serves_any_worker_through_its_public_api():
    """Issue 22: the loop asks a worker only ``due`` / ``take_work`` / ``work_done`` (it mutated ModelWorker's
    private fields before), most due first, and a worker joins with ``EngineLoop.add``."""

    class Queue:
        def __init__(self, name, keys):
            self.name, self.keys, self.calls = name, list(keys), []

        def due(self):
            return (self.keys[0],) if self.keys else None

        def take_work(self):
            key = self.keys.pop(0)
            return lambda: ran.append((self.name, key))

        def work_done(self):
            self.calls.append("done")

    ran: list = []
    engine_loop = EngineLoop()
    a, b = Queue("a", [2, 5]), Queue("b", [1, 3])
    engine_loop.add(a)
    engine_loop.add(b)
    engine_loop.run(until=lambda: True)
    assert ran == [("b", 1), ("a", 2), ("b", 3), ("a", 5)]
    assert a.calls == b.calls == ["done", "done"]
