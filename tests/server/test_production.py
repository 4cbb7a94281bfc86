"""The server under faults and mixed traffic (issue 11): a model bug fails only its request, errors are
classified where they arise, per-request checks run at admission, cancelled clients' work is dropped."""

from __future__ import annotations

import asyncio
import logging
import time

import httpx
import numpy as np
import pytest

from poolkit import Engine, testing
from poolkit.builtin_models.bert import BertForEmbedding
from poolkit.server.app import create_app
from tests.server.conftest import LiveServer

POISON = 4242  # a token id that makes FaultyBert's forward pass raise


class FaultyBert(BertForEmbedding):
    """BERT whose forward pass raises (a ValueError: a bug, not bad input) for any batch holding POISON,
    and takes at least ``delay`` seconds, so that concurrent requests queue up and share passes."""

    delay = 0.0
    passes = 0

    def forward(self, batch):
        time.sleep(FaultyBert.delay)
        FaultyBert.passes += 1
        if bool((batch.input_ids == POISON).any()):
            raise ValueError("injected fault in model code")
        return super().forward(batch)


@pytest.fixture(scope="module")
def faulty_dir(tmp_path_factory):
    return testing.build_tiny_bert(tmp_path_factory.mktemp("faulty"), architectures=["FaultyBertModel"], seed=5,
                                   is_matryoshka=True)


@pytest.fixture(scope="module")
def faulty(faulty_dir):
    with testing.plugin_parts(architectures={"FaultyBertModel": FaultyBert}):
        engine = Engine(str(faulty_dir), max_batch_tokens=4096)
        live = LiveServer(create_app(lambda: {"faulty": engine}))
        yield live, engine
        live.stop()


def _embed_all(url, bodies, timeout=60):
    async def run():
        async with httpx.AsyncClient(base_url=url, timeout=timeout) as client:
            return await asyncio.gather(*(client.post("/v1/embeddings", json=b) for b in bodies))

    return asyncio.run(run())


def test_a_bug_in_model_code_fails_only_the_request_that_triggers_it(faulty, caplog):
    live, engine = faulty
    FaultyBert.delay = 0.3  # the first request's pass runs while the others queue: they share the next one
    texts = [f"text number {i} " * (i + 1) for i in range(6)]
    bodies = [{"input": "first, alone"}] + [{"input": t} for t in texts[:3]] + [{"input": [[101, POISON, 102]]}] + \
             [{"input": t} for t in texts[3:]]
    caplog.set_level(logging.INFO, logger="poolkit")
    try:
        before = FaultyBert.passes
        responses = _embed_all(live.url, bodies)
    finally:
        FaultyBert.delay = 0.0
    poisoned = responses[4]
    others = responses[:4] + responses[5:]
    assert [r.status_code for r in others] == [200] * 7, [r.text for r in others]
    assert FaultyBert.passes - before >= 3  # one shared pass failed, then its requests ran one by one
    want = [o.outputs.data.numpy() for o in engine.embed(["first, alone", *texts])]
    for r, w in zip(others, want):
        assert testing.max_abs_diff(np.array(r.json()["data"][0]["embedding"]), w) <= 1e-6
    assert poisoned.status_code == 500
    body, rid = poisoned.json(), poisoned.headers["x-request-id"]
    assert body["object"] == "error" and body["type"] == "InternalServerError" and rid in body["message"]
    assert "injected" not in poisoned.text and "ValueError" not in poisoned.text  # no internal text for clients
    logged = [r for r in caplog.records if r.name == "poolkit.server" and rid in r.getMessage()]
    assert logged and logged[0].exc_info and "injected fault in model code" in str(logged[0].exc_info[1])
    assert httpx.get(live.url + "/health").status_code == 200


def test_per_request_checks_run_at_admission(faulty):
    live, _ = faulty
    wide, fine = _embed_all(live.url, [{"input": "x", "dimensions": 64}, {"input": "y", "dimensions": 16}])
    assert wide.status_code == 400 and "dimensions=64 is larger than the model's 32 output dimensions" in wide.text
    assert wide.json()["param"] == "dimensions"
    assert fine.status_code == 200 and len(fine.json()["data"][0]["embedding"]) == 16
    unsupported = httpx.post(live.url + "/pooling", json={"input": "x", "task": "classify"})
    assert unsupported.status_code == 400 and "Supported tasks" in unsupported.json()["message"]


def test_an_abandoned_request_is_dropped_before_it_is_computed(faulty):
    live, _ = faulty
    FaultyBert.delay = 0.05  # ~1,000 prompts / 16 per pass: >3 s of work if nobody cancelled it
    try:
        def cancelled() -> float:
            line = next(x for x in httpx.get(live.url + "/metrics").text.splitlines()
                        if x.startswith('poolkit_cancelled_prompts_total{model="faulty"}'))
            return float(line.split()[-1])

        before, passes = cancelled(), FaultyBert.passes
        with pytest.raises(httpx.ReadTimeout):
            httpx.post(live.url + "/v1/embeddings", json={"input": ["word " * 250] * 1000}, timeout=1.5)
        start = time.perf_counter()
        r = httpx.post(live.url + "/v1/embeddings", json={"input": "right after"}, timeout=30)
        took = time.perf_counter() - start
        assert r.status_code == 200
        assert took < 1.0, f"{took:.2f} s: the abandoned request's prompts were computed"
        assert FaultyBert.passes - passes < 45  # far fewer than the abandoned request's 63 passes
        deadline = time.time() + 5
        while cancelled() - before < 500 and time.time() < deadline:
            time.sleep(0.05)
        assert cancelled() - before >= 500
    finally:
        FaultyBert.delay = 0.0


def test_a_one_text_request_joins_the_next_forward_pass_of_a_bulk_request(faulty):
    live, _ = faulty
    FaultyBert.delay = 0.05  # 800 prompts at 16 per pass: ~50 passes, ~2.5 s
    try:
        async def run():
            async with httpx.AsyncClient(base_url=live.url, timeout=60) as client:
                bulk = asyncio.create_task(client.post("/v1/embeddings", json={"input": ["word " * 250] * 800}))
                await asyncio.sleep(0.5)
                start = time.perf_counter()
                single = await client.post("/v1/embeddings", json={"input": "a short one"})
                single_s = time.perf_counter() - start
                done_before_bulk = not bulk.done()
                return single, single_s, done_before_bulk, await bulk

        single, single_s, done_before_bulk, bulk = asyncio.run(run())
        assert single.status_code == 200 and bulk.status_code == 200 and len(bulk.json()["data"]) == 800
        assert done_before_bulk and single_s < 0.5, f"{single_s:.2f} s: waited behind the bulk request"
    finally:
        FaultyBert.delay = 0.0


def test_bug_in_a_task_adapter_is_500_and_bad_config_stops_the_engine_build(tiny_st_dir):
    from poolkit.builtin_poolers.tasks import EmbedTask

    class BrokenEmbed(EmbedTask):
        name = "broken_embed"

        def pool(self, hidden, batch, params):
            raise TypeError("a bug in the task adapter")

    from poolkit.registry import UnknownPoolerError

    with pytest.raises(UnknownPoolerError, match="Unknown pooling type 'NOSUCH'"):  # at build, not at a request
        Engine(str(tiny_st_dir), pooler_config={"pooling_type": "NOSUCH"})
    engine = Engine(str(tiny_st_dir))
    engine._adapters["embed"] = BrokenEmbed(engine._ctx)  # a plugin's bug at request time
    live = LiveServer(create_app(lambda: {"m": engine}))
    try:
        r = httpx.post(live.url + "/v1/embeddings", json={"input": "x"})
        assert r.status_code == 500 and r.json()["type"] == "InternalServerError"
        assert r.headers["x-request-id"] in r.json()["message"] and "a bug" not in r.text
    finally:
        live.stop()


@pytest.fixture(scope="module")
def tiny_st_dir(tmp_path_factory):
    """A tiny BERT saved as a Sentence Transformers model: MEAN pooling, Normalize, max_seq_length 16."""
    path = testing.build_tiny_bert(tmp_path_factory.mktemp("tiny_st"), seed=8)
    return testing.save_as_sentence_transformer(path, pooling_mode="mean", max_seq_length=16)


def test_one_truncation_limit_reported_and_applied(tiny_st_dir):
    from sentence_transformers import SentenceTransformer

    long_text = "many words in a row " * 20
    engine = Engine(str(tiny_st_dir))
    assert engine.max_model_len == 16 and engine.auto_truncate
    strict = Engine(str(tiny_st_dir), auto_truncate=False)
    live = LiveServer(create_app(lambda: {"st": engine, "strict": strict}))
    try:
        [card] = [m for m in httpx.get(live.url + "/v1/models").json()["data"] if m["id"] == "st"]
        assert card["max_model_len"] == 16
        assert httpx.post(live.url + "/tokenize", json={"model": "st", "prompt": "x"}).json()["max_model_len"] == 16
        r = httpx.post(live.url + "/v1/embeddings", json={"model": "st", "input": long_text})
        assert r.status_code == 200 and r.json()["usage"]["prompt_tokens"] == 16  # the tokens actually used
        want = SentenceTransformer(str(tiny_st_dir), device="cpu").encode([long_text])[0]  # ST truncates alike
        assert testing.max_abs_diff(np.array(r.json()["data"][0]["embedding"]), want) <= 1e-5
        r = httpx.post(live.url + "/v1/embeddings", json={"model": "strict", "input": long_text})
        assert r.status_code == 400
        assert r.json()["message"].startswith("This model's maximum context length is 16 tokens. However, you "
                                              "requested 102 tokens")
        ok = httpx.post(live.url + "/v1/embeddings", json={"model": "strict", "input": long_text,
                                                           "truncate_prompt_tokens": -1})
        assert ok.status_code == 200 and ok.json()["usage"]["prompt_tokens"] == 16
    finally:
        live.stop()


def test_head_health_and_offline_docs(faulty):
    live, _ = faulty
    assert httpx.head(live.url + "/health").status_code == 200
    page = httpx.get(live.url + "/docs")
    assert page.status_code == 200 and "swagger-ui" in page.text
    assert "cdn" not in page.text.lower() and "https://" not in page.text  # nothing fetched from elsewhere
    for asset in ("swagger-ui-bundle.js", "swagger-ui.css"):
        got = httpx.get(f"{live.url}/docs/assets/{asset}")
        assert got.status_code == 200 and len(got.content) > 10_000
    assert httpx.get(live.url + "/docs/assets/index.html").status_code == 404  # in the bundle, not served
    assert httpx.get(live.url + "/docs/assets/..%2Fsecret").status_code == 404


def test_api_key_compared_whole(tiny_st_dir):
    engine = Engine(str(tiny_st_dir))
    live = LiveServer(create_app(lambda: {"m": engine}, api_key="s3cret"))
    try:
        for header in ("Bearer s3cre", "Bearer s3cret2", "bearer s3cret", "s3cret"):
            assert httpx.post(live.url + "/v1/embeddings", json={"input": "x"},
                              headers={"Authorization": header}).status_code == 401
        assert httpx.post(live.url + "/v1/embeddings", json={"input": "x"},
                          headers={"Authorization": "Bearer s3cret"}).status_code == 200
    finally:
        live.stop()
