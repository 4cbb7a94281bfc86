"""The example plugin, installed, used through poolkit: each part against a direct computation."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file
from transformers import AutoTokenizer

import poolkit
from poolkit import Engine, PoolingParams, testing
from poolkit.io_processor import IOProcessorError
from poolkit.registry import check_plugins

TEXTS = ["a short one", "bag of words models ignore word order entirely", "x", "tokens tokens tokens again"]


def _bow_states(path, text):
    """h_i = tanh(W e(t_i) + b) for the tokens of ``text``, straight from the checkpoint file."""
    sd = load_file(str(path / "model.safetensors"))
    ids = AutoTokenizer.from_pretrained(path)(text)["input_ids"]
    return ids, torch.tanh(sd["embeddings.weight"][ids] @ sd["proj.weight"].T + sd["proj.bias"])


def test_registered_by_entry_point(poolkit_host):
    [info] = [p for p in poolkit_host.plugins if p.dist == "poolkit-plugin-example"]
    assert info.error is None and info.version == "0.1.0"
    assert info.registered == {"architectures": ["MeanBagOfWordsModel"], "poolers": ["MEAN_SQRT_LEN"],
                               "tasks": ["token_norms"], "io_processors": ["keywords"]}


def test_every_part_subclasses_its_base_class_and_checks_clean(poolkit_host):
    bases = {"architectures": poolkit.PoolingModel, "poolers": poolkit.PoolingMethod, "tasks": poolkit.TaskAdapter,
             "io_processors": poolkit.IOProcessor}
    for kind, base in bases.items():
        for name in poolkit_host.registry(kind).names():
            entry = poolkit_host.registry(kind).get(name)
            if entry.plugin.dist == "poolkit-plugin-example":
                assert issubclass(entry.load(), base), (kind, name)
    assert [row for row in check_plugins(poolkit_host) if row["distribution"] == "poolkit-plugin-example"] == []


def test_architecture_embeds_like_the_direct_computation(poolkit_host, bow_path):
    engine = Engine(str(bow_path))
    assert engine.architecture == "MeanBagOfWordsModel"
    assert set(engine.supported_tasks) == {"embed", "token_embed", "token_norms"}
    want = [F.normalize(_bow_states(bow_path, t)[1].mean(0), dim=-1) for t in TEXTS]
    testing.assert_close_to_reference(engine.embed(TEXTS), want, atol=1e-5)


def test_pooler_on_a_bert(poolkit_host, tiny_engine, tiny_bert_path):
    engine = tiny_engine(pooler_config={"pooling_type": "MEAN_SQRT_LEN", "normalize": False})
    hidden = testing.reference_hidden_states(tiny_bert_path, TEXTS)
    want = [h.sum(0) / len(h) ** 0.5 for h in hidden]
    testing.assert_close_to_reference(engine.embed(TEXTS), want, atol=1e-5)


def test_task_returns_token_norms(poolkit_host, bow_path):
    engine = Engine(str(bow_path))
    outs = engine.encode(TEXTS, task="token_norms")
    testing.assert_close_to_reference(outs, [_bow_states(bow_path, t)[1].norm(dim=-1) for t in TEXTS], atol=1e-5)
    with pytest.raises(ValueError, match="token_norms takes no"):
        engine.encode("x", task="token_norms", pooling_params=PoolingParams(normalize=True))


def test_keywords_processor(poolkit_host, bow_path):
    engine = Engine(str(bow_path), io_processor_plugin="keywords")
    assert "plugin" in engine.supported_tasks
    text = "tokens tokens tokens again and again"
    [result] = engine.encode({"text": text, "top_k": 3}, task="plugin")
    ids, states = _bow_states(bow_path, text)
    tok = AutoTokenizer.from_pretrained(bow_path)
    scores = {}
    for i, n in zip(ids[1:-1], states.norm(dim=-1)[1:-1].tolist()):  # [CLS] and [SEP] left out
        scores[i] = max(n, scores.get(i, 0.0))
    top = sorted(scores.items(), key=lambda kv: -kv[1])[:3]
    assert [k.token for k in result.keywords] == tok.convert_ids_to_tokens([i for i, _ in top])
    assert [k.score for k in result.keywords] == pytest.approx([s for _, s in top], abs=1e-5)
    assert engine.io_processor.to_response(result)["keywords"][0].keys() == {"token", "score"}


def test_bad_request_fails_alone_and_names_the_plugin(poolkit_host, bow_path):
    engine = Engine(str(bow_path), io_processor_plugin="keywords")
    good, bad = engine.encode_plugin_batch(["a fine text with words", {"text": "x", "top_k": 0}])
    assert len(good.keywords) == 5  # top_k defaults to 5
    assert isinstance(bad, IOProcessorError) and bad.client_error
    assert "IO processor 'keywords'" in str(bad) and "poolkit-plugin-example 0.1.0" in str(bad)
