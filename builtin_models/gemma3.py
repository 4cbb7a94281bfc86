"""Gemma3 text encoder (``Gemma3TextModel``: EmbeddingGemma), packed.

Reference: transformers/models/gemma3/modeling_gemma3.py (``Gemma3TextModel``). A pre- and
post-norm layer::

    x += post_attn_norm(o(attn(rope(q_norm(q)), rope(k_norm(k)), v)))      # on input_norm(x)
    x += post_ffw_norm(down(gelu_tanh(gate) * up))                          # on pre_ffw_norm(x)

with, unlike Llama (``llama.py``): every RMSNorm scales by ``(1 + weight)``; the embeddings are
multiplied by ``sqrt(hidden_size)``; attention scores are scaled by ``query_pre_attn_scalar ** -0.5``
(not ``head_dim``); layers are ``sliding_attention`` (local, RoPE base ``rope_local_base_freq``) or
``full_attention`` (global, ``rope_theta``) after ``config.layer_types``; grouped-query attention.

Bidirectional attention (EmbeddingGemma)
----------------------------------------
``use_bidirectional_attention`` makes every layer an encoder layer: full layers see the whole
sequence, sliding layers a *symmetric* band. transformers' config rewrites the ``sliding_window``
of config.json to ``sliding_window // 2 + 1`` on load, and the mask lets query ``i`` see key ``j``
iff ``|i - j| < sliding_window`` (the loaded value), so EmbeddingGemma's 512 is 256 tokens each
side: ``packed_attention(window=sliding_window - 1)`` exactly. Without it the layers are causal and
sliding layers see the ``sliding_window - 1`` previous tokens (``causal=True`` plus the same band).

As in ``llama.py`` the sequences of a batch are laid end to end as ``(N, C)`` tokens, q/k/v are one
linear and a token's RoPE angle is its position in its own sequence. The kv heads go to
``packed_attention(num_kv_heads=...)`` as projected (not repeated per q head); the ratio of
``head_dim`` to ``query_pre_attn_scalar`` is folded into ``q_norm``'s weight (SDPA scales by
``head_dim ** -0.5``); gate and up are two linears so the GELU fuses into gate's kernel. Measured
against the transformers fallback with ``bench/embeddinggemma.py``.

``attn_logit_softcapping`` (null in EmbeddingGemma) is not applied, as in transformers' Gemma3,
whose attention never passes it on. EmbeddingGemma pools with its Sentence Transformers files
(mean -> Dense 768->3072 -> Dense 3072->768 -> Normalize, prompts such as ``query``), which
poolkit's embed task applies after this model (``builtin_poolers/tasks.py``).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from poolkit.batch import PackedBatch
from poolkit.builtin_models.bert import activation
from poolkit.builtin_models.llama import attention_heads
from poolkit.layers import RMSNorm, Rotary, packed_attention, rope_frequencies, rotate
from poolkit.model.interface import ModelInit, PoolingModel
from poolkit.model.weights import Weights

LAYER_TYPES = ("sliding_attention", "full_attention")


def gemma_norm(w: Weights, name: str, eps: float, scale: float = 1.0) -> RMSNorm:
    """Gemma's RMSNorm, ``x_normed * (1 + weight)``, as the shared fp32 RMSNorm with ``1 + weight``
    (times ``scale``, to fold a constant factor into the norm)."""
    weight = w.take(f"{name}.weight").float() + 1.0
    return RMSNorm(weight * scale if scale != 1.0 else weight, eps)


def rotary_of(cfg: Any, layer_type: str, head_dim: int, device: torch.device) -> Rotary:
    """The RoPE of one layer type: ``config.rope_parameters[layer_type]`` (transformers 5 keeps one per type)."""
    return Rotary(*rope_frequencies(cfg, head_dim, layer_type, model="the native Gemma3"), device)


class Gemma3Layer(nn.Module):
    """One layer; ``window`` (None: full) and ``causal`` select its attention mask."""

    def __init__(self, init: ModelInit, p: str, window: int | None, causal: bool) -> None:
        super().__init__()
        cfg, w, eps = init.config, init.weights, init.config.rms_norm_eps
        self.num_heads, self.num_kv_heads, self.head_dim = attention_heads(cfg)
        self.window, self.causal, self.dtype = window, causal, init.dtype
        a, m = f"{p}self_attn.", f"{p}mlp."
        bias = bool(getattr(cfg, "attention_bias", False))
        qkv_w = torch.cat([w.take(f"{a}{n}_proj.weight") for n in "qkv"])  # ((H + 2*Hkv) * D, C)
        qkv_b = torch.cat([w.take(f"{a}{n}_proj.bias") for n in "qkv"]) if bias else None
        self.qkv = init.linear(qkv_w, qkv_b, keep_dtype=True)
        self.o_proj = init.linear(w.take(f"{a}o_proj.weight"), w.take(f"{a}o_proj.bias") if bias else None)
        # SDPA scales scores by head_dim ** -0.5, Gemma by query_pre_attn_scalar ** -0.5: the ratio goes into q's norm
        q_scale = (self.head_dim / cfg.query_pre_attn_scalar) ** 0.5
        self.q_norm = gemma_norm(w, f"{a}q_norm", eps, q_scale)  # per head, over head_dim
        self.k_norm = gemma_norm(w, f"{a}k_norm", eps)
        self.input_norm = gemma_norm(w, f"{p}input_layernorm", eps)
        self.post_attn_norm = gemma_norm(w, f"{p}post_attention_layernorm", eps)
        self.pre_ffw_norm = gemma_norm(w, f"{p}pre_feedforward_layernorm", eps)
        self.post_ffw_norm = gemma_norm(w, f"{p}post_feedforward_layernorm", eps)
        # gate and up apart: the GELU fuses into gate's kernel (measured ~20% faster than a fused gate_up, then GELU)
        act = activation(cfg.hidden_activation, "hidden_activation", "Gemma3")
        self.gate = init.linear(w.take(f"{m}gate_proj.weight"), act=act, keep_dtype=True)  # (I, C)
        self.up = init.linear(w.take(f"{m}up_proj.weight"), keep_dtype=True)
        self.down = init.linear(w.take(f"{m}down_proj.weight"))

    def attention(self, x: torch.Tensor, batch: PackedBatch, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        """``(N, C)`` normed states -> ``(N, H * D)``, each sequence attending within itself."""
        N, H, Hkv, D = x.shape[0], self.num_heads, self.num_kv_heads, self.head_dim
        q, k, v = self.qkv(x).split([H * D, Hkv * D, Hkv * D], dim=-1)
        q = rotate(self.q_norm(q.view(N, H, D)), cos, sin).to(self.dtype).view(N, H * D)
        k = rotate(self.k_norm(k.view(N, Hkv, D)), cos, sin).to(self.dtype).view(N, Hkv * D)
        qkv = torch.cat([q, k, v], dim=-1)  # (N, (H + 2 * Hkv) * D); kv heads shared by H / Hkv q heads each
        return packed_attention(qkv, batch.attention_plan, H, causal=self.causal, window=self.window,
                                num_kv_heads=Hkv)

    def forward(self, x: torch.Tensor, batch: PackedBatch, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        x = x + self.post_attn_norm(self.o_proj(self.attention(self.input_norm(x), batch, cos, sin)))
        h = self.pre_ffw_norm(x)
        return x + self.post_ffw_norm(self.down(self.gate(h) * self.up(h)))  # gate: gelu_tanh(h @ W_gate.T)


class Gemma3TextEncoder(PoolingModel):
    """``Gemma3TextModel`` checkpoints: the last hidden state of every token (EmbeddingGemma's Transformer module)."""

    default_pooling = "MEAN"
    supported_tasks = ("embed", "token_embed")

    def __init__(self, init: ModelInit) -> None:
        super().__init__(init)
        cfg, w = init.config, init.weights.strip_prefix("model.")
        self.bidirectional = bool(getattr(cfg, "use_bidirectional_attention", False))
        if not self.bidirectional:
            self.default_pooling = "LAST"  # a causal Gemma3 embeds with its last token, like the other decoders
        layer_types = list(cfg.layer_types)
        unknown = sorted(set(layer_types) - set(LAYER_TYPES))
        if unknown:
            raise ValueError(f"layer_types {unknown} are not supported by the native Gemma3; supported: {LAYER_TYPES}")
        sliding = getattr(cfg, "sliding_window", None)
        window = {"full_attention": None, "sliding_attention": None if sliding is None else sliding - 1}
        head_dim = attention_heads(cfg)[2]
        # (V, C) in the checkpoint's dtype: rows are upcast on lookup
        self.embed = nn.Parameter(w.take("embed_tokens.weight"), requires_grad=False)
        scale = torch.tensor(cfg.hidden_size ** 0.5, dtype=torch.float32, device=init.device)
        self.register_buffer("embed_scale", scale, persistent=False)  # an fp32 constant, as transformers'
        self.layer_types = layer_types
        self.layers = nn.ModuleList(Gemma3Layer(init, f"layers.{i}.", window[t], causal=not self.bidirectional)
                                    for i, t in enumerate(layer_types))
        self.norm = gemma_norm(w, "norm", cfg.rms_norm_eps)
        self.rotary = nn.ModuleDict({t: rotary_of(cfg, t, head_dim, init.device) for t in sorted(set(layer_types))})
        w.check_consumed(type(self).__name__, ignore=("lm_head.",))

    def forward(self, batch: PackedBatch) -> torch.Tensor:
        angles = {t: rope.cos_sin(batch.positions) for t, rope in self.rotary.items()}  # once per batch
        x = self.embed[batch.input_ids].float() * self.embed_scale  # (N, C)
        for layer_type, layer in zip(self.layer_types, self.layers):
            x = layer(x, batch, *angles[layer_type])
        return self.norm(x)
