"""BERT-family encoder (BertModel and models saved as it: MiniLM, BGE, E5, GTE-base...), packed.

Reference: transformers/models/bert/modeling_bert.py. All sequences of a batch are laid end to end
as ``(N, C)`` tokens: embeddings, linears, LayerNorm and GELU never see padding; attention pads
each run of similar lengths to its longest member only (``poolkit.layers.AttentionPlan``).
Weights go straight from the checkpoint into prepacked kernels (``init.linear``), q/k/v fused.
RoBERTa (``roberta.py``) reuses this file's layers, served classes and heads.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from poolkit.batch import PackedBatch
from poolkit.config import id2label
from poolkit.layers import LayerNorm, head_linear, packed_attention
from poolkit.model.interface import ModelInit, PoolingModel
from poolkit.model.weights import Weights

HIDDEN_ACTS = {"gelu": "gelu", "gelu_new": "gelu_tanh", "gelu_pytorch_tanh": "gelu_tanh", "relu": "relu"}

# buffers some checkpoints saved with the weights: no task reads them
BUFFERS = ("embeddings.position_ids", "embeddings.token_type_ids")


def activation(name: str, field: str, family: str) -> str:
    """The fused activation of a config's ``field`` (``hidden_act``...), or a ValueError listing the supported ones."""
    act = HIDDEN_ACTS.get(name)
    if act is None:
        raise ValueError(f"{field}={name!r} is not supported by the native {family}; supported: {sorted(HIDDEN_ACTS)}")
    return act


class BertEmbeddings(nn.Module):
    """word + position + token type embeddings, then LayerNorm (dropout is a no-op at inference)."""

    def __init__(self, cfg: Any, w: Weights) -> None:
        super().__init__()
        if getattr(cfg, "position_embedding_type", "absolute") != "absolute":
            raise ValueError(f"position_embedding_type={cfg.position_embedding_type!r} is not supported by the native BERT")
        self.word = nn.Parameter(w.take("embeddings.word_embeddings.weight").float())
        self.position = nn.Parameter(w.take("embeddings.position_embeddings.weight").float())
        self.token_type = nn.Parameter(w.take("embeddings.token_type_embeddings.weight").float())
        self.ln = LayerNorm.take(w, "embeddings.LayerNorm", cfg.layer_norm_eps)

    def positions(self, batch: PackedBatch) -> torch.Tensor:
        return batch.positions  # (N,)

    def forward(self, batch: PackedBatch) -> torch.Tensor:
        x = self.word[batch.input_ids] + self.position[self.positions(batch)]  # (N, C)
        if batch.token_type_ids is None or self.token_type.shape[0] == 1:  # one type: every token is type 0
            x = x + self.token_type[0]
        else:
            x = x + self.token_type[batch.token_type_ids]
        return self.ln(x)


class BertLayer(nn.Module):
    """Post-LN transformer layer: x = LN(x + attn(x)); x = LN(x + mlp(x))."""

    def __init__(self, init: ModelInit, p: str) -> None:
        super().__init__()
        cfg, w = init.config, init.weights
        self.num_heads = cfg.num_attention_heads
        qkv_w = torch.cat([w.take(f"{p}attention.self.{n}.weight") for n in ("query", "key", "value")])
        qkv_b = torch.cat([w.take(f"{p}attention.self.{n}.bias") for n in ("query", "key", "value")])
        # q/k/v and the MLP's inner layer keep the compute dtype: attention and ffn_out read it directly
        self.qkv = init.linear(qkv_w, qkv_b, keep_dtype=True)
        self.attn_out = init.linear(w.take(f"{p}attention.output.dense.weight"), w.take(f"{p}attention.output.dense.bias"))
        self.ln1 = LayerNorm.take(w, f"{p}attention.output.LayerNorm", cfg.layer_norm_eps)
        act = activation(cfg.hidden_act, "hidden_act", "BERT")
        self.ffn_in = init.linear(w.take(f"{p}intermediate.dense.weight"), w.take(f"{p}intermediate.dense.bias"), act,
                                  keep_dtype=True)
        # int8 keeps this one in the compute dtype: its GELU inputs cost the most accuracy (docs/performance.md)
        self.ffn_out = init.linear(w.take(f"{p}output.dense.weight"), w.take(f"{p}output.dense.bias"), quantize=False)
        self.ln2 = LayerNorm.take(w, f"{p}output.LayerNorm", cfg.layer_norm_eps)

    def forward(self, x: torch.Tensor, batch: PackedBatch) -> torch.Tensor:
        x = self.ln1(x + self.attn_out(packed_attention(self.qkv(x), batch.attention_plan, self.num_heads)))
        return self.ln2(x + self.ffn_out(self.ffn_in(x)))


class BertModel(nn.Module):
    """The encoder: returns the last hidden state of every token, ``(N, C)`` in fp32."""

    prefixes = ("bert.", "model.")  # what task-head checkpoints put in front of the encoder's keys
    embeddings_cls = BertEmbeddings

    def __init__(self, init: ModelInit) -> None:
        super().__init__()
        init.weights.strip_prefix(*self.prefixes)
        self.embeddings = self.embeddings_cls(init.config, init.weights)
        self.layers = nn.ModuleList(BertLayer(init, f"encoder.layer.{i}.") for i in range(init.config.num_hidden_layers))

    def forward(self, batch: PackedBatch) -> torch.Tensor:
        x = self.embeddings(batch)
        for layer in self.layers:
            x = layer(x, batch)
        return x


class ClassificationHead(nn.Module):
    """``out_proj(tanh(dense(x)))`` on pooled rows, ``(B, C) -> (B, num_labels)`` in fp32.

    BERT's tanh pooler + classifier (``pooler.dense``, ``classifier``) and RoBERTa's classification
    head (``classifier.dense``, ``classifier.out_proj``) are this same head under other key names.
    """

    def __init__(self, init: ModelInit, dense: str, out_proj: str) -> None:
        super().__init__()
        w = init.weights
        self.dense = head_linear(init, w.take(f"{dense}.weight"), w.take(f"{dense}.bias"))
        self.out_proj = head_linear(init, w.take(f"{out_proj}.weight"), w.take(f"{out_proj}.bias"))

    def forward(self, pooled: torch.Tensor) -> torch.Tensor:
        return self.out_proj(torch.tanh(self.dense(pooled)))


# --- served models ------------------------------------------------------------------------------


class BertPoolingModel(PoolingModel):
    """The encoder (``encoder_cls``) plus whatever head a subclass takes in :meth:`build_heads`; then
    every tensor of the checkpoint must have been used, except those starting with ``unused_weights``."""

    encoder_cls: type[BertModel] = BertModel
    unused_weights: tuple[str, ...] = BUFFERS

    def __init__(self, init: ModelInit) -> None:
        super().__init__(init)
        self.encoder = self.encoder_cls(init)
        self.build_heads(init)
        init.weights.check_consumed(type(self).__name__, ignore=self.unused_weights)
        limit = getattr(self.encoder.embeddings, "max_length", None)  # RoBERTa's: positions start after padding
        if limit is not None:
            self.max_model_len = limit

    def build_heads(self, init: ModelInit) -> None:
        """Take the head's tensors from ``init.weights`` (what the encoder left)."""

    def forward(self, batch: PackedBatch) -> torch.Tensor:
        return self.encoder(batch)


class BertForEmbedding(BertPoolingModel):
    """BertModel served for ``embed`` (pooled) and ``token_embed`` (every token)."""

    default_pooling = "CLS"  # vLLM's default; a Sentence Transformers config overrides it
    supported_tasks = ("embed", "token_embed")
    supported_quantizations = ("int8",)  # the encoder's linears, no head: tests/builtin_models/test_int8.py
    unused_weights = (*BUFFERS, "pooler.", "cls.")  # BertModel's tanh pooler and the MLM head: unused for embeddings


class BertForSequenceClassification(BertPoolingModel):
    """BERT with its classification head: tanh pooler on [CLS] -> classifier (cross-encoders too)."""

    default_pooling = "CLS"
    supported_tasks = ("classify", "score")
    head_weights = ("pooler.dense", "classifier")  # ClassificationHead's dense and out_proj

    def build_heads(self, init: ModelInit) -> None:
        self.classifier = ClassificationHead(init, *self.head_weights)
        self.num_labels = self.classifier.out_proj.out_features
        self.id2label = id2label(self.config, self.num_labels)

    def classify(self, pooled: torch.Tensor) -> torch.Tensor:
        """(B, C) [CLS] states -> (B, num_labels) logits."""
        return self.classifier(pooled)


class BertForTokenClassification(BertPoolingModel):
    """BERT with a per-token classifier (NER and other taggers)."""

    default_pooling = "ALL"
    supported_tasks = ("token_classify",)
    unused_weights = (*BUFFERS, "pooler.")  # some taggers were saved with BertModel's pooler

    def build_heads(self, init: ModelInit) -> None:
        w = init.weights
        self.classifier = head_linear(init, w.take("classifier.weight"), w.take("classifier.bias"))
        self.num_labels = self.classifier.out_features
        self.id2label = id2label(self.config, self.num_labels)

    def classify_tokens(self, hidden: torch.Tensor) -> torch.Tensor:
        """(N, C) token states -> (N, num_labels) logits."""
        return self.classifier(hidden)
