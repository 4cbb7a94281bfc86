"""The native packed BERT vs transformers' BertModel on the same random weights: max abs diff <= 1e-5 (PARITY_TOL)."""

from __future__ import annotations

import pytest
import torch

from poolkit import testing
from poolkit.batch import PackedBatch
from poolkit.builtin_models.bert import BertForEmbedding, BertForSequenceClassification, BertForTokenClassification
from poolkit.model.weights import load_state_dict
from tests.builtin_models.helpers import PARITY_TOL, native, reference_hidden

SIZES = [  # hidden, layers, heads, intermediate
    (32, 2, 4, 64),
    (64, 3, 8, 256),
    (48, 1, 3, 96),
]


def _reference(path, ids, token_types):
    from transformers import BertModel

    return reference_hidden(BertModel.from_pretrained(path).eval(), ids, 0, token_types)


def _native(path, ids, token_types, kernels):
    model = native(BertForEmbedding, path, kernels=kernels)
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
        assert testing.max_abs_diff(o, w) <= PARITY_TOL


def test_onednn_kernels_are_used_when_available(tiny_bert_dir):
    fast = native(BertForEmbedding, tiny_bert_dir, kernels="auto")
    plain = native(BertForEmbedding, tiny_bert_dir, kernels="torch")
    if torch.backends.mkldnn.is_available():
        assert "kernel=onednn" in repr(fast)
    assert "kernel=onednn" not in repr(plain)


def test_missing_tensor_names_the_key(tmp_path):
    path = testing.build_tiny_bert(tmp_path)
    state = load_state_dict(path)
    del state["encoder.layer.1.output.dense.weight"]
    with pytest.raises(KeyError, match="encoder.layer.1.output.dense.weight"):
        native(BertForEmbedding, path, state=state)


@pytest.mark.parametrize("head,cls", [("sequence", BertForSequenceClassification),
                                      ("token", BertForTokenClassification)])
def test_classifiers_refuse_unexpected_tensors(tmp_path, head, cls):
    path = testing.build_tiny_bert(tmp_path, head=head, num_labels=3)
    assert native(cls, path).num_labels == 3
    state = load_state_dict(path)
    state["cls.predictions.bias"] = torch.zeros(30522)  # an MLM head: not this architecture's
    with pytest.raises(KeyError, match=rf"Unexpected tensors in a {cls.__name__} checkpoint.*cls\.predictions"):
        native(cls, path, state=state)


def test_pytorch_model_bin_fallback(tmp_path):
    path = testing.build_tiny_bert(tmp_path / "st")
    state = load_state_dict(path)
    (path / "model.safetensors").unlink()
    torch.save(state, path / "pytorch_model.bin")
    assert testing.max_abs_diff(load_state_dict(path)["embeddings.word_embeddings.weight"],
                                state["embeddings.word_embeddings.weight"]) == 0
