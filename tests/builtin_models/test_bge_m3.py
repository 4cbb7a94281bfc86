"""BGE-M3's dense, sparse and ColBERT outputs vs FlagEmbedding's formulas on transformers' XLMRobertaModel (PARITY_TOL)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from poolkit import testing
from poolkit.batch import PackedBatch
from poolkit.builtin_models.bge_m3 import BgeM3EmbeddingModel
from poolkit.model.weights import load_extra_weight_files
from tests.builtin_models.builders_roberta import PAD, build_tiny_bge_m3
from tests.builtin_models.helpers import PARITY_TOL, native, padded

OVERRIDES = {"architectures": ["BgeM3EmbeddingModel"]}


def _load(path, kernels="auto"):
    """Built as the Engine builds it: the config's architecture, extra_weight_files loaded."""
    model = native(None, path, kernels=kernels, hf_overrides=OVERRIDES)
    assert type(model) is BgeM3EmbeddingModel
    return model


def _token_ids(path):
    """Tokenized texts (<s> ... </s>) of mixed lengths, plus a lone <s>."""
    from transformers import AutoTokenizer

    from tests.corpus import varied_texts

    tok = AutoTokenizer.from_pretrained(path)
    ids = [tok(t, truncation=True, max_length=200)["input_ids"] for t in varied_texts(12, seed=5)]
    return ids + [[0]]


def _reference(path, ids):
    """FlagEmbedding's BGEM3Model outputs on a padded batch, computed directly."""
    from transformers import XLMRobertaModel

    model = XLMRobertaModel.from_pretrained(path).eval()
    heads = {}
    for name in ("sparse_linear", "colbert_linear"):
        state = torch.load(path / f"{name}.pt", weights_only=True)
        heads[name] = torch.nn.Linear(state["weight"].shape[1], state["weight"].shape[0])
        heads[name].load_state_dict(state)
    inputs = padded(ids, PAD)
    mask = inputs["attention_mask"]
    with torch.no_grad():
        h = model(**inputs).last_hidden_state  # (B, T, C)
        dense = F.normalize(h[:, 0], dim=-1)  # (B, C)
        sparse = torch.relu(heads["sparse_linear"](h))  # (B, T, 1)
        colbert = heads["colbert_linear"](h[:, 1:]) * mask[:, 1:, None]  # (B, T-1, D)
        colbert = F.normalize(colbert, dim=-1)
    return (dense, [sparse[b, : len(s)] for b, s in enumerate(ids)],
            [colbert[b, : len(s) - 1] for b, s in enumerate(ids)])


@pytest.mark.parametrize("kernels", ["auto", "torch"])
@pytest.mark.parametrize("colbert_dim", [None, 16])
def test_dense_sparse_colbert_match_reference(tmp_path, colbert_dim, kernels):
    path = build_tiny_bge_m3(tmp_path, colbert_dim=colbert_dim, hidden_size=48, num_heads=4, intermediate_size=96)
    model = _load(path, kernels)
    ids = _token_ids(path)
    assert len({len(s) for s in ids}) > 5
    want_dense, want_sparse, want_colbert = _reference(path, ids)

    batch = PackedBatch.from_token_lists(ids)
    with torch.no_grad():
        hidden = model(batch)  # (N, C)
        dense = F.normalize(hidden[batch.cu_seqlens[:-1]], dim=-1)  # CLS pooling + the embed task's normalize
        sparse = model.classify_tokens(hidden).split(batch.lengths)
        colbert = [F.normalize(v, dim=-1) for v in model.embed_tokens(hidden, batch)]  # token_embed normalizes

    assert testing.max_abs_diff(dense, want_dense) <= PARITY_TOL
    for w, o in zip(want_sparse, sparse):
        assert o.shape == w.shape
        assert testing.max_abs_diff(o, w) <= PARITY_TOL
    for w, o, s in zip(want_colbert, colbert, ids):
        assert o.shape == w.shape == (len(s) - 1, colbert_dim or 48)
        if len(s) > 1:
            assert testing.max_abs_diff(o, w) <= PARITY_TOL
    assert any(bool((w == 0).any()) and bool((w > 0).any()) for w in want_sparse)  # relu is exercised


def test_class_attributes():
    assert BgeM3EmbeddingModel.default_pooling == "CLS"
    assert BgeM3EmbeddingModel.supported_tasks == ("embed", "token_embed", "token_classify")
    assert BgeM3EmbeddingModel.extra_weight_files == ("sparse_linear.pt", "colbert_linear.pt")


def test_extra_weight_files_are_keyed_by_file_stem(tmp_path):
    path = build_tiny_bge_m3(tmp_path, colbert_dim=16)
    extra = load_extra_weight_files(path, BgeM3EmbeddingModel.extra_weight_files)
    assert {k: tuple(v.shape) for k, v in extra.items()} == {
        "sparse_linear.weight": (1, 32), "sparse_linear.bias": (1,),
        "colbert_linear.weight": (16, 32), "colbert_linear.bias": (16,),
    }
    model = _load(path)
    assert model.num_labels == 1 and model.hidden_size == 32


def test_missing_head_file_names_it(tmp_path):
    path = build_tiny_bge_m3(tmp_path)
    (path / "colbert_linear.pt").unlink()
    with pytest.raises(KeyError, match="colbert_linear.pt"):
        native(BgeM3EmbeddingModel, path, hf_overrides=OVERRIDES)


def test_architecture_is_registered(fresh_host):
    from poolkit.registry import get_host

    assert get_host().registry("architectures").load("BgeM3EmbeddingModel") is BgeM3EmbeddingModel


@pytest.mark.parametrize("task", ["embed", "token_embed", "token_classify"])
def test_engine_outputs_match_reference(tmp_path, task):
    """End to end through the Engine: extra_weight_files loaded, task adapters applied."""
    from transformers import AutoTokenizer

    from poolkit.engine import Engine

    path = build_tiny_bge_m3(tmp_path, colbert_dim=16)
    engine = Engine(str(path), hf_overrides=OVERRIDES, device="cpu", dtype="float32")
    ids = _token_ids(path)[:-1]
    texts = [engine.tokenizer.decode(s[1:-1]) for s in ids]
    outs = engine.encode(texts, task)
    ids = [o.prompt_token_ids for o in outs]
    # the reference's inputs come from the HF tokenizer, not from the Engine under test
    assert ids == [AutoTokenizer.from_pretrained(path)(t)["input_ids"] for t in texts]
    dense, sparse, colbert = _reference(path, ids)
    want = {"embed": list(dense), "token_embed": colbert, "token_classify": sparse}[task]
    for w, o in zip(want, outs):
        assert o.outputs.data.shape == w.shape
        assert testing.max_abs_diff(o.outputs.data, w) <= PARITY_TOL
