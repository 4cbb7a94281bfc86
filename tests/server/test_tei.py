"""TEI's HTTP API on live servers (one model type each, as TEI serves), with the real ``huggingface_hub``
client and raw httpx: shapes, ``/`` per model type, truncation, TEI's error bodies and statuses.

References: poolkit's Engine on the same model (<= 1e-6: the same code path, so the route adds nothing),
and where the route builds something of its own an independent one: transformers' pair classifier and
last hidden states (<= 1e-5), Sentence Transformers' SparseEncoder (<= 1e-4), the tokenizer's own ids.
"""

from __future__ import annotations

import httpx
import numpy as np
import pytest
import torch
from starlette.requests import Request

from poolkit import Engine, PoolingParams, testing
from poolkit.server.app import create_app
from poolkit.server.errors import APIError, Overloaded
from poolkit.server.routes.tei import tei_error
from poolkit.server.state import Limits
from tests.builtin_models.builders_splade import build_tiny_mlm, save_as_sparse_encoder, sparse_encoder_reference
from tests.server.conftest import LiveServer

LONG = " ".join(f"token{i} word" for i in range(30))  # ~100 tokens: longer than the ST model's 16


def post(live, path, **body):
    return httpx.post(live.url + path, json=body, timeout=60)


@pytest.fixture(scope="module")
def st_dir(tmp_path_factory):
    """A Sentence Transformers embedder (mean pooling, Normalize) with max_seq_length 16: it auto-truncates."""
    path = testing.build_tiny_bert(tmp_path_factory.mktemp("tei_st"), seed=7)
    return testing.save_as_sentence_transformer(path, max_seq_length=16)


@pytest.fixture(scope="module")
def splade_dir(tmp_path_factory):
    return save_as_sparse_encoder(build_tiny_mlm(tmp_path_factory.mktemp("tei_mlm")), tmp_path_factory.mktemp("tei_se"))


@pytest.fixture(scope="module")
def st(st_dir):
    return Engine(str(st_dir))


@pytest.fixture(scope="module")
def splade(splade_dir):
    return Engine(str(splade_dir))


@pytest.fixture(scope="module")
def live(engines, st, splade):
    """One server per TEI model type; the embedding one also serves ``embedder`` (picked with ``model``)."""
    served = {"embedding": {"st": st, "embedder": engines["embedder"]},
              "classifier": {"sentiment": engines["sentiment"]}, "reranker": {"reranker": engines["reranker"]},
              "splade": {"splade": splade}}
    servers = {kind: LiveServer(create_app(lambda m=m: m, limits=Limits(max_client_batch_size=8)))
               for kind, m in served.items()}
    yield servers
    for s in servers.values():
        s.stop()


def _client(server):
    from huggingface_hub import InferenceClient

    return InferenceClient(base_url=server.url)


# --- huggingface_hub's InferenceClient, unmodified ------------------------------------------------------------


def test_feature_extraction_client(live, st):
    client = _client(live["embedding"])
    texts = ["hello world", "a second, longer input text"]
    got = client.feature_extraction(texts)
    want = torch.stack([o.outputs.data for o in st.embed(texts)])
    assert got.dtype == np.float32 and got.shape == tuple(want.shape)
    assert testing.max_abs_diff(got, want) <= 1e-6
    one = client.feature_extraction("hello world")  # TEI answers a single input as a batch of one
    assert one.shape == (1, want.shape[1]) and testing.max_abs_diff(one[0], want[0]) <= 1e-6
    raw = client.feature_extraction("hello world", normalize=False)
    ref = st.embed("hello world", PoolingParams(normalize=False))[0].outputs.data
    assert abs(float(ref.norm()) - 1) > 1e-3 and testing.max_abs_diff(raw[0], ref) <= 1e-6


def test_feature_extraction_truncation_left_keeps_the_last_tokens(live, st, st_dir):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(st_dir)
    right = tok(LONG, truncation=True, max_length=16)["input_ids"]
    tok.truncation_side = "left"
    left = tok(LONG, truncation=True, max_length=16)["input_ids"]
    assert left[0] == right[0] and left[-1] == right[-1] and left[1:-1] != right[1:-1]  # [CLS] ... [SEP] kept
    [tokens] = st.prepare(LONG, "embed", PoolingParams(truncation_side="left")).tokens
    assert tokens.ids == left  # the input processor's left truncation is the tokenizer's
    want_left, want_right = (st.embed([ids])[0].outputs.data for ids in (left, right))
    assert testing.max_abs_diff(want_left, want_right) > 1e-3
    got = _client(live["embedding"]).feature_extraction(LONG, truncate=True, truncation_direction="left")
    assert testing.max_abs_diff(got[0], want_left) <= 1e-6
    for body in ({"truncate": True, "truncation_direction": "Left"}, {"truncation_direction": "left"}):
        r = post(live["embedding"], "/embed", inputs=LONG, **body)  # truncate unset: the model auto-truncates
        assert testing.max_abs_diff(torch.tensor(r.json()[0]), want_left) <= 1e-6, body
    r = post(live["embedding"], "/embed", inputs=LONG)
    assert testing.max_abs_diff(torch.tensor(r.json()[0]), want_right) <= 1e-6
    r = post(live["embedding"], "/embed", inputs=LONG, truncate=False)  # TEI: no truncation, so too long
    assert r.status_code == 422 and r.json()["error_type"] == "validation"
    assert "maximum context length is 16 tokens" in r.json()["error"]


def test_sentence_similarity_client(live, st):
    sims = _client(live["embedding"]).sentence_similarity("a cat sat", ["a cat sat", "stock markets", "dogs"])
    v = [o.outputs.data for o in st.embed(["a cat sat", "stock markets", "dogs"])]
    want = [float(torch.nn.functional.cosine_similarity(v[0], x, dim=0)) for x in v]
    assert sims == pytest.approx(want, abs=1e-6) and sims[0] == pytest.approx(1.0, abs=1e-6)
    r = post(live["embedding"], "/similarity", inputs={"source_sentence": "a cat sat", "sentences": ["dogs"]})
    assert r.json() == pytest.approx(want[2:], abs=1e-6)


def test_text_classification_client(live, engines):
    """TEI answers one text with a flat list, so the client hands back its first entry: the top label."""
    top = _client(live["classifier"]).text_classification("great movie")
    probs = engines["sentiment"].classify("great movie")[0].outputs.probs
    best = int(np.argmax(probs))
    assert top.label == ["neg", "neu", "pos"][best] and top.score == pytest.approx(probs[best], abs=1e-6)


# --- each route's shape ---------------------------------------------------------------------------------------


def test_predict_texts_pairs_and_raw_scores(live, engines, model_dirs):
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    server, labels = live["classifier"], ["neg", "neu", "pos"]
    one = post(server, "/predict", inputs="great movie").json()
    probs = engines["sentiment"].classify("great movie")[0].outputs.probs
    assert [p["score"] for p in one] == sorted((p["score"] for p in one), reverse=True)
    assert {p["label"]: p["score"] for p in one} == pytest.approx(dict(zip(labels, probs)), abs=1e-6)
    # pairs against transformers' classifier on the same weights
    tok = AutoTokenizer.from_pretrained(model_dirs["sentiment"])
    model = AutoModelForSequenceClassification.from_pretrained(model_dirs["sentiment"]).eval()
    seqs = [["great movie"], ["the premise", "a fitting conclusion"]]
    with torch.no_grad():
        logits = [model(**tok(*s, return_tensors="pt")).logits[0] for s in seqs]
    for body, activate in (({}, True), ({"raw_scores": True}, False)):
        batch = post(server, "/predict", inputs=seqs, **body).json()
        assert len(batch) == 2
        for got, ref in zip(batch, logits):
            ref = ref.softmax(-1) if activate else ref
            assert testing.max_abs_diff([{p["label"]: p["score"] for p in got}[n] for n in labels], ref) <= 1e-5
    pair = post(server, "/predict", inputs=["the premise", "a fitting conclusion"]).json()  # one pair, not a batch
    assert isinstance(pair[0], dict)
    by_label = {p["label"]: p["score"] for p in pair}
    assert testing.max_abs_diff([by_label[n] for n in labels], logits[1].softmax(-1)) <= 1e-5


def test_predict_checks_the_params_of_a_batch_of_pairs_too(live, engines, monkeypatch):
    """Issue 22: /predict prepares through the Engine, so the classify adapter checks every request; a batch
    of pairs only skipped ``adapter.check`` (tei.py tokenized pairs itself)."""
    from poolkit.errors import InvalidRequestError

    adapter = engines["sentiment"].task("classify")

    def refuse(params):
        raise InvalidRequestError("refused by the classify adapter's check")

    monkeypatch.setattr(adapter, "check", refuse)
    for inputs in ("great movie", ["the premise", "a fitting conclusion"], [["a", "b"], ["c", "d"]]):
        r = post(live["classifier"], "/predict", inputs=inputs)
        assert r.status_code == 422 and r.json() == {"error": "refused by the classify adapter's check",
                                                     "error_type": "validation"}, (inputs, r.text)


def test_rerank_texts_and_documents(live, engines):
    server, docs = live["reranker"], ["Paris is in France.", "Bread needs yeast.", "Berlin."]
    scores = [o.outputs.score for o in engines["reranker"].score("capital of France", docs)]
    raw = [o.outputs.score for o in engines["reranker"].score("capital of France", docs,
                                                               PoolingParams(use_activation=False))]
    order = sorted(range(3), key=lambda i: -scores[i])
    r = post(server, "/rerank", query="capital of France", texts=docs, return_text=True).json()
    assert [x["index"] for x in r] == order and [x["text"] for x in r] == [docs[i] for i in order]
    assert [x["score"] for x in r] == pytest.approx([scores[i] for i in order], abs=1e-6)
    r = post(server, "/rerank", query="capital of France", texts=docs, raw_scores=True).json()
    assert all(set(x) == {"index", "score"} for x in r)  # no text unless return_text
    assert {x["index"]: x["score"] for x in r} == pytest.approx(dict(enumerate(raw)), abs=1e-6)
    # the same route with Jina / Cohere's body answers their shape, as before
    r = post(server, "/rerank", query="capital of France", documents=docs, top_n=2).json()
    assert [x["index"] for x in r["results"]] == order[:2] and r["results"][0]["document"]["text"] == docs[order[0]]
    assert [x["relevance_score"] for x in r["results"]] == pytest.approx([scores[i] for i in order[:2]], abs=1e-6)


def test_root_runs_the_default_task_of_each_model_type(live, engines, st, splade):
    emb = post(live["embedding"], "/", inputs=["hello"]).json()
    assert testing.max_abs_diff(torch.tensor(emb[0]), st.embed("hello")[0].outputs.data) <= 1e-6
    other = post(live["embedding"], "/", inputs="hello", model="embedder").json()  # poolkit: a served model by name
    assert testing.max_abs_diff(torch.tensor(other[0]), engines["embedder"].embed("hello")[0].outputs.data) <= 1e-6
    pred = post(live["classifier"], "/", inputs="fine").json()
    assert {p["label"] for p in pred} == {"neg", "neu", "pos"}
    ranks = post(live["reranker"], "/", query="q", texts=["a", "b"]).json()
    assert sorted(x["index"] for x in ranks) == [0, 1]
    sparse = post(live["splade"], "/", inputs="hello").json()
    assert set(sparse[0][0]) == {"index", "value"}
    for server in live.values():  # GET / is TEI's health route
        assert httpx.get(server.url + "/").status_code == 200
    r = post(live["embedding"], "/invocations", inputs="hello")  # SageMaker's alias of /
    assert testing.max_abs_diff(torch.tensor(r.json()), torch.tensor(emb)) <= 1e-6


def test_info_per_model_type(live):
    info = {kind: httpx.get(s.url + "/info").json() for kind, s in live.items()}
    assert info["embedding"]["model_type"] == {"embedding": {"pooling": "mean"}}
    assert info["embedding"]["max_input_length"] == 16 and info["embedding"]["auto_truncate"] is True
    assert info["embedding"]["served_model_name"] == "st" and info["embedding"]["max_client_batch_size"] == 8
    assert info["splade"]["model_type"] == {"embedding": {"pooling": "splade"}}
    assert info["classifier"]["model_type"] == {"classifier": {"id2label": {"0": "neg", "1": "neu", "2": "pos"},
                                                               "label2id": {"neg": 0, "neu": 1, "pos": 2}}}
    assert info["reranker"]["model_type"] == {"reranker": {"id2label": {"0": "LABEL_0"}, "label2id": {"LABEL_0": 0}}}
    assert {"model_id", "model_dtype", "max_batch_tokens", "max_concurrent_requests", "version"} <= set(info["reranker"])
    other = httpx.get(live["embedding"].url + "/info?model=embedder").json()
    assert other["model_type"] == {"embedding": {"pooling": "cls"}} and other["served_model_name"] == "embedder"


def test_embed_sparse_is_splade_nonzero_entries(live, splade, splade_dir):
    texts = ["hello world", "SPLADE expands a query into weighted vocabulary terms"]
    got = post(live["splade"], "/embed_sparse", inputs=texts).json()
    want = [o.outputs.data for o in splade.embed(texts)]
    reference = sparse_encoder_reference(splade_dir, texts)
    for entries, w, ref in zip(got, want, reference):
        assert [e["index"] for e in entries] == w.nonzero().flatten().tolist() and 100 < len(entries) < 30522 // 4
        dense = torch.zeros_like(w)
        dense[[e["index"] for e in entries]] = torch.tensor([e["value"] for e in entries])
        assert testing.max_abs_diff(dense, w) <= 1e-6 and testing.max_abs_diff(dense, ref) <= 1e-4
    r = post(live["embedding"], "/embed_sparse", inputs="hello")
    assert r.status_code == 424 and r.json() == {"error": "Model is not an embedding model with SPLADE pooling",
                                                 "error_type": "backend"}


def test_embed_all_is_last_hidden_states(live, st_dir):
    got = post(live["embedding"], "/embed_all", inputs=["hello world", "tokens"]).json()
    for g, ref in zip(got, testing.reference_hidden_states(st_dir, ["hello world", "tokens"])):
        assert np.array(g).shape == tuple(ref.shape) and testing.max_abs_diff(torch.tensor(g), ref) <= 1e-5


def test_embed_inputs_shapes_and_dimensions(live, engines):
    e = engines["embedder"]
    ids = e.tokenizer("hello")["input_ids"]
    for inputs in (ids, [ids, "hello"]):  # a list of ints is ONE input (its ids); a batch may mix texts and ids
        r = post(live["embedding"], "/embed", inputs=inputs, model="embedder").json()
        assert len(r) == (1 if inputs is ids else 2)
        assert testing.max_abs_diff(torch.tensor(r[0]), e.embed("hello")[0].outputs.data) <= 1e-6
    r = post(live["embedding"], "/embed", inputs="hello", model="embedder", dimensions=16).json()
    ref = e.embed("hello", PoolingParams(dimensions=16))[0].outputs.data
    assert len(r[0]) == 16 and testing.max_abs_diff(torch.tensor(r[0]), ref) <= 1e-6


def test_tokenize_and_decode(live, engines):
    server, tok = live["embedding"], engines["embedder"].tokenizer
    r = post(server, "/tokenize", inputs="héllo world", model="embedder").json()
    assert [t["id"] for t in r[0]] == tok("héllo world")["input_ids"]
    cls, *words, sep = r[0]
    assert cls == {"id": tok.cls_token_id, "text": "[CLS]", "special": True, "start": None, "stop": None}
    assert sep["special"] and sep["start"] is None
    assert [(w["text"], w["start"], w["stop"]) for w in words] == [("héllo", 0, 6), ("world", 7, 12)]  # bytes, as TEI
    batch = post(server, "/tokenize", inputs=["a", "b c"], add_special_tokens=False, model="embedder").json()
    assert [[t["id"] for t in x] for x in batch] == [tok("a", add_special_tokens=False)["input_ids"],
                                                     tok("b c", add_special_tokens=False)["input_ids"]]
    vllm = post(server, "/tokenize", prompt="hello world", model="embedder").json()  # vLLM's body: vLLM's shape
    assert vllm["tokens"] == tok("hello world")["input_ids"] and vllm["count"] == 4
    ids = [tok("hello world")["input_ids"], tok("tokens")["input_ids"]]
    assert post(server, "/decode", ids=ids, model="embedder").json() == ["hello world", "tokens"]
    assert post(server, "/decode", ids=ids[0], skip_special_tokens=False).json() == ["[CLS] hello world [SEP]"]
    many = tok("hello world " * 8000, add_special_tokens=False)["input_ids"]  # a body over 64 KiB: the bulk thread
    assert post(server, "/decode", ids=[many, ids[1]], model="embedder").json() == [("hello world " * 8000).strip(),
                                                                                   "tokens"]


def test_tokenize_offsets_are_bytes_and_texts_are_escaped(live, engines):
    """Each token as TEI writes it, against the tokenizer's own offsets turned into UTF-8 byte offsets here:
    multi-byte characters, quotes, backslashes, control characters, a special token's text inside the input."""
    tok = engines["embedder"].tokenizer
    texts = ['héllo 東京 🎉 "quoted" back\\slash\ttab\nline [SEP] end', "plain ascii words " * 700]
    for add in (True, False):
        got = post(live["embedding"], "/tokenize", inputs=texts, add_special_tokens=add, model="embedder").json()
        for text, tokens in zip(texts, got):
            enc = tok(text, add_special_tokens=add, return_offsets_mapping=True, return_special_tokens_mask=True)
            want = [{"id": i, "text": s, "special": True, "start": None, "stop": None} if special else
                    {"id": i, "text": text[a:b], "special": False, "start": len(text[:a].encode()),
                     "stop": len(text[:b].encode())}
                    for i, s, special, (a, b) in zip(enc["input_ids"], tok.convert_ids_to_tokens(enc["input_ids"]),
                                                     enc["special_tokens_mask"], enc["offset_mapping"])]
            assert tokens == want


def test_openapi_lists_the_tei_routes(live):
    paths = httpx.get(live["embedding"].url + "/openapi.json").json()["paths"]
    for route in ("/", "/embed", "/embed_sparse", "/embed_all", "/predict", "/rerank", "/similarity", "/tokenize",
                  "/decode", "/info"):
        assert route in paths, route
    schemas = paths["/rerank"]["post"]["requestBody"]["content"]["application/json"]["schema"]["oneOf"]
    assert [s["title"] for s in schemas] == ["RerankRequest", "TEIRerankRequest"]


# --- errors: TEI's body and status -------------------------------------------------------------------------------


@pytest.mark.parametrize("kind,path,body,status,error_type,needle", [
    ("embedding", "/embed", {"inputs": []}, 400, "empty", "`inputs` cannot be empty"),
    ("embedding", "/embed", {"inputs": ["a", ""]}, 400, "empty", "`inputs` cannot be empty"),
    ("embedding", "/embed", {}, 422, "validation", "inputs: Field required"),
    ("embedding", "/embed", {"inputs": [1.5]}, 422, "validation", "inputs"),
    ("embedding", "/embed", {"inputs": ["x"] * 9}, 422, "validation", "batch size 9 > maximum allowed batch size 8"),
    ("embedding", "/embed", {"inputs": "x", "model": "embedder", "truncate": False, "truncation_direction": "up"},
     422, "validation", "truncation_direction"),
    ("embedding", "/embed", {"inputs": "word " * 600, "model": "embedder"}, 422, "validation",
     "maximum context length is 512 tokens"),
    ("embedding", "/embed", {"inputs": "x", "prompt_name": "query"}, 422, "validation", "Prompt name 'query'"),
    ("embedding", "/embed", {"inputs": "x", "dimensions": 12}, 422, "validation", "dimensions"),
    ("embedding", "/predict", {"inputs": "x"}, 424, "backend", "Supported tasks"),
    ("embedding", "/similarity", {"inputs": {"source_sentence": "a", "sentences": []}}, 400, "empty",
     "`inputs.sentences` cannot be empty"),
    ("embedding", "/decode", {"ids": []}, 400, "empty", "`input_ids` cannot be empty"),
    ("embedding", "/decode", {"ids": [999999]}, 422, "validation", "outside the vocabulary"),
    ("embedding", "/tokenize", {"inputs": ""}, 400, "empty", "`inputs` cannot be empty"),
    ("embedding", "/tokenize", {"inputs": ["ok", "x" * 4001]}, 422, "validation",  # TEI's: max_input_length * 250
     "`inputs` must have less than 4000 characters. Given: 4001"),
    ("embedding", "/tokenize", {"inputs": "x", "add_special_tokens": "no"}, 422, "validation", "add_special_tokens"),
    ("embedding", "/embed", {"inputs": "x", "truncate": "yes"}, 422, "validation",
     "truncate: Input should be a valid boolean"),
    ("embedding", "/embed", {"inputs": "x", "dimensions": "8"}, 422, "validation",
     "dimensions: Input should be a valid integer"),
    ("embedding", "/embed", {"inputs": "x", "dimensions": True}, 422, "validation", "dimensions"),
    ("embedding", "/embed", {"inputs": "x", "normalize": 0}, 422, "validation", "normalize"),
    ("embedding", "/similarity",
     {"inputs": {"source_sentence": "a", "sentences": ["b"]}, "parameters": {"truncate": 1}},
     422, "validation", "parameters.truncate"),
    ("embedding", "/decode", {"ids": [101], "skip_special_tokens": "false"}, 422, "validation", "skip_special_tokens"),
    ("classifier", "/predict", {"inputs": ["a", "b", "c"]}, 422, "validation", "a pair of strings"),
    ("classifier", "/predict", {"inputs": [["a", "b", "c"]]}, 422, "validation", "a pair of strings"),
    ("classifier", "/predict", {"inputs": [["", ""]]}, 400, "empty", "`inputs` cannot be empty"),
    ("classifier", "/", {"query": "q"}, 422, "validation", "inputs: Field required"),
    ("reranker", "/rerank", {"query": "q", "texts": []}, 400, "empty", "`texts` cannot be empty"),
    ("reranker", "/rerank", {"query": 3, "texts": ["a"]}, 422, "validation", "query"),
    ("reranker", "/rerank", {"query": "q", "texts": ["a"], "return_text": "true"}, 422, "validation", "return_text"),
    ("classifier", "/predict", {"inputs": "a", "raw_scores": 1}, 422, "validation", "raw_scores"),
])
def test_errors_are_tei_shaped(live, kind, path, body, status, error_type, needle):
    r = post(live[kind], path, **body)
    assert r.status_code == status, r.text
    assert set(r.json()) == {"error", "error_type"} and r.json()["error_type"] == error_type
    assert needle in r.json()["error"], r.json()


def test_invalid_json_and_client_errors(live):
    from huggingface_hub.errors import HfHubHTTPError

    r = httpx.post(live["embedding"].url + "/embed", content=b"{not json", headers={"content-type": "application/json"})
    assert r.status_code == 422 and r.json()["error"].startswith("Failed to parse the request body as JSON")
    with pytest.raises(HfHubHTTPError) as err:
        _client(live["embedding"]).feature_extraction("")
    assert err.value.response.status_code == 400 and err.value.response.json()["error_type"] == "empty"
    # a documents body on /rerank keeps the OpenAI-shaped errors of the Jina / Cohere API
    r = post(live["reranker"], "/rerank", query="q", documents=[])
    assert r.status_code == 400 and r.json()["param"] == "documents"
    r = post(live["reranker"], "/rerank", documents=["a"])
    assert r.status_code == 400 and r.json()["message"] == "Invalid request: query: Field required"


def test_error_statuses_map_as_tei():
    request = Request({"type": "http", "method": "POST", "path": "/embed", "headers": [], "state": {}})
    cases = [(Overloaded("Too many concurrent requests"), 429, "overloaded"),
             (APIError(503, "The model is still loading"), 503, "unhealthy"),
             (APIError(413, "too many tokens"), 422, "validation")]
    for exc, status, kind in cases:
        r = tei_error(exc, request)
        assert r.status_code == status and kind in r.body.decode()
    assert tei_error(Overloaded("x"), request).headers["retry-after"] == "1"
    bug = tei_error(RuntimeError("secret detail"), request)
    assert bug.status_code == 500 and b"secret" not in bug.body and b'"backend"' in bug.body
