"""PyLate ColBERT checkpoints (BERT and ModernBERT backbones) against PyLate itself on the same weights.

PyLate runs in a subprocess of its own (``tests/references``): it builds each checkpoint from a tiny
random backbone, saves it, reloads it and encodes; poolkit then loads the saved directory.
"""

from __future__ import annotations

import numpy as np
import pytest

from poolkit import Engine, testing
from tests.builtin_models.builders_modernbert import build_tiny_modernbert
from tests.references import run_pylate

QUERIES = ["what is late interaction?", "a very long query " + "with many many words " * 12, "colbert, really!"]
DOCS = ["ColBERT scores each query token against every document token.",
        "Punctuation: commas, periods; colons! (and) brackets?",
        "short", "a long document " + "that goes on and on, " * 40]

# name -> (backbone, PyLate ColBERT kwargs)
VARIANTS = {
    "bert": ("bert", {"embedding_size": 16}),
    "bert-short": ("bert", {"embedding_size": 16, "query_length": 12, "document_length": 20}),
    "bert-attend": ("bert", {"embedding_size": 16, "attend_to_expansion_tokens": True}),
    "bert-no-expansion": ("bert", {"embedding_size": 16, "do_query_expansion": False,
                                   "query_prefix": "", "document_prefix": ""}),
    "modernbert": ("modernbert", {"embedding_size": 8, "document_length": 40}),
}


@pytest.fixture(scope="module")
def pylate(tmp_path_factory):
    """{variant: (checkpoint dir, PyLate's query vectors, document vectors, scores)}."""
    root = tmp_path_factory.mktemp("pylate")
    bases = {"bert": testing.build_tiny_bert(root / "bert", seed=31),
             "modernbert": build_tiny_modernbert(root / "modernbert", seed=32, local_attention=8)}
    spec = {"result": str(root / "result.json"), "models": [
        {"base": str(bases[backbone]), "out": str(root / name), "kwargs": kwargs, "seed": i,
         "queries": QUERIES, "documents": DOCS} for i, (name, (backbone, kwargs)) in enumerate(VARIANTS.items())]}
    result = run_pylate(spec)["models"]
    return {name: (root / name, [np.array(q) for q in r["queries"]], [np.array(d) for d in r["documents"]],
                   np.array(r["scores"])) for name, r in zip(VARIANTS, result)}


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_vectors_match_pylate(pylate, variant):
    path, queries, docs, _ = pylate[variant]
    engine = Engine(str(path))
    assert engine.architecture == "ColBERT" and engine.score_type == "late-interaction"
    for role, texts, want in (("query", QUERIES, queries), ("document", DOCS, docs)):
        got = engine.encode(texts, task="token_embed", prompt_name=role)
        for o, w in zip(got, want):
            assert o.outputs.data.shape == w.shape, (role, o.outputs.data.shape, w.shape)
            assert testing.max_abs_diff(o.outputs.data, w) <= 1e-5
    # PyLate's default is a query (encode(is_query=True))
    default = engine.encode(QUERIES[:1], task="token_embed")[0].outputs.data
    assert testing.max_abs_diff(default, queries[0]) <= 1e-5


@pytest.mark.parametrize("variant", ["bert", "modernbert"])
def test_scores_match_pylate(pylate, variant):
    path, _, _, scores = pylate[variant]
    engine = Engine(str(path))
    for i, q in enumerate(QUERIES):
        got = [o.outputs.score for o in engine.score(q, DOCS)]
        assert np.abs(np.array(got) - scores[i]).max() <= 1e-4
    ranked = engine.rerank(QUERIES[0], DOCS)
    assert [r.index for r in ranked] == list(np.argsort(-scores[0], kind="stable"))


def test_vllm_modernbert_colbert_override(pylate):
    """vLLM's ColBERTModernBertModel on a PyLate ModernBERT checkpoint: every token, no markers or expansion;
    the reference is the same checkpoint's backbone (transformers) and Dense weights, in numpy."""
    import torch
    from safetensors.torch import load_file
    from transformers import AutoModel, AutoTokenizer

    path = pylate["modernbert"][0]
    engine = Engine(str(path), hf_overrides={"architectures": ["ColBERTModernBertModel"]})
    assert engine.architecture == "ColBERTModernBertModel"
    model = AutoModel.from_pretrained(path).eval()
    tok = AutoTokenizer.from_pretrained(path)
    w = load_file(path / "1_Dense" / "model.safetensors")["linear.weight"].numpy()
    got = engine.encode(DOCS, task="token_embed")
    for text, o in zip(DOCS, got):
        with torch.no_grad():
            h = model(**tok(text, return_tensors="pt")).last_hidden_state[0].numpy()
        v = h @ w.T
        assert testing.max_abs_diff(o.outputs.data, v / np.linalg.norm(v, axis=-1, keepdims=True)) <= 1e-5


def test_one_to_n_encodes_the_query_once(pylate):
    engine = Engine(str(pylate["bert"][0]))
    plan = engine.prepare_score(QUERIES[0], DOCS)
    assert len(plan.tokens) == 1 + len(DOCS)
    assert len(plan.tokens[0].ids) == 32  # the query, expanded to query_length


def test_served_pylate_matches_pylate(pylate):
    import httpx

    from poolkit.server.app import create_app
    from tests.server.conftest import LiveServer

    path, queries, docs, scores = pylate["bert"]
    live = LiveServer(create_app(lambda: {"colbert": Engine(str(path))}))
    try:
        body = httpx.post(live.url + "/pooling", json={"input": DOCS, "task": "token_embed",
                                                       "prompt_name": "document"}).json()
        for d, want in zip(body["data"], docs):
            assert testing.max_abs_diff(np.array(d["data"]), want) <= 1e-5
        body = httpx.post(live.url + "/pooling", json={"input": QUERIES[0], "task": "token_embed"}).json()
        assert testing.max_abs_diff(np.array(body["data"][0]["data"]), queries[0]) <= 1e-5
        got = httpx.post(live.url + "/score", json={"text_1": QUERIES[1], "text_2": DOCS}).json()
        assert np.abs(np.array([d["score"] for d in got["data"]]) - scores[1]).max() <= 1e-4
        order = list(np.argsort(-scores[2], kind="stable"))
        for route in ("/rerank", "/v1/rerank", "/v2/rerank"):
            res = httpx.post(live.url + route, json={"query": QUERIES[2], "documents": DOCS}).json()
            assert [r["index"] for r in res["results"]] == order, route
            assert np.allclose([r["relevance_score"] for r in res["results"]], scores[2][order], atol=1e-4)
    finally:
        live.stop()
