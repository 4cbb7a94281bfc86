"""The native packed ModernBERT vs transformers on the same random weights: max abs diff <= PARITY_TOL.

Sequences up to 61 tokens with ``local_attention`` 16 (8 each side) or 9 (4 each side), so local
layers see a band, not the whole sequence; all lengths go in one packed batch.
"""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F

from poolkit import testing
from poolkit.batch import PackedBatch
from poolkit.builtin_models.modernbert import (
    GLOBAL, LOCAL, ModernBertForEmbedding, ModernBertForSequenceClassification, ModernBertForTokenClassification,
    layer_types, rope_theta)
from poolkit.builtin_poolers.methods import CLSPool
from poolkit.pooling import MeanPool
from poolkit.config import ModelConfig
from poolkit.model.weights import load_state_dict
from tests.builtin_models.builders_modernbert import build_tiny_modernbert, reference_model
from tests.builtin_models.helpers import PARITY_TOL, assert_bf16_close, native, padded, reference_hidden

LENGTHS = [1, 2, 9, 10, 17, 30, 33, 60, 61, 45, 5]  # mixed, several longer than the local window

VARIANTS = {  # name -> builder kwargs
    "default": {},  # no biases, global every 3 layers, 16-token window
    "biases": dict(attention_bias=True, mlp_bias=True, norm_bias=True, classifier_bias=True, local_attention=9,
                   global_attn_every_n_layers=2, global_rope_theta=500.0, local_rope_theta=30.0, hidden_size=48,
                   num_heads=3, intermediate_size=40, num_layers=3),
}


def _random_ids(path, lengths=LENGTHS, seed=1):
    vocab = ModelConfig.load(str(path)).hf_config.vocab_size
    g = torch.Generator().manual_seed(seed)
    return [torch.randint(5, vocab, (n,), generator=g).tolist() for n in lengths]


def _reference_logits(path, ids):
    """transformers' logits for ``ids``, padded into one batch."""
    with torch.no_grad():
        return reference_model(path)(**padded(ids)).logits


def _native(cls, path, kernels="auto", dtype=torch.float32):
    return native(cls, path, kernels=kernels, dtype=dtype)


def _max_diff(got, want):
    assert [g.shape for g in got] == [w.shape for w in want]
    return max(testing.max_abs_diff(g, w) for g, w in zip(got, want))


@pytest.fixture(scope="module", params=list(VARIANTS))
def base_dir(request, tmp_path_factory):
    return build_tiny_modernbert(tmp_path_factory.mktemp(f"modernbert_{request.param}"), seed=3,
                                 **VARIANTS[request.param])


@pytest.mark.parametrize("kernels", ["auto", "torch"])
def test_last_hidden_state_matches_transformers(base_dir, kernels):
    ids = _random_ids(base_dir)
    want = reference_hidden(reference_model(base_dir, "sdpa"), ids)
    model = _native(ModernBertForEmbedding, base_dir, kernels)
    batch = PackedBatch.from_token_lists(ids)
    with torch.no_grad():
        got = list(model(batch).split(batch.lengths))
    assert _max_diff(got, want) <= PARITY_TOL


def test_single_long_sequence_and_eager_reference(base_dir):
    """One sequence (the no-gather path of local attention) against the eager attention reference."""
    ids = _random_ids(base_dir, [61])
    want = reference_hidden(reference_model(base_dir, "eager"), ids)
    with torch.no_grad():
        got = [_native(ModernBertForEmbedding, base_dir)(PackedBatch.from_token_lists(ids))]
    assert _max_diff(got, want) <= PARITY_TOL


def test_local_attention_changes_the_output(base_dir):
    """The parity test can fail: with the window made global, transformers' own output moves a lot."""
    ids = _random_ids(base_dir)
    local = reference_hidden(reference_model(base_dir), ids)
    wide = reference_hidden(reference_model(base_dir, local_attention=1024), ids)
    assert _max_diff(local[-4:-1], wide[-4:-1]) > 1e-2  # the sequences longer than the window
    assert _max_diff(local[:2], wide[:2]) <= PARITY_TOL  # 1 and 2 tokens: the window covers them


@pytest.mark.parametrize("pooling", ["cls", "mean"])
@pytest.mark.parametrize("num_labels", [1, 3])
def test_sequence_classification_matches_transformers(tmp_path, num_labels, pooling):
    path = build_tiny_modernbert(tmp_path, architecture="ModernBertForSequenceClassification", seed=num_labels,
                                 num_labels=num_labels, classifier_pooling=pooling, classifier_activation="gelu")
    ids = _random_ids(path)
    ref = reference_model(path)
    with torch.no_grad():
        want_logits = ref(**padded(ids)).logits
    want_hidden = reference_hidden(ref.model, ids)

    model = _native(ModernBertForSequenceClassification, path)
    assert model.default_pooling == pooling.upper()
    assert model.num_labels == num_labels and len(model.id2label) == num_labels
    assert ModernBertForSequenceClassification.supported_tasks == ("classify", "score")
    batch = PackedBatch.from_token_lists(ids)
    pool = {"CLS": CLSPool(), "MEAN": MeanPool()}[model.default_pooling]
    with torch.no_grad():
        hidden = model(batch)
        logits = model.classify(pool(hidden, batch))
    assert _max_diff(list(hidden.split(batch.lengths)), want_hidden) <= PARITY_TOL
    assert logits.shape == (len(ids), num_labels)
    assert testing.max_abs_diff(logits, want_logits) <= PARITY_TOL
    assert float(want_logits.std()) > 1e-2  # logits differ between inputs: the comparison means something


def test_classifier_head_biases(tmp_path):
    path = build_tiny_modernbert(tmp_path, architecture="ModernBertForSequenceClassification", num_labels=2,
                                 classifier_pooling="mean", **{k: v for k, v in VARIANTS["biases"].items()})
    ids = _random_ids(path)
    want = _reference_logits(path, ids)
    with torch.no_grad():
        model = _native(ModernBertForSequenceClassification, path)
        batch = PackedBatch.from_token_lists(ids)
        got = model.classify(MeanPool()(model(batch), batch))
    assert testing.max_abs_diff(got, want) <= PARITY_TOL


@pytest.mark.parametrize("variant", ["default", "biases"])
def test_token_classification_matches_transformers(tmp_path, variant):
    """Every token through the head: native logits vs ModernBertForTokenClassification, packed vs padded."""
    path = build_tiny_modernbert(tmp_path, architecture="ModernBertForTokenClassification", seed=11, num_labels=5,
                                 classifier_activation="gelu", **VARIANTS[variant])
    ids = _random_ids(path)
    want = _reference_logits(path, ids)
    with torch.no_grad():
        model = _native(ModernBertForTokenClassification, path)
        batch = PackedBatch.from_token_lists(ids)
        got = model.classify_tokens(model(batch))
    assert model.default_pooling == "ALL" and model.num_labels == 5
    assert _max_diff(list(got.split(batch.lengths)), [want[b, : len(s)] for b, s in enumerate(ids)]) <= PARITY_TOL
    assert float(want.std()) > 1e-2


def test_engine_token_classify(tmp_path):
    """Through the Engine: per-token softmax by default, raw logits with use_activation=False."""
    from transformers import AutoTokenizer

    from poolkit import Engine, PoolingParams

    path = build_tiny_modernbert(tmp_path, architecture="ModernBertForTokenClassification", seed=12, num_labels=4)
    texts = ["the quick brown fox", "local attention " * 12, "a"]
    engine = Engine(str(path))
    assert engine.architecture == "ModernBertForTokenClassification" and engine.supported_tasks == ("token_classify",)
    tok, ref = AutoTokenizer.from_pretrained(path), reference_model(path)
    enc = tok(texts, padding=True, return_tensors="pt")
    with torch.no_grad():
        logits = ref(**enc).logits
    probs = engine.encode(texts, task="token_classify")
    raw = engine.encode(texts, task="token_classify", pooling_params=PoolingParams(use_activation=False))
    for i, (p, r) in enumerate(zip(probs, raw)):
        want = logits[i][enc["attention_mask"][i].bool()]
        assert testing.max_abs_diff(r.outputs.data, want) <= PARITY_TOL
        assert testing.max_abs_diff(p.outputs.data, torch.softmax(want, -1)) <= PARITY_TOL


def test_engine_embed_with_bpe_tokenizer(tmp_path):
    """End to end: the registered architecture, the BPE tokenizer, CLS pooling and normalization."""
    from transformers import AutoTokenizer

    from poolkit import Engine

    path = build_tiny_modernbert(tmp_path, seed=5)
    texts = ["the quick brown fox", "local attention " * 12, "a", "rope theta for global and local layers " * 3]
    engine = Engine(str(path), max_batch_tokens=512)
    assert engine.architecture == "ModernBertModel"
    got = torch.tensor([o.outputs.embedding for o in engine.embed(texts)])
    tok = AutoTokenizer.from_pretrained(path)
    ids = [tok(t)["input_ids"] for t in texts]
    assert ids[0][0] == tok.cls_token_id and ids[0][-1] == tok.sep_token_id
    assert max(len(s) for s in ids) > 16  # longer than the local window
    want = F.normalize(torch.stack([h[0] for h in reference_hidden(reference_model(path), ids)]), dim=-1)
    assert testing.max_abs_diff(got, want) <= PARITY_TOL


@pytest.mark.parametrize("num_labels", [1, 3])
def test_engine_classify_and_score_with_mean_pooling(tmp_path, num_labels):
    """Through the Engine, the head's own pooling ("mean" here) is the default, for texts and pairs."""
    from transformers import AutoTokenizer

    from poolkit import Engine, PoolingParams

    path = build_tiny_modernbert(tmp_path, architecture="ModernBertForSequenceClassification", seed=7,
                                 num_labels=num_labels, classifier_pooling="mean")
    texts = ["the quick brown fox", "local attention " * 12, "a", "rope theta for global and local layers " * 3]
    engine = Engine(str(path))
    assert engine.pooler_config.pooling_type == "MEAN"
    tok, ref = AutoTokenizer.from_pretrained(path), reference_model(path)
    with torch.no_grad():
        want = ref(**tok(texts, padding=True, return_tensors="pt")).logits
    raw = torch.stack([o.outputs.data for o in engine.classify(texts, PoolingParams(use_activation=False))])
    assert testing.max_abs_diff(raw, want) <= PARITY_TOL
    if num_labels == 1:  # a cross-encoder: [CLS] a [SEP] b [SEP]
        queries, docs = texts[:2], texts[2:]
        with torch.no_grad():
            pair_logits = ref(**tok(queries, docs, padding=True, return_tensors="pt")).logits[:, 0]
        got = torch.tensor([o.outputs.score for o in engine.score(queries, docs)])
        assert testing.max_abs_diff(got, torch.sigmoid(pair_logits)) <= PARITY_TOL


def test_bfloat16_runs_close_to_fp32(tmp_path):
    path = build_tiny_modernbert(tmp_path)
    batch = PackedBatch.from_token_lists(_random_ids(path))
    with torch.no_grad():
        fp32 = _native(ModernBertForEmbedding, path)(batch)
        bf16 = _native(ModernBertForEmbedding, path, dtype=torch.bfloat16)(batch)
    assert_bf16_close(bf16, fp32)  # every token's hidden state; BF16_MIN_COSINE's reason: helpers.py


def test_missing_tensor_names_the_key(tmp_path):
    path = build_tiny_modernbert(tmp_path)
    state = load_state_dict(path)
    del state["layers.2.mlp.Wi.weight"]
    with pytest.raises(KeyError, match=r"layers\.2\.mlp\.Wi\.weight"):
        native(ModernBertForEmbedding, path, state=state)


def test_unexpected_tensor_is_refused(tmp_path):
    path = build_tiny_modernbert(tmp_path)
    cfg = ModelConfig.load(str(path)).hf_config
    state = load_state_dict(path)
    state["layers.1.attn.Wo.bias"] = torch.zeros(cfg.hidden_size)  # a bias the config says is absent
    with pytest.raises(KeyError, match="Unexpected"):
        native(ModernBertForEmbedding, path, state=state)


def test_transformers_4_config_names():
    """Configs read without transformers 5's conversion keep the original field names."""
    old = SimpleNamespace(num_hidden_layers=5, global_attn_every_n_layers=2, global_rope_theta=160000.0,
                          local_rope_theta=None)
    assert layer_types(old) == [GLOBAL, LOCAL, GLOBAL, LOCAL, GLOBAL]
    assert rope_theta(old, GLOBAL) == rope_theta(old, LOCAL) == 160000.0
    old.local_rope_theta = 10000.0
    assert rope_theta(old, LOCAL) == 10000.0
    new = SimpleNamespace(layer_types=[GLOBAL, LOCAL], rope_parameters={
        GLOBAL: {"rope_type": "default", "rope_theta": 1.0}, LOCAL: {"rope_type": "linear", "rope_theta": 2.0}})
    assert rope_theta(new, GLOBAL) == 1.0
    with pytest.raises(ValueError, match="rope_type"):
        rope_theta(new, LOCAL)
