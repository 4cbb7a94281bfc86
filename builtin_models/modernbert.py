"""ModernBERT encoder (ModernBertModel, ModernBertFor{Sequence,Token}Classification), packed.

Reference: transformers/models/modernbert/modeling_modernbert.py. Differences from BERT: pre-norm
layers (layer 0 has no attention norm), no biases unless ``attention_bias`` / ``mlp_bias`` /
``norm_bias``, a GeGLU MLP (``Wi`` holds the input and gate halves), RoPE instead of position
embeddings, and alternating attention: every ``global_attn_every_n_layers``-th layer (from layer 0)
is global, the others are local, each token seeing the tokens within ``local_attention // 2`` of it.
Global and local layers use RoPE with their own theta (``global_rope_theta`` / ``local_rope_theta``,
in transformers 5.x ``rope_parameters["full_attention" | "sliding_attention"]["rope_theta"]``).

As in ``bert.py``, the tokens of all sequences are laid end to end as ``(N, C)``; attention pads
only inside the length-bucketed chunks of ``poolkit.layers.AttentionPlan``, and local layers use
its band mask (``packed_attention(..., window=)``), built once per batch.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from poolkit.batch import PackedBatch
from poolkit.builtin_models.bert import activation
from poolkit.config import id2label
from poolkit.layers import LayerNorm, Rotary, head_linear, packed_attention, rope_parameters, rotate_qkv
from poolkit.model.interface import ModelInit, PoolingModel
from poolkit.model.weights import Weights

GLOBAL, LOCAL = "full_attention", "sliding_attention"


# --- config (transformers 5.x names first, 4.x names as a fallback) ---------------------------------


def layer_types(cfg: Any) -> list[str]:
    """``full_attention`` / ``sliding_attention`` for each layer."""
    types = getattr(cfg, "layer_types", None)
    if types:
        return list(types)
    every = getattr(cfg, "global_attn_every_n_layers", 3)
    return [LOCAL if i % every else GLOBAL for i in range(cfg.num_hidden_layers)]


def rope_theta(cfg: Any, kind: str) -> float:
    """RoPE base of ``kind`` layers; refuses RoPE scaling, which ModernBERT checkpoints do not use."""
    global_theta = getattr(cfg, "global_rope_theta", None) or 160_000.0
    fallback = global_theta if kind == GLOBAL else getattr(cfg, "local_rope_theta", None) or global_theta  # 4.x: None means the global one
    return rope_parameters(cfg, kind, float(fallback), ("default",), "the native ModernBERT")["rope_theta"]


def _maybe(w: Weights, key: str, present: bool) -> torch.Tensor | None:
    """``take`` a tensor the config says exists (a bias under ``*_bias: true``), else None."""
    return w.take(key) if present else None


def _norm(cfg: Any, w: Weights, name: str) -> LayerNorm:
    """A LayerNorm whose bias is zero unless ``norm_bias``."""
    return LayerNorm.take(w, name, cfg.norm_eps, bias=cfg.norm_bias)


# --- the model -------------------------------------------------------------------------------------


class ModernBertLayer(nn.Module):
    """Pre-LN layer: x = x + Wo(attn(norm(x))); x = x + Wo(act(input) * gate), [input|gate] = Wi(norm(x))."""

    def __init__(self, init: ModelInit, i: int, kind: str) -> None:
        super().__init__()
        cfg, w, p = init.config, init.weights, f"layers.{i}."
        self.num_heads = cfg.num_attention_heads
        self.window = cfg.local_attention // 2 if kind == LOCAL else None  # each side; None: global
        self.kind = kind
        self.attn_norm = None if i == 0 else _norm(cfg, w, f"{p}attn_norm")  # layer 0: the embedding norm
        ab, mb = cfg.attention_bias, cfg.mlp_bias
        self.qkv = init.linear(w.take(f"{p}attn.Wqkv.weight"), _maybe(w, f"{p}attn.Wqkv.bias", ab),
                               keep_dtype=True)  # (3C, C): q, k, v rows, as packed_attention reads them
        self.attn_out = init.linear(w.take(f"{p}attn.Wo.weight"), _maybe(w, f"{p}attn.Wo.bias", ab))
        self.mlp_norm = _norm(cfg, w, f"{p}mlp_norm")
        act = activation(cfg.hidden_activation, "hidden_activation", "ModernBERT")
        wi, wi_b = w.take(f"{p}mlp.Wi.weight"), _maybe(w, f"{p}mlp.Wi.bias", mb)  # (2I, C): input rows, then gate rows
        inner = wi.shape[0] // 2
        self.ffn_in = init.linear(wi[:inner], None if wi_b is None else wi_b[:inner], act, keep_dtype=True)
        self.ffn_gate = init.linear(wi[inner:], None if wi_b is None else wi_b[inner:], keep_dtype=True)
        self.ffn_out = init.linear(w.take(f"{p}mlp.Wo.weight"), _maybe(w, f"{p}mlp.Wo.bias", mb))

    def forward(self, x: torch.Tensor, batch: PackedBatch, rope: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        h = x if self.attn_norm is None else self.attn_norm(x)
        qkv = rotate_qkv(self.qkv(h), self.num_heads, *rope)  # (N, 3C)
        x = x + self.attn_out(packed_attention(qkv, batch.attention_plan, self.num_heads, window=self.window))
        h = self.mlp_norm(x)
        return x + self.ffn_out(self.ffn_in(h) * self.ffn_gate(h))


class ModernBertModel(nn.Module):
    """The encoder: token embeddings + norm, the layers, final norm; ``(N, C)`` in fp32."""

    def __init__(self, init: ModelInit) -> None:
        super().__init__()
        cfg, w = init.config, init.weights.strip_prefix("model.")
        if cfg.hidden_size % cfg.num_attention_heads:
            raise ValueError(f"hidden_size {cfg.hidden_size} is not a multiple of num_attention_heads {cfg.num_attention_heads}")
        self.tok = nn.Parameter(w.take("embeddings.tok_embeddings.weight").float())
        self.emb_norm = _norm(cfg, w, "embeddings.norm")
        kinds = layer_types(cfg)
        self.layers = nn.ModuleList(ModernBertLayer(init, i, kinds[i]) for i in range(cfg.num_hidden_layers))
        self.final_norm = _norm(cfg, w, "final_norm")
        head_dim = cfg.hidden_size // cfg.num_attention_heads
        self.rope = nn.ModuleDict({kind: Rotary.from_theta(head_dim, rope_theta(cfg, kind), init.device)
                                   for kind in sorted(set(kinds))})

    def forward(self, batch: PackedBatch) -> torch.Tensor:
        positions = batch.positions
        rope = {kind: r.cos_sin(positions) for kind, r in self.rope.items()}  # once per batch, for every layer
        x = self.emb_norm(self.tok[batch.input_ids])  # (N, C)
        for layer in self.layers:
            x = layer(x, batch, rope[layer.kind])
        return self.final_norm(x)


# --- served models ------------------------------------------------------------------------------


class ModernBertPoolingModel(PoolingModel):
    """The encoder plus whatever head a subclass takes in :meth:`build_heads`; then every tensor of
    the checkpoint must have been used, except those starting with ``unused_weights``."""

    unused_weights: tuple[str, ...] = ()

    def __init__(self, init: ModelInit) -> None:
        super().__init__(init)
        self.model = ModernBertModel(init)
        self.build_heads(init)
        init.weights.check_consumed(type(self).__name__, ignore=self.unused_weights)

    def build_heads(self, init: ModelInit) -> None:
        """Take the head's tensors from ``init.weights`` (what the encoder left)."""

    def forward(self, batch: PackedBatch) -> torch.Tensor:
        return self.model(batch)


class ModernBertForEmbedding(ModernBertPoolingModel):
    """ModernBertModel served for ``embed`` (pooled) and ``token_embed`` (every token)."""

    default_pooling = "CLS"  # vLLM's default for ModernBertModel; a Sentence Transformers config overrides it
    supported_tasks = ("embed", "token_embed")
    unused_weights = ("head.", "decoder.")  # an MLM head (ModernBertForMaskedLM's) is not used for embeddings


class _ModernBertWithHead(ModernBertPoolingModel):
    """ModernBERT plus its prediction head (dense -> act -> norm) and a ``classifier`` linear, in fp32."""

    def build_heads(self, init: ModelInit) -> None:
        cfg, w = init.config, init.weights
        act = activation(cfg.classifier_activation, "classifier_activation", "ModernBERT")
        self.dense = head_linear(init, w.take("head.dense.weight"), _maybe(w, "head.dense.bias", cfg.classifier_bias), act)
        self.norm = _norm(cfg, w, "head.norm")
        self.classifier = head_linear(init, w.take("classifier.weight"), w.take("classifier.bias"))
        self.num_labels = self.classifier.out_features
        self.id2label = id2label(cfg, self.num_labels)

    def head(self, states: torch.Tensor) -> torch.Tensor:
        """(N, C) states -> (N, num_labels) logits."""
        return self.classifier(self.norm(self.dense(states.float())))


class ModernBertForSequenceClassification(_ModernBertWithHead):
    """ModernBERT with its classification head: pooled -> dense -> act -> norm -> classifier.

    The head pools by ``config.classifier_pooling`` ("cls" or "mean" over all tokens), so the
    instance's ``default_pooling`` follows it; the class attribute is the "cls" default.
    """

    default_pooling = "CLS"
    supported_tasks = ("classify", "score")

    def __init__(self, init: ModelInit) -> None:
        pooling = getattr(init.config, "classifier_pooling", "cls")
        if pooling not in ("cls", "mean"):
            raise ValueError(f"classifier_pooling={pooling!r} is not supported; expected 'cls' or 'mean'")
        super().__init__(init)
        self.default_pooling = pooling.upper()

    def classify(self, pooled: torch.Tensor) -> torch.Tensor:
        """(B, C) pooled states ([CLS] or mean, per ``classifier_pooling``) -> (B, num_labels) logits."""
        return self.head(pooled)


class ModernBertForTokenClassification(_ModernBertWithHead):
    """ModernBERT with the same head on every token (NER and other taggers)."""

    default_pooling = "ALL"
    supported_tasks = ("token_classify",)

    def classify_tokens(self, hidden: torch.Tensor) -> torch.Tensor:
        """(N, C) token states -> (N, num_labels) logits."""
        return self.head(hidden)
