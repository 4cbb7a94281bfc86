"""Every built-in family follows the model contract (``PoolingModel`` built from one ``ModelInit``) and the
Engine builds each; a class off the contract is refused with what to change."""

from __future__ import annotations

import pytest
import torch

from poolkit import testing
from poolkit.builtin_models import ARCHITECTURES
from poolkit.builtin_models.transformers_fallback import TransformersFallback
from poolkit.model.interface import PoolingModel, contract_problems
from tests.builtin_models.builders_llama import build_reward_checkpoint, build_tiny_decoder
from tests.builtin_models.builders_modernbert import build_tiny_modernbert
from tests.builtin_models.builders_roberta import build_tiny_bge_m3, build_tiny_roberta
from tests.builtin_models.helpers import native_class

RERANKER = {"architectures": ["Qwen3ForSequenceClassification"], "classifier_from_token": ["no", "yes"],
            "is_original_qwen3_reranker": True}


def _distilbert(path):
    import torch
    import transformers

    cfg = transformers.DistilBertConfig(vocab_size=30522, dim=32, n_layers=1, n_heads=2, hidden_dim=64)
    torch.manual_seed(0)
    transformers.DistilBertModel(cfg).save_pretrained(path, safe_serialization=True)
    testing.copy_wordpiece_tokenizer(path)
    return path


FAMILIES = {  # id -> (build the checkpoint in a directory, Engine kwargs, the architecture served)
    "bert": (lambda p: testing.build_tiny_bert(p), {}, "BertModel"),
    "bert-sequence": (lambda p: testing.build_tiny_bert(p, head="sequence", num_labels=1), {},
                      "BertForSequenceClassification"),
    "bert-token": (lambda p: testing.build_tiny_bert(p, head="token"), {}, "BertForTokenClassification"),
    "roberta": (lambda p: build_tiny_roberta(p, "XLMRobertaModel"), {}, "XLMRobertaModel"),
    "roberta-sequence": (lambda p: build_tiny_roberta(p, "RobertaForSequenceClassification"), {},
                         "RobertaForSequenceClassification"),
    "bge-m3": (build_tiny_bge_m3, {"hf_overrides": {"architectures": ["BgeM3EmbeddingModel"]}}, "BgeM3EmbeddingModel"),
    "modernbert": (build_tiny_modernbert, {}, "ModernBertModel"),
    "modernbert-sequence": (lambda p: build_tiny_modernbert(p, architecture="ModernBertForSequenceClassification"),
                            {}, "ModernBertForSequenceClassification"),
    "modernbert-token": (lambda p: build_tiny_modernbert(p, architecture="ModernBertForTokenClassification"), {},
                         "ModernBertForTokenClassification"),
    "llama": (lambda p: build_tiny_decoder(p, "LlamaModel", num_layers=1), {}, "LlamaModel"),
    "qwen2-causallm": (lambda p: build_tiny_decoder(p, "Qwen2ForCausalLM", num_layers=1), {}, "Qwen2ForCausalLM"),
    "qwen3-sequence": (lambda p: build_tiny_decoder(p, "Qwen3ForSequenceClassification", num_layers=1), {},
                       "Qwen3ForSequenceClassification"),
    "qwen3-reranker": (lambda p: build_tiny_decoder(p, "Qwen3ForCausalLM", num_layers=1, tie_word_embeddings=True),
                       {"hf_overrides": RERANKER}, "Qwen3ForSequenceClassification"),
    "qwen2-reward": (lambda p: build_reward_checkpoint(p, "Qwen2ForRewardModel", 1, seed=0)[0], {},
                     "Qwen2ForRewardModel"),
    "qwen2-process-reward": (lambda p: build_reward_checkpoint(p, "Qwen2ForProcessRewardModel", 2, seed=0)[0], {},
                             "Qwen2ForProcessRewardModel"),
    "transformers-fallback": (_distilbert, {}, "DistilBertModel"),
}


@pytest.mark.parametrize("architecture", sorted(ARCHITECTURES))
def test_registered_classes_take_one_model_init(architecture):
    cls = native_class(architecture)
    assert issubclass(cls, PoolingModel) and contract_problems(cls) == []
    assert issubclass(TransformersFallback, PoolingModel) and contract_problems(TransformersFallback) == []


@pytest.mark.parametrize("family", FAMILIES)
def test_engine_builds_every_family(tmp_path, family):
    from poolkit import Engine

    build, kwargs, architecture = FAMILIES[family]
    path = build(tmp_path / family)
    engine = Engine(str(path), **kwargs)
    assert engine.architecture == architecture
    assert engine.model.hidden_size == engine.model_config.hf_config.hidden_size


def test_fallback_refuses_unexpected_tensors(tmp_path):
    """The fallback checks what is left the same way as the native families (Weights.check_consumed)."""
    import torch
    from safetensors.torch import load_file, save_file

    from poolkit import Engine

    path = _distilbert(tmp_path)
    state = load_file(path / "model.safetensors")
    save_file({**state, "vocab_projector.weight": torch.zeros(4, 32)}, path / "model.safetensors")
    with pytest.raises(KeyError, match=r"Unexpected tensors in a DistilBertModel checkpoint: \['vocab_projector"):
        Engine(str(path))



class PlainModule(torch.nn.Module):
    """A model class as written before the PoolingModel contract: a plain module built from four arguments."""

    def __init__(self, cfg, sd, dtype=torch.float32, kernels="auto"):
        super().__init__()

    def forward(self, batch):
        raise AssertionError("never built")


class FourArguments(PoolingModel):
    def __init__(self, cfg, sd, dtype=torch.float32, kernels="auto"):
        super().__init__()

    def forward(self, batch):
        raise AssertionError("never built")


@pytest.mark.parametrize("cls, problem", [
    (PlainModule, "is not a subclass of poolkit.PoolingModel: subclass it and take one poolkit.ModelInit, "
                  "__init__(self, init)"),
    (FourArguments, "has an __init__(cfg, sd, dtype=torch.float32, kernels='auto') that does not take one "
                    "poolkit.ModelInit: write __init__(self, init)"),
])
def test_engine_refuses_a_class_off_the_contract(fresh_host, tiny_bert_dir, cls, problem):
    from poolkit import Engine

    with testing.plugin_parts(architectures={"OldModel": cls}):
        with pytest.raises(TypeError) as caught:
            Engine(str(tiny_bert_dir), hf_overrides={"architectures": ["OldModel"]})
    assert str(caught.value) == (f"architecture 'OldModel': class {cls.__module__}.{cls.__qualname__} {problem} "
                                 f"(docs/plugins.md, 'Architectures')")
