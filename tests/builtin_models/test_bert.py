"""The native packed BERT vs transformers' BertModel on the same random weights: max abs diff <= 1e-5."""

from __future__ import annotations

import pytest
import torch

from poolkit import testing
from poolkit.batch import PackedBatch
from poolkit.builtin_models.bert import BertForEmbedding
from poolkit.config import ModelConfig
from poolkit.weights import load_state_dict

SIZES = [  # hidden, layers, heads, intermediate
    (32, 2, 4, 64),
    (64, 3, 8, 256),
    (48, 1, 3, 96),
]


def _reference(path, ids, token_types):
    from transformers import BertModel

    model = BertModel.from_pretrained(path).eval()
    T = max(len(s) for s in ids)
    input_ids = torch.zeros(len(ids), T, dtype=torch.long)
    mask = torch.zeros(len(ids), T, dtype=torch.long)
    tt = torch.zeros(len(ids), T, dtype=torch.long)
    for b, s in enumerate(ids):
        input_ids[b, : len(s)] = torch.tensor(s)
        mask[b, : len(s)] = 1
        if token_types is not None:
            tt[b, : len(s)] = torch.tensor(token_types[b])
    with torch.no_grad():
        hidden = model(input_ids=input_ids, attention_mask=mask, token_type_ids=tt).last_hidden_state
    return [hidden[b, : len(s)] for b, s in enumerate(ids)]


def _native(path, ids, token_types, kernels):
    cfg = ModelConfig.load(str(path))
    model = BertForEmbedding(cfg.hf_config, load_state_dict(path), torch.float32, kernels).eval()
    batch = PackedBatch.from_token_lists(ids, token_types)
    with torch.no_grad():
        return list(model(batch).split(batch.lengths))


@pytest.mark.parametrize("kernels", ["auto", "torch"])
@pytest.mark.parametrize("size", SIZES, ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("with_types", [False, True])
def test_last_hidden_state_matches_transformers(tmp_path, size, kernels, with_types):
    hidden, layers, heads, inter = size
    path = testing.build_tiny_bert(tmp_path, hidden_size=hidden, num_layers=layers, num_heads=heads,
                                   intermediate_size=inter, seed=sum(size))
    g = torch.Generator().manual_seed(1)
    lengths = [1, 2, 7, 7, 13, 40, 41, 100, 3, 64]  # mixed lengths in one batch, some equal
    ids = [torch.randint(1000, 30000, (n,), generator=g).tolist() for n in lengths]
    types = [torch.randint(0, 2, (n,), generator=g).tolist() for n in lengths] if with_types else None
    want = _reference(path, ids, types)
    got = _native(path, ids, types, kernels)
    for w, o in zip(want, got):
        assert o.shape == w.shape
        assert testing.max_abs_diff(o, w) <= 1e-5


def test_onednn_kernels_are_used_when_available(tiny_bert_dir):
    cfg = ModelConfig.load(str(tiny_bert_dir))
    fast = BertForEmbedding(cfg.hf_config, load_state_dict(tiny_bert_dir), torch.float32, "auto")
    plain = BertForEmbedding(cfg.hf_config, load_state_dict(tiny_bert_dir), torch.float32, "torch")
    if torch.backends.mkldnn.is_available():
        assert "kernel=onednn" in repr(fast)
    assert "kernel=onednn" not in repr(plain)


def test_missing_tensor_names_the_key(tmp_path):
    path = testing.build_tiny_bert(tmp_path)
    state = load_state_dict(path)
    del state["encoder.layer.1.output.dense.weight"]
    cfg = ModelConfig.load(str(path))
    with pytest.raises(KeyError, match="encoder.layer.1.output.dense.weight"):
        BertForEmbedding(cfg.hf_config, state)


def test_pytorch_model_bin_fallback(tmp_path):
    path = testing.build_tiny_bert(tmp_path / "st")
    state = load_state_dict(path)
    (path / "model.safetensors").unlink()
    torch.save(state, path / "pytorch_model.bin")
    assert testing.max_abs_diff(load_state_dict(path)["embeddings.word_embeddings.weight"],
                                state["embeddings.word_embeddings.weight"]) == 0
