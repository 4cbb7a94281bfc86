"""Every route against a live server, with httpx and the official openai client."""

from __future__ import annotations

import base64
import json

import httpx
import numpy as np
import pytest
import torch

from poolkit import PoolingParams, testing


def post(server, path, **body):
    return httpx.post(server.url + path, json=body, timeout=60)


def test_openai_client_float_base64_dimensions(server, engines):
    import openai

    client = openai.OpenAI(base_url=server.url + "/v1", api_key="unused")
    texts = ["hello world", "a second, longer input text"]
    want = [o.outputs.data for o in engines["embedder"].embed(texts)]
    got = client.embeddings.create(model="embedder", input=texts)
    assert [d.index for d in got.data] == [0, 1] and got.usage.prompt_tokens > 0
    for d, w in zip(got.data, want):
        assert testing.max_abs_diff(torch.tensor(d.embedding), w) <= 1e-6
    b64 = client.embeddings.create(model="embedder", input=texts, encoding_format="base64")
    for d, w in zip(b64.data, want):  # asked for explicitly, the SDK hands back the base64 string
        vec = np.frombuffer(base64.b64decode(d.embedding), dtype="<f4")
        assert testing.max_abs_diff(vec, w) <= 1e-6
    small = client.embeddings.create(model="embedder", input="hello world", dimensions=16)
    ref = engines["embedder"].embed("hello world", PoolingParams(dimensions=16))[0].outputs.data
    assert len(small.data[0].embedding) == 16
    assert testing.max_abs_diff(torch.tensor(small.data[0].embedding), ref) <= 1e-6
    with pytest.raises(openai.BadRequestError, match="is not one of this model's matryoshka_dimensions"):
        client.embeddings.create(model="embedder", input="x", dimensions=12)


def test_raw_base64_is_little_endian_float32(server, engines):
    r = post(server, "/v1/embeddings", model="embedder", input="hello", encoding_format="base64")
    vec = np.frombuffer(base64.b64decode(r.json()["data"][0]["embedding"]), dtype="<f4")
    assert testing.max_abs_diff(vec, engines["embedder"].embed("hello")[0].outputs.data) <= 1e-6


def test_token_id_inputs(server, engines):
    ids = engines["embedder"].tokenizer("hello")["input_ids"]
    one = post(server, "/v1/embeddings", model="embedder", input=ids).json()
    two = post(server, "/v1/embeddings", model="embedder", input=[ids, ids]).json()
    assert len(one["data"]) == 1 and len(two["data"]) == 2
    assert one["data"][0]["embedding"] == pytest.approx(two["data"][1]["embedding"], abs=1e-6)


def test_pooling_route_any_task(server, engines):
    r = post(server, "/pooling", model="embedder", input=["tokens here"], task="token_embed")
    data = np.array(r.json()["data"][0]["data"])
    want = engines["embedder"].encode("tokens here", task="token_embed")[0].outputs.data
    assert data.shape == tuple(want.shape) and testing.max_abs_diff(data, want) <= 1e-6
    r = post(server, "/pooling", model="sentiment", input="fine", task="classify")
    assert len(r.json()["data"][0]["data"]) == 3
    r = post(server, "/pooling", model="embedder", input="x", task="classify")
    assert r.status_code == 400 and "Supported tasks" in r.json()["message"]
    # messages call the model by its served name, never by the directory it was loaded from
    assert "('embedder')" in r.json()["message"] and str(engines["embedder"].model_config.path) not in r.json()["message"]


def test_classify(server, engines):
    r = post(server, "/classify", model="sentiment", input=["great", "awful"]).json()
    want = engines["sentiment"].classify(["great", "awful"])
    for d, w in zip(r["data"], want):
        assert d["probs"] == pytest.approx(w.outputs.probs, abs=1e-6) and d["num_classes"] == 3
        assert d["label"] == ["neg", "neu", "pos"][int(np.argmax(d["probs"]))]


def test_score_forms(server, engines):
    docs = ["Paris is in France.", "Bread needs yeast.", "Berlin."]
    want = [o.outputs.score for o in engines["reranker"].score("capital of France", docs)]
    a = post(server, "/score", model="reranker", text_1="capital of France", text_2=docs).json()
    b = post(server, "/score", model="reranker", queries="capital of France", documents=docs).json()
    assert [d["score"] for d in a["data"]] == pytest.approx(want, abs=1e-6)
    assert [d["score"] for d in b["data"]] == pytest.approx(want, abs=1e-6)
    bi = post(server, "/score", model="embedder", text_1="a", text_2=["a", "b"]).json()
    assert bi["data"][0]["score"] == pytest.approx(1.0, abs=1e-5)
    bad = post(server, "/score", model="reranker", text_1=["a", "b"], text_2=["c", "d", "e"])
    assert bad.status_code == 400 and bad.json()["message"] == "Input lengths must be either 1:1, 1:N or N:N"


def test_embeddings_prompt_name(tmp_path):
    """/v1/embeddings takes prompt_name (an ST prompt), as SentenceTransformer.encode(prompt_name=...)."""
    import json

    from poolkit import Engine
    from poolkit.server.app import create_app
    from tests.server.conftest import LiveServer

    path = testing.build_tiny_bert(tmp_path / "m", seed=61)
    testing.save_as_sentence_transformer(path)
    cfg = path / "config_sentence_transformers.json"
    data = json.loads(cfg.read_text()) if cfg.is_file() else {}
    cfg.write_text(json.dumps({**data, "prompts": {"query": "query: "}}))
    engine = Engine(str(path))
    live = LiveServer(create_app(lambda: {"m": engine}))
    try:
        r = post(live, "/v1/embeddings", input="hello", prompt_name="query").json()
        want = engine.embed("hello", prompt_name="query")[0].outputs.data
        assert testing.max_abs_diff(torch.tensor(r["data"][0]["embedding"]), want) <= 1e-6
        assert testing.max_abs_diff(want, engine.embed("hello")[0].outputs.data) > 1e-3
        bad = post(live, "/v1/embeddings", input="hello", prompt_name="nope")
        assert bad.status_code == 400 and "nope" in bad.json()["message"]
    finally:
        live.stop()


def test_truncation_side_left_keeps_the_last_tokens(server, engines):
    text = "one two three four five six seven eight nine ten eleven twelve"
    ids = engines["embedder"].tokenizer(text)["input_ids"]
    for side, kept in (("left", ids[:1] + ids[-7:]), ("right", ids[:7] + ids[-1:]), (None, ids[:7] + ids[-1:])):
        r = post(server, "/v1/embeddings", model="embedder", input=text, truncate_prompt_tokens=8,
                 truncation_side=side).json()
        want = engines["embedder"].embed([kept])[0].outputs.data
        assert testing.max_abs_diff(torch.tensor(r["data"][0]["embedding"]), want) <= 1e-6, side
        assert r["usage"]["prompt_tokens"] == 8


@pytest.mark.parametrize("path", ["/v1/embeddings", "/pooling"])
def test_embed_dtype_and_endianness(server, engines, path):
    """vLLM's compact base64: float16 / bfloat16 elements, little or big endian, decoded independently here."""
    want = engines["embedder"].embed(["hello world"])[0].outputs.data.numpy()
    for dtype, endianness in (("float32", "big"), ("float16", "little"), ("float16", "big"), ("bfloat16", "little"),
                              ("bfloat16", "big"), ("float32", "native")):
        body = post(server, path, model="embedder", input=["hello world"], encoding_format="base64",
                    embed_dtype=dtype, endianness=endianness).json()
        raw = base64.b64decode(body["data"][0]["embedding" if path == "/v1/embeddings" else "data"])
        order = {"little": "<", "big": ">", "native": "="}[endianness]
        if dtype == "bfloat16":  # the top 16 bits of a float32
            got = (np.frombuffer(raw, dtype=order + "u2").astype(np.uint32) << 16).view(np.float32)
            assert np.abs(got - want).max() <= np.abs(want).max() * 2**-8, (dtype, endianness)
        else:
            got = np.frombuffer(raw, dtype=order + ("f2" if dtype == "float16" else "f4"))
            assert np.array_equal(got, want.astype(got.dtype)), (dtype, endianness)
    bad = post(server, path, model="embedder", input="x", encoding_format="base64", embed_dtype="int4")
    assert bad.status_code == 400


@pytest.mark.parametrize("model", ["reranker", "embedder"])
def test_empty_score_and_rerank_inputs_are_400(server, model):
    """vLLM answers an empty document list with a 400, not an empty 200 or a 1:N message."""
    for fields, name in ((dict(text_1="q", text_2=[]), "text_2"), (dict(queries="q", documents=[]), "documents"),
                         (dict(text_1=[], text_2=["d"]), "text_1")):
        r = post(server, "/score", model=model, **fields)
        assert r.status_code == 400 and r.json()["param"] == name and "is empty" in r.json()["message"], r.text
    for path in ("/rerank", "/v1/rerank", "/v2/rerank"):
        r = post(server, path, model=model, query="q", documents=[])
        assert r.status_code == 400 and r.json()["param"] == "documents", r.text
        assert "at least one document" in r.json()["message"]


@pytest.mark.parametrize("path", ["/rerank", "/v1/rerank", "/v2/rerank"])
def test_rerank_shapes(server, engines, path):
    docs = ["Paris is in France.", "Bread needs yeast.", {"text": "Berlin."}]
    plain = [d if isinstance(d, str) else d["text"] for d in docs]
    scores = [o.outputs.score for o in engines["reranker"].score("capital of France", plain)]
    r = post(server, path, model="reranker", query="capital of France", documents=docs, top_n=2).json()
    order = sorted(range(3), key=lambda i: -scores[i])[:2]
    assert [x["index"] for x in r["results"]] == order
    assert [x["relevance_score"] for x in r["results"]] == pytest.approx([scores[i] for i in order], abs=1e-6)
    assert r["results"][0]["document"]["text"] == plain[order[0]] and r["usage"]["total_tokens"] > 0
    r = post(server, path, model="reranker", query="q", documents=plain, return_documents=False).json()
    assert r["results"][0]["document"] is None and len(r["results"]) == 3


def test_tokenize_detokenize(server, engines):
    r = post(server, "/tokenize", model="embedder", prompt="hello world").json()
    assert r["tokens"] == engines["embedder"].tokenizer("hello world")["input_ids"] and r["count"] == len(r["tokens"])
    assert r["max_model_len"] == 512 and r["token_strs"] is None
    strs = post(server, "/tokenize", model="embedder", prompt="hello world", return_token_strs=True).json()
    assert strs["token_strs"] == ["[CLS]", "hello", "world", "[SEP]"] and strs["tokens"] == r["tokens"]
    d = post(server, "/detokenize", model="embedder", tokens=r["tokens"][1:-1]).json()
    assert d["prompt"] == "hello world"
    assert post(server, "/detokenize", model="embedder", tokens=[-1]).status_code == 400


def test_models_health_metrics_openapi(server):
    models = httpx.get(server.url + "/v1/models").json()
    assert [m["id"] for m in models["data"]] == ["embedder", "reranker", "sentiment"]
    assert httpx.get(server.url + "/health").status_code == 200
    metrics = httpx.get(server.url + "/metrics").text
    assert "poolkit_requests_total" in metrics and "poolkit_batch_tokens_bucket" in metrics
    assert "poolkit_queue_depth" in metrics and "poolkit_request_latency_seconds" in metrics
    for name in ("embedder", "reranker", "sentiment"):  # per-model series
        assert f'poolkit_queue_depth{{model="{name}"}}' in metrics
    assert 'poolkit_batch_tokens_count{model="embedder"}' in metrics
    paths = httpx.get(server.url + "/openapi.json").json()["paths"]
    for route in ("/v1/embeddings", "/pooling", "/classify", "/score", "/rerank", "/v2/rerank", "/tokenize"):
        assert route in paths


@pytest.mark.parametrize("body,status,needle", [
    ({"model": "nope", "input": "x"}, 404, "does not exist"),
    ({"model": "embedder"}, 400, "input"),
    ({"model": "embedder", "input": []}, 400, "empty"),
    ({"model": "embedder", "input": [1.5]}, 400, "input"),
    ({"model": "embedder", "input": [[1, 2], "x"]}, 400, "input"),
    ({"model": "embedder", "input": ["x"] * 65}, 413, "max_client_batch_size"),
    ({"model": "embedder", "input": "word " * 600}, 400, "maximum context length is 512 tokens. However, you requested 602 tokens"),
    ({"model": "embedder", "input": [[999999999]]}, 400, "vocabulary"),
    ({"model": "embedder", "input": "x", "dimensions": 0}, 400, "dimensions"),
    ({"model": "embedder", "input": "x", "encoding_format": "hex"}, 400, "encoding_format"),
])
def test_errors_are_openai_shaped(server, body, status, needle):
    r = post(server, "/v1/embeddings", **body)
    assert r.status_code == status, r.text
    err = r.json()
    assert err["object"] == "error" and err["code"] == status and needle in err["message"]
    assert set(err) == {"object", "message", "type", "param", "code"}


def test_invalid_json_is_400(server):
    r = httpx.post(server.url + "/v1/embeddings", content=b"{not json", headers={"content-type": "application/json"})
    assert r.status_code == 400 and r.json()["message"].startswith("Invalid JSON body")


LONE = "\ud800"  # a lone UTF-16 surrogate: valid JSON ("\ud800"), but no UTF-8 text can hold it


@pytest.mark.parametrize("path,body,status,field", [
    ("/v1/embeddings", {"input": LONE}, 400, "input"),
    ("/v1/embeddings", {"input": ["fine", "x" + LONE]}, 400, "input[1]"),
    ("/v1/embeddings", {"model": LONE, "input": "x"}, 400, "model"),
    ("/v1/embeddings", {"messages": [{"role": "user", "content": LONE}]}, 400, "messages[0].content"),
    ("/pooling", {"input": LONE, "task": "token_embed"}, 400, "input"),
    ("/classify", {"model": "sentiment", "input": [LONE]}, 400, "input[0]"),
    ("/score", {"model": "reranker", "text_1": "q", "text_2": ["d", LONE]}, 400, "text_2[1]"),
    ("/v1/score", {"model": "embedder", "queries": LONE, "documents": ["d"]}, 400, "queries"),
    ("/rerank", {"model": "reranker", "query": "q", "documents": [LONE]}, 400, "documents[0]"),
    ("/v1/rerank", {"model": "reranker", "query": LONE, "documents": ["d"]}, 400, "query"),
    ("/v2/rerank", {"model": "reranker", "query": "q", "documents": [{"text": LONE}]}, 400, "documents[0].text"),
    ("/v2/embed", {"texts": ["ok", LONE]}, 400, "texts[1]"),
    ("/tokenize", {"prompt": LONE}, 400, "prompt"),
    ("/tokenize", {"inputs": ["ok", LONE]}, 422, "inputs[1]"),  # TEI's body: TEI's validation status
    ("/rerank", {"model": "reranker", "query": "q", "texts": [LONE]}, 422, "texts[0]"),
    ("/embed", {"inputs": LONE}, 422, "input 0"),
    ("/embed_all", {"inputs": ["ok", LONE]}, 422, "input 1"),
    ("/predict", {"model": "sentiment", "inputs": LONE}, 422, "input 0"),
    ("/predict", {"model": "sentiment", "inputs": [["q", LONE]]}, 422, "pair 0 (its second text)"),
    ("/similarity", {"inputs": {"source_sentence": "a", "sentences": [LONE]}}, 422, "input 1"),
])
def test_text_that_cannot_be_encoded_is_a_4xx_naming_the_field(server, caplog, path, body, status, field):
    """Issue 21: a lone surrogate was a TypeError in the tokenizer (a logged 500) on every route."""
    import json
    import logging

    caplog.set_level(logging.INFO, logger="poolkit")
    r = httpx.post(server.url + path, content=json.dumps(body), headers={"content-type": "application/json"},
                   timeout=60)
    assert r.status_code == status, r.text
    message = r.json()["message" if status == 400 else "error"]
    assert message.startswith(f"{field} is not valid Unicode text") and "U+D800" in message, message
    if status == 400:
        assert r.json()["param"] == field.split("[")[0].split(" ")[0]
    assert not [rec for rec in caplog.records if rec.exc_info], "a client error logged a traceback"


@pytest.mark.parametrize("path,body,field", [
    ("/v1/embeddings", {"input": "x", "dimensions": True}, "dimensions"),
    ("/v1/embeddings", {"input": "x", "dimensions": "8"}, "dimensions"),
    ("/v1/embeddings", {"input": "x", "normalize": "false"}, "normalize"),
    ("/v1/embeddings", {"input": "x", "truncate_prompt_tokens": 0}, "truncate_prompt_tokens"),
    ("/v1/embeddings", {"input": "x", "truncate_prompt_tokens": 8.0}, "truncate_prompt_tokens"),
    ("/v1/embeddings", {"input": [[101, True, 102]]}, "input"),
    ("/pooling", {"input": "x", "priority": "1"}, "priority"),
    ("/rerank", {"model": "reranker", "query": "q", "documents": ["d"], "top_n": "1"}, "top_n"),
    ("/v2/embed", {"texts": ["x"], "output_dimension": True}, "output_dimension"),
    ("/tokenize", {"prompt": "x", "add_special_tokens": 0}, "add_special_tokens"),
])
def test_numeric_and_boolean_fields_are_strict(server, path, body, field):
    """``true`` is not 1 and ``"8"`` is not 8: a 400 naming the field (was: taken as 1 and 8)."""
    r = post(server, path, **body)
    assert r.status_code == 400 and r.json()["param"] == field, r.text
    if body[field] in ("8", True):  # the message names the value it got, as JSON
        assert f"(got {json.dumps(body[field])})" in r.json()["message"], r.text
    if field == "truncate_prompt_tokens" and body[field] == 0:
        assert "-1" in r.json()["message"] and "at least 1" in r.json()["message"]


def test_an_empty_string_is_a_400_on_the_openai_and_tei_routes(server, engines):
    """OpenAI answers ``""`` with a 400 (was a 200), TEI with its ``empty`` 400; Engine.embed("") embeds the
    special tokens alone, as SentenceTransformer.encode("") does."""
    r = post(server, "/v1/embeddings", input="")
    assert r.status_code == 400 and r.json()["param"] == "input" and "empty" in r.json()["message"]
    r = post(server, "/v1/embeddings", input=["fine", ""])
    assert r.status_code == 400 and r.json()["message"].startswith("input[1] is an empty string")
    r = post(server, "/embed", inputs="")
    assert r.status_code == 400 and r.json() == {"error": "`inputs` cannot be empty", "error_type": "empty"}
    [out] = engines["embedder"].embed("")
    assert out.prompt_token_ids == engines["embedder"].tokenizer("")["input_ids"]


def test_a_server_error_logs_one_traceback_and_client_errors_none(server, engines, monkeypatch, caplog):
    """A bug is logged once per request, with its traceback (OpenAI and TEI routes); a 4xx is never logged
    with one."""
    import logging

    engine = engines["embedder"]
    real = engine.run_batch

    def faulty(adapter, tokens, params):
        if any(4242 in t.ids for t in tokens):
            raise RuntimeError("injected bug")
        return real(adapter, tokens, params)

    monkeypatch.setattr(engine, "run_batch", faulty)
    caplog.set_level(logging.INFO, logger="poolkit")
    for path, body in (("/v1/embeddings", {"input": [[101, 4242, 102]]}), ("/embed", {"inputs": [101, 4242, 102]})):
        caplog.clear()
        r = post(server, path, **body)
        assert r.status_code == 500, r.text
        rid = r.headers["x-request-id"]
        logged = [rec for rec in caplog.records if rec.exc_info]
        assert len(logged) == 1 and rid in logged[0].getMessage(), [rec.getMessage() for rec in logged]
        assert "injected bug" in str(logged[0].exc_info[1])
    caplog.clear()
    for path, body in (("/v1/embeddings", {"input": "word " * 600}), ("/embed", {"inputs": ""}),
                       ("/v1/embeddings", {"model": "nope", "input": "x"}), ("/rerank", {"query": 1})):
        assert 400 <= post(server, path, **body).status_code < 500
    assert not [rec for rec in caplog.records if rec.exc_info]


def test_embeddings_request_looks_up_its_model_and_normalizes_its_prompts_once(server, engines, monkeypatch):
    """Issue 22: each request field is read once, where it is defined (not once per module it passes)."""
    import poolkit.engine
    import poolkit.server.routes.common
    from poolkit.inputs import Prompts, normalize_prompts
    from poolkit.server.state import ServerState

    lookups, normalized = [], []
    real_model = ServerState.model

    def model(self, name):
        lookups.append(name)
        return real_model(self, name)

    def normalize(prompts):
        if not isinstance(prompts, Prompts):  # a list normalized already passes through untouched
            normalized.append(prompts)
        return normalize_prompts(prompts)

    monkeypatch.setattr(ServerState, "model", model)
    for module in (poolkit.engine, poolkit.server.routes.common):
        monkeypatch.setattr(module, "normalize_prompts", normalize)
    r = post(server, "/v1/embeddings", model="embedder", input=["one", "two"], dimensions=16)
    assert r.status_code == 200 and len(r.json()["data"][1]["embedding"]) == 16
    assert lookups == ["embedder"] and normalized == [["one", "two"]]
