"""Llama, Qwen2 and Qwen3 decoders, packed: embedders, sequence classifiers and reward models.

References: transformers/models/llama/modeling_llama.py, models/qwen2/modeling_qwen2.py and
models/qwen3/modeling_qwen3.py. The three share one pre-norm layer
``x += o(attn(rope(q), rope(k), v)); x += down(silu(gate) * up)`` with RMSNorm, RoPE, grouped-query
attention (``num_key_value_heads``) and a final RMSNorm, and differ only in:

- q/k/v biases: always on Qwen2 (not on o_proj); on Llama and Qwen3 when ``attention_bias`` (o_proj too);
- Qwen3 RMS-normalizes every q and k head (``q_norm``/``k_norm``) before RoPE;
- ``head_dim`` may differ from ``hidden_size / num_attention_heads`` (Qwen3 sets it explicitly);
- ``tie_word_embeddings``: ``lm_head`` is the embedding table; it only matters for heads read from it.

As in ``bert.py`` every sequence of a batch is laid end to end as ``(N, C)`` tokens; attention is
causal per sequence (``packed_attention(causal=True)``, its masks built once per batch), and a
token's RoPE angle is its position in its own sequence. k/v heads are repeated to the q heads'
count before the shared packed attention.

RoPE (``poolkit.layers.rotary.rope_frequencies``): ``default``, ``linear``, ``llama3``, ``yarn`` and
``dynamic`` (identical to ``default`` up to ``max_position_embeddings``, which caps poolkit's
``max_model_len``). Sliding-window layers (Qwen2/3 ``use_sliding_window``) run only while every
sequence fits the window.

Pooling and prompts
-------------------
Decoders pool the LAST token (vLLM's default for them, and the Sentence Transformers ``lasttoken``
mode). Generative checkpoints (``*ForCausalLM``) embed with their hidden states; ``lm_head`` is not
used except by a reranker head (``qwen3_reranker.py``). For sequence classifiers poolkit scores the
sequence's last token; transformers' ``*ForSequenceClassification`` instead takes the last token
that is not ``pad_token_id`` (the same unless a text ends with the pad token, e.g. an appended EOS
equal to it).

Qwen3-Embedding (model card): LAST pooling, L2-normalized, queries carry an instruction
``"Instruct: {task}\\nQuery:{query}"`` (no space after ``Query:``) and documents none. Its Sentence
Transformers files say exactly that (``lasttoken`` pooling, a Normalize module, a ``query`` prompt
``"Instruct: Given a web search query, retrieve relevant passages that answer the query\\nQuery:"``),
so ``Engine.embed(..., prompt_name="query")`` applies it. The embedding is the hidden state of a
final ``<|endoftext|>``. poolkit adds no tokens of its own: it encodes with the checkpoint's
tokenizer and its special tokens, as Sentence Transformers and vLLM do, and the published
``tokenizer.json`` appends ``<|endoftext|>`` (id 151643) through a ``TemplateProcessing``
post-processor added shortly after release (QwenLM/Qwen3-Embedding#54). With a snapshot from
before that fix, append ``"<|endoftext|>"`` to each text. Left padding does not apply: packed
sequences have none.

Qwen3-Reranker: see ``qwen3_reranker.py`` (served as ``Qwen3ForSequenceClassification``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from poolkit.batch import PackedBatch
from poolkit.builtin_models.qwen3_reranker import (
    classifier_from_lm_head,
    classifier_tokens,
    reranker_pair,
    resolve_classifier_from_token,
)
from poolkit.config import id2label
from poolkit.layers import RMSNorm, Rotary, head_linear, packed_attention, rotate
from poolkit.model.interface import ModelInit, PoolingModel

# --- building blocks --------------------------------------------------------------------------


@dataclass(frozen=True)
class Family:
    """What distinguishes Llama, Qwen2 and Qwen3 layers."""

    qkv_bias: bool
    o_bias: bool
    qk_norm: bool

    @classmethod
    def of(cls, name: str, cfg: Any) -> Family:
        bias = bool(getattr(cfg, "attention_bias", False))
        if name == "llama":
            return cls(bias, bias, False)
        if name == "qwen2":
            return cls(True, False, False)
        if name == "qwen3":
            return cls(bias, bias, True)
        raise ValueError(f"Unknown decoder family {name!r}; supported: llama, qwen2, qwen3")


def attention_heads(cfg: Any) -> tuple[int, int, int]:
    """(q heads, kv heads, head_dim) with transformers' defaults."""
    heads = cfg.num_attention_heads
    kv_heads = getattr(cfg, "num_key_value_heads", None) or heads
    head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // heads
    if heads % kv_heads:
        raise ValueError(f"num_attention_heads={heads} is not a multiple of num_key_value_heads={kv_heads}")
    return heads, kv_heads, head_dim


def _sliding_window(cfg: Any) -> int | None:
    """The window of the sliding-attention layers, or None when every layer attends fully."""
    layer_types = getattr(cfg, "layer_types", None)
    if layer_types is not None:
        sliding = "sliding_attention" in layer_types
    else:  # transformers 4: use_sliding_window applies from layer max_window_layers on
        sliding = getattr(cfg, "use_sliding_window", False) and getattr(cfg, "max_window_layers", 0) < cfg.num_hidden_layers
    return getattr(cfg, "sliding_window", None) if sliding else None


class DecoderLayer(nn.Module):
    """Pre-norm layer: ``x += o(causal_attn(x_norm)); x += down(silu(gate) * up)``."""

    def __init__(self, init: ModelInit, p: str, family: Family) -> None:
        super().__init__()
        cfg, w = init.config, init.weights
        self.num_heads, self.num_kv_heads, self.head_dim = attention_heads(cfg)
        self.dtype = init.dtype
        a, m = f"{p}self_attn.", f"{p}mlp."
        qkv_w = torch.cat([w.take(f"{a}{n}_proj.weight") for n in "qkv"])  # ((H + 2*Hkv) * D, C)
        qkv_b = torch.cat([w.take(f"{a}{n}_proj.bias") for n in "qkv"]) if family.qkv_bias else None
        self.qkv = init.linear(qkv_w, qkv_b, keep_dtype=True)
        self.o_proj = init.linear(w.take(f"{a}o_proj.weight"), w.take(f"{a}o_proj.bias") if family.o_bias else None)
        self.q_norm = self.k_norm = None
        if family.qk_norm:  # per head, over head_dim
            self.q_norm = RMSNorm.take(w, f"{a}q_norm", cfg.rms_norm_eps)
            self.k_norm = RMSNorm.take(w, f"{a}k_norm", cfg.rms_norm_eps)
        self.input_norm = RMSNorm.take(w, f"{p}input_layernorm", cfg.rms_norm_eps)
        self.post_norm = RMSNorm.take(w, f"{p}post_attention_layernorm", cfg.rms_norm_eps)
        mlp_bias = bool(getattr(cfg, "mlp_bias", False))
        gate_up_w = torch.cat([w.take(f"{m}gate_proj.weight"), w.take(f"{m}up_proj.weight")])  # (2I, C)
        gate_up_b = torch.cat([w.take(f"{m}gate_proj.bias"), w.take(f"{m}up_proj.bias")]) if mlp_bias else None
        self.gate_up = init.linear(gate_up_w, gate_up_b, keep_dtype=True)
        self.down = init.linear(w.take(f"{m}down_proj.weight"), w.take(f"{m}down_proj.bias") if mlp_bias else None)

    def attention(self, x: torch.Tensor, batch: PackedBatch, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        """``(N, C)`` normed states -> ``(N, H * D)`` causal attention output per sequence."""
        N, H, Hkv, D = x.shape[0], self.num_heads, self.num_kv_heads, self.head_dim
        q, k, v = self.qkv(x).split([H * D, Hkv * D, Hkv * D], dim=-1)
        q, k, v = q.view(N, H, D), k.view(N, Hkv, D), v.view(N, Hkv, D)
        if self.q_norm is not None:
            q, k = self.q_norm(q), self.k_norm(k)
        q, k = rotate(q, cos, sin).to(self.dtype), rotate(k, cos, sin).to(self.dtype)
        if Hkv != H:  # grouped-query attention: q head j reads kv head j // (H / Hkv), as transformers' repeat_kv
            k, v = k.repeat_interleave(H // Hkv, dim=1), v.repeat_interleave(H // Hkv, dim=1)
        qkv = torch.cat([q.reshape(N, H * D), k.reshape(N, H * D), v.reshape(N, H * D)], dim=-1)  # (N, 3 * H * D)
        return packed_attention(qkv, batch.attention_plan, H, causal=True)

    def forward(self, x: torch.Tensor, batch: PackedBatch, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        x = x + self.o_proj(self.attention(self.input_norm(x), batch, cos, sin))
        gate, up = self.gate_up(self.post_norm(x)).chunk(2, dim=-1)  # (N, I) each
        return x + self.down(F.silu(gate) * up)


class Decoder(nn.Module):
    """Embeddings, layers, final norm: the last hidden state of every token, ``(N, C)`` in fp32."""

    def __init__(self, init: ModelInit, family: Family) -> None:
        super().__init__()
        cfg, w = init.config, init.weights.strip_prefix("model.")
        act = getattr(cfg, "hidden_act", "silu")
        if act != "silu":
            raise ValueError(f"hidden_act={act!r} is not supported by the native Llama/Qwen decoder (silu only)")
        for key in [k for k in w if k.endswith("rotary_emb.inv_freq")]:  # RoPE buffers of old Llama checkpoints
            del w[key]
        # kept in the checkpoint's dtype: rows are upcast on lookup, which is exact
        self.embed = nn.Parameter(w.take("embed_tokens.weight"), requires_grad=False)  # (V, C)
        self.layers = nn.ModuleList(DecoderLayer(init, f"layers.{i}.", family) for i in range(cfg.num_hidden_layers))
        self.norm = RMSNorm.take(w, "norm", cfg.rms_norm_eps)
        self.rotary = Rotary.from_config(cfg, attention_heads(cfg)[2], self.embed.device)
        self.sliding_window = _sliding_window(cfg)

    def forward(self, batch: PackedBatch) -> torch.Tensor:
        if self.sliding_window is not None and max(batch.lengths) > self.sliding_window:
            raise ValueError(f"A sequence of {max(batch.lengths)} tokens exceeds the sliding window "
                             f"({self.sliding_window}), which the native decoder does not implement")
        cos, sin = self.rotary.cos_sin(batch.positions)  # once per batch, for every layer
        x = self.embed[batch.input_ids].float()  # (N, C)
        for layer in self.layers:
            x = layer(x, batch, cos, sin)
        return self.norm(x)


# --- served models ------------------------------------------------------------------------------


class DecoderPoolingModel(PoolingModel):
    """The decoder of ``family`` plus whatever head a subclass takes in :meth:`build_heads`; then every
    tensor of the checkpoint must have been used, except those starting with ``unused_weights``."""

    family: str
    default_pooling = "LAST"
    supported_tasks: tuple[str, ...] = ()
    unused_weights: tuple[str, ...] = ()

    def __init__(self, init: ModelInit) -> None:
        super().__init__(init)
        self.model = Decoder(init, Family.of(self.family, init.config))
        self.build_heads(init)
        init.weights.check_consumed(type(self).__name__, ignore=self.unused_weights)

    def build_heads(self, init: ModelInit) -> None:
        """Take the head's tensors from ``init.weights`` (what the decoder left)."""

    @property
    def max_model_len(self) -> int | None:
        """The sliding window, when there are sliding layers: the native decoder runs only within it, so
        longer inputs are truncated or refused when the request is admitted, never inside a shared batch."""
        window = self.model.sliding_window
        return min(window, getattr(self.config, "max_position_embeddings", window)) if window else None

    def forward(self, batch: PackedBatch) -> torch.Tensor:
        return self.model(batch)


class _ForEmbedding(DecoderPoolingModel):
    """A base ``*Model`` checkpoint served for ``embed`` (LAST token) and ``token_embed``."""

    supported_tasks = ("embed", "token_embed")


class _CausalLMForEmbedding(_ForEmbedding):
    """A generative ``*ForCausalLM`` checkpoint embedding with its hidden states; ``lm_head`` is unused."""

    is_generative = True
    unused_weights = ("lm_head.",)


class _ForSequenceClassification(DecoderPoolingModel):
    """``score`` (linear, no bias) on the LAST token; or, with ``classifier_from_token``, rows of ``lm_head``
    (Qwen3-Reranker, ``qwen3_reranker.py``)."""

    supported_tasks = ("classify", "score")

    def build_heads(self, init: ModelInit) -> None:
        tokens = classifier_tokens(self.config)
        if tokens is None:
            weight = init.weights.take("score.weight")  # (num_labels, C)
            self.id2label = id2label(self.config, weight.shape[0])
        else:
            weight, self.id2label = classifier_from_lm_head(self.config, init.weights, self.model.embed, tokens)
        self.num_labels = weight.shape[0]
        self.score = init.linear(weight)

    def classify(self, pooled: torch.Tensor) -> torch.Tensor:
        """``(B, C)`` last-token states -> ``(B, num_labels)`` logits."""
        return self.score(pooled)

    @classmethod
    def prepare_config(cls, config: Any, tokenizer: Any) -> None:
        """Called by the Engine with the tokenizer before the model is built: resolve reranker token ids."""
        resolve_classifier_from_token(config, tokenizer)

    def format_score_pair(self, query: str, document: str) -> str | None:
        """Qwen3-Reranker's documented template for a (query, document) pair; None for plain pair input."""
        return reranker_pair(self.config, query, document)


def _served(base: type[DecoderPoolingModel], family: str, name: str, doc: str) -> type[DecoderPoolingModel]:
    """A served class: ``base`` for the checkpoints of ``family``."""
    return type(name, (base,), {"family": family, "__doc__": doc, "__module__": __name__, "__qualname__": name})


# class -> (what it serves, family); the names are the module:Class targets in builtin_models/__init__.py
LlamaForEmbedding = _served(_ForEmbedding, "llama", "LlamaForEmbedding", "``LlamaModel`` checkpoints.")
Qwen2ForEmbedding = _served(_ForEmbedding, "qwen2", "Qwen2ForEmbedding", "``Qwen2Model`` checkpoints (gte-Qwen2...).")
Qwen3ForEmbedding = _served(_ForEmbedding, "qwen3", "Qwen3ForEmbedding", "``Qwen3Model`` checkpoints (Qwen3-Embedding).")
LlamaCausalLMForEmbedding = _served(_CausalLMForEmbedding, "llama", "LlamaCausalLMForEmbedding",
                                    "``LlamaForCausalLM`` checkpoints, embedding.")
Qwen2CausalLMForEmbedding = _served(_CausalLMForEmbedding, "qwen2", "Qwen2CausalLMForEmbedding",
                                    "``Qwen2ForCausalLM`` checkpoints, embedding.")
Qwen3CausalLMForEmbedding = _served(_CausalLMForEmbedding, "qwen3", "Qwen3CausalLMForEmbedding",
                                    "``Qwen3ForCausalLM`` checkpoints, embedding.")
LlamaForSequenceClassification = _served(_ForSequenceClassification, "llama", "LlamaForSequenceClassification",
                                         "``LlamaForSequenceClassification`` checkpoints (reward models such as "
                                         "Skywork-Reward-Llama too).")
Qwen2ForSequenceClassification = _served(_ForSequenceClassification, "qwen2", "Qwen2ForSequenceClassification",
                                         "``Qwen2ForSequenceClassification`` checkpoints.")
Qwen3ForSequenceClassification = _served(_ForSequenceClassification, "qwen3", "Qwen3ForSequenceClassification",
                                         "``Qwen3ForSequenceClassification`` checkpoints, and Qwen3-Reranker "
                                         "through ``classifier_from_token``.")


class Qwen2ForRewardModel(DecoderPoolingModel):
    """Qwen2.5-Math-RM style outcome reward model: ``score`` = Linear -> ReLU -> Linear on every token.

    transformers ships no class for it (the checkpoints use remote code); the head's keys are
    ``score.0.*`` and ``score.2.*``. Served for ``token_classify`` (``Engine.reward``) with raw
    rewards; vLLM reads the last token's.
    """

    family = "qwen2"
    default_pooling = "ALL"
    supported_tasks = ("token_classify",)
    default_use_activation = False
    unused_weights = ("lm_head.",)

    def build_heads(self, init: ModelInit) -> None:
        w = init.weights
        self.score_in = head_linear(init, w.take("score.0.weight"), w.take("score.0.bias"), "relu")
        self.score_out = head_linear(init, w.take("score.2.weight"), w.take("score.2.bias"))
        self.num_labels = self.score_out.out_features
        self.id2label = id2label(self.config, self.num_labels)

    def classify_tokens(self, hidden: torch.Tensor) -> torch.Tensor:
        """``(N, C)`` -> ``(N, num_labels)`` rewards."""
        return self.score_out(self.score_in(hidden))


class Qwen2ForProcessRewardModel(Qwen2ForRewardModel):
    """Qwen2.5-Math-PRM: the same head with 2 labels, read at step-tag tokens (``pooling_type`` STEP), softmax."""

    default_pooling = "STEP"
    default_use_activation = True
