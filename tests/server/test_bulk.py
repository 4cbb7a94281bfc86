"""The bulk lane: big requests tokenize on a thread with a tokenizer copy of their own (core/server/bulk.py)."""

from __future__ import annotations

import threading

from poolkit import Engine
from poolkit.server.bulk import BulkLane


class _Uncopyable:
    def copy_tokenizer(self):
        raise TypeError("cannot pickle 'builtins.CoreBPE' object")  # what some remote-code tokenizers raise

    def use_tokenizer(self, tokenizer):  # pragma: no cover: never reached
        raise AssertionError


class _Engine:
    input_processor = _Uncopyable()
    served_model_name = "remote-code-model"


def test_a_tokenizer_that_cannot_be_copied_closes_the_lane_instead_of_breaking_it(caplog):
    """Big requests then take the tokenizer thread (under its lock): no broken pool, no 503 for a healthy server."""
    lane = BulkLane(_Engine(), threading.Lock())
    assert lane.executor() is None and lane.executor() is None  # asked once, refused for good
    assert "cannot be copied" in caplog.text and "remote-code-model" in caplog.text
    lane.shutdown()


def test_the_bulk_thread_and_io_processors_read_its_own_tokenizer(tiny_bert_dir):
    """The copy is made under the tokenizer lock and given to the bulk thread; an IO processor's
    ``ctx.tokenizer`` is read at each use, so on that thread it is the copy, never the shared tokenizer."""
    from poolkit.io_processor import IOProcessorContext

    engine = Engine(str(tiny_bert_dir))
    ctx = IOProcessorContext(name="x", plugin=None, input_processor=engine.input_processor,
                             model_config=engine.model_config, pooler_config=engine.pooler_config,
                             max_model_len=engine.max_model_len, max_input_tokens=engine.max_model_len,
                             supported_tasks=("embed",))
    lock = threading.Lock()
    lane = BulkLane(engine, lock)
    pool = lane.executor()
    shared = engine.tokenizer
    on_bulk = pool.submit(lambda: engine.input_processor.tokenizer).result()
    assert on_bulk is not shared and type(on_bulk) is type(shared)
    assert on_bulk("pooling")["input_ids"] == shared("pooling")["input_ids"]
    assert pool.submit(lambda: ctx.tokenizer).result() is on_bulk
    assert engine.tokenizer is shared and ctx.tokenizer is shared  # this thread keeps the model's own
    lane.shutdown()
