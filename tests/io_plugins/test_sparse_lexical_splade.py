"""``sparse-lexical`` on SPLADE models vs ``SparseEncoder.decode`` on the same weights; ``top_k`` on BGE-M3 too."""

from __future__ import annotations

import pytest
import torch

from poolkit import Engine
from poolkit.io_processor import IOProcessorError
from poolkit.io_plugins.sparse_lexical import LexicalWeights
from tests.builtin_models.builders_splade import build_tiny_mlm, save_as_sparse_encoder

TOL = 1e-4
TEXTS = ["hello world", "sparse lexical weights for every vocabulary entry", "a much longer document " * 8]


@pytest.fixture(scope="module")
def mlm_dir(tmp_path_factory):
    return build_tiny_mlm(tmp_path_factory.mktemp("mlm"), seed=2)


@pytest.fixture(scope="module", params=["max", "sum"])
def sparse_dir(request, mlm_dir, tmp_path_factory):
    return save_as_sparse_encoder(mlm_dir, tmp_path_factory.mktemp(f"se_{request.param}"), strategy=request.param)


def _decoded(path, texts, top_k=None):
    from sentence_transformers import SparseEncoder

    st = SparseEncoder(str(path), device="cpu")
    return [st.decode(v, top_k=top_k) for v in st.encode(texts, convert_to_tensor=True)]


def _assert_matches(out: LexicalWeights, want: list[tuple[str, float]]) -> None:
    """The same tokens and weights, largest first (weights equal to within rounding may swap places)."""
    assert set(out.weights) == {t for t, _ in want}
    assert max(abs(out.weights[t] - w) for t, w in want) <= TOL
    assert torch.tensor(list(out.weights.values())).diff().le(0).all()
    assert max(abs(a - w) for a, (_, w) in zip(out.weights.values(), want)) <= TOL  # rank by rank


def test_weights_match_sparse_encoder_decode(sparse_dir):
    engine = Engine(str(sparse_dir), io_processor_plugin="sparse-lexical")
    assert engine.io_processor.processor.task == "embed"
    outs = engine.encode(TEXTS, task="plugin")
    for out, want in zip(outs, _decoded(sparse_dir, TEXTS)):
        assert isinstance(out, LexicalWeights) and 100 < len(want) < 30522 // 4  # zeros dropped, many kept
        _assert_matches(out, want)
    [top] = engine.encode({"text": TEXTS[1], "top_k": 5}, task="plugin")
    _assert_matches(top, _decoded(sparse_dir, TEXTS[1:2], top_k=5)[0])
    [ids] = engine.encode({"text": TEXTS[0], "top_k": 20, "return_token_ids": True}, task="plugin")
    assert engine.tokenizer.convert_ids_to_tokens(list(ids.token_ids)) == list(ids.weights)
    assert list(ids.token_ids.values()) == list(ids.weights.values())


def test_vllm_name_without_st_files(mlm_dir, tmp_path):
    engine = Engine(str(mlm_dir), hf_overrides={"architectures": ["BertSpladeSparseEmbeddingModel"]},
                    io_processor_plugin="sparse-lexical")
    reference = save_as_sparse_encoder(mlm_dir, tmp_path / "se", strategy="max")
    for out, want in zip(engine.encode(TEXTS, task="plugin"), _decoded(reference, TEXTS)):
        _assert_matches(out, want)


def test_bad_top_k_is_the_requests_fault(sparse_dir):
    engine = Engine(str(sparse_dir), io_processor_plugin="sparse-lexical")
    ok, bad = engine.encode_plugin_batch([TEXTS[0], {"text": "x", "top_k": 0}])
    assert isinstance(ok, LexicalWeights)
    assert isinstance(bad, IOProcessorError) and bad.client_error and "top_k" in str(bad)


def test_plain_masked_lm_is_refused(mlm_dir):
    with pytest.raises(IOProcessorError, match="or a SPLADE model"):
        Engine(str(mlm_dir), io_processor_plugin="sparse-lexical")


def test_top_k_on_bge_m3(tmp_path):
    from tests.builtin_models.builders_roberta import build_tiny_bge_m3

    path = build_tiny_bge_m3(tmp_path / "bge_m3", colbert_dim=16)
    engine = Engine(str(path), hf_overrides={"architectures": ["BgeM3EmbeddingModel"]},
                    io_processor_plugin="sparse-lexical")
    text = "sparse lexical weights for every token of this text"
    full, top = engine.encode([text, {"text": text, "top_k": 3}], task="plugin")
    assert len(full.weights) > 3 and list(top.weights.items()) == list(full.weights.items())[:3]
    assert torch.tensor(list(full.weights.values())).diff().le(0).all()
