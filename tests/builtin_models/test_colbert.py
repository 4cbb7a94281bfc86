"""HF_ColBERT checkpoints: per-token vectors and MaxSim scores against transformers + numpy on the same weights."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from poolkit import Engine, testing

TEXTS = ["what is late interaction?", "ColBERT scores each query token against every document token",
         "a short one", "Pooling models turn text into vectors; this one keeps a vector per token."]


@pytest.fixture(scope="module")
def colbert_dir(tmp_path_factory):
    """A tiny BERT saved the HF_ColBERT way: encoder keys under ``bert.``, a bias-free ``linear`` to 16 dims."""
    path = testing.build_tiny_bert(tmp_path_factory.mktemp("colbert"), seed=21)
    state = {f"bert.{k}": v for k, v in load_file(path / "model.safetensors").items()}
    torch.manual_seed(22)
    state["linear.weight"] = torch.randn(16, 32) * 0.2
    save_file(state, path / "model.safetensors")
    cfg = json.loads((path / "config.json").read_text())
    cfg.update(architectures=["HF_ColBERT"], dim=16)
    (path / "config.json").write_text(json.dumps(cfg))
    return path


def _reference(path, texts):
    """transformers' BertModel on the same weights, each text alone, projected and L2-normalized (numpy)."""
    from transformers import AutoTokenizer, BertConfig, BertModel

    state = load_file(path / "model.safetensors")
    model = BertModel(BertConfig.from_pretrained(path), add_pooling_layer=False).eval()
    model.load_state_dict({k.removeprefix("bert."): v for k, v in state.items() if k.startswith("bert.")}, strict=False)
    tok = AutoTokenizer.from_pretrained(path)
    w = state["linear.weight"].numpy()
    out = []
    with torch.no_grad():
        for t in texts:
            h = model(**tok(t, return_tensors="pt")).last_hidden_state[0].numpy()
            v = h @ w.T
            out.append(v / np.linalg.norm(v, axis=-1, keepdims=True))
    return out


def test_token_vectors_match_transformers(colbert_dir):
    engine = Engine(str(colbert_dir))
    assert engine.supported_tasks == ("token_embed",) and engine.score_type == "late-interaction"
    got = engine.encode(TEXTS, task="token_embed")
    for o, want in zip(got, _reference(colbert_dir, TEXTS)):
        assert o.outputs.data.shape == want.shape  # every token, [CLS] and [SEP] included
        assert testing.max_abs_diff(o.outputs.data, want) <= 1e-5


def test_score_and_rerank_are_maxsim(colbert_dir):
    engine = Engine(str(colbert_dir))
    query, docs = TEXTS[0], TEXTS[1:]
    ref = _reference(colbert_dir, [query, *docs])
    want = [float((ref[0] @ d.T).max(axis=1).sum()) for d in ref[1:]]
    got = [o.outputs.score for o in engine.score(query, docs)]
    assert np.allclose(got, want, atol=1e-4)
    ranked = engine.rerank(query, docs)
    assert [r.index for r in ranked] == list(np.argsort(want)[::-1])


def test_served_through_score_and_rerank_routes(colbert_dir):
    from poolkit.server.app import create_app
    from tests.server.conftest import LiveServer
    import httpx

    engine = Engine(str(colbert_dir))
    live = LiveServer(create_app(lambda: {"colbert": engine}))
    try:
        score = httpx.post(live.url + "/score", json={"text_1": TEXTS[0], "text_2": TEXTS[1:]}).json()
        offline = [o.outputs.score for o in engine.score(TEXTS[0], TEXTS[1:])]
        assert np.allclose([d["score"] for d in score["data"]], offline, atol=1e-6)
        rerank = httpx.post(live.url + "/v1/rerank", json={"query": TEXTS[0], "documents": TEXTS[1:]}).json()
        assert [r["index"] for r in rerank["results"]] == [r.index for r in engine.rerank(TEXTS[0], TEXTS[1:])]
        bad = httpx.post(live.url + "/v1/embeddings", json={"input": "x"})
        assert bad.status_code == 400 and "Supported tasks" in bad.json()["message"]
    finally:
        live.stop()
