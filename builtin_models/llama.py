"""Llama, Qwen2 and Qwen3 decoders, packed: embedders, sequence classifiers and yes/no rerankers.

References: transformers/models/llama/modeling_llama.py, models/qwen2/modeling_qwen2.py and
models/qwen3/modeling_qwen3.py. The three share one pre-norm layer
``x += o(attn(rope(q), rope(k), v)); x += down(silu(gate) * up)`` with RMSNorm, RoPE, grouped-query
attention (``num_key_value_heads``) and a final RMSNorm, and differ only in:

- q/k/v biases: always on Qwen2 (not on o_proj); on Llama and Qwen3 when ``attention_bias`` (o_proj too);
- Qwen3 RMS-normalizes every q and k head (``q_norm``/``k_norm``) before RoPE;
- ``head_dim`` may differ from ``hidden_size / num_attention_heads`` (Qwen3 sets it explicitly);
- ``tie_word_embeddings``: ``lm_head`` is the embedding table; it only matters for heads read from it.

As in ``bert.py`` every sequence of a batch is laid end to end as ``(N, C)`` tokens; attention is
causal per sequence (``packed_attention(causal=True)``), and a token's RoPE angle is its position in
its own sequence. k/v heads are repeated to the q heads' count before the shared packed attention.

RoPE: ``rope_theta`` and the scaling type are read from ``config.rope_parameters`` (transformers 5)
or ``rope_theta``/``rope_scaling`` (transformers 4). ``default`` is computed here; ``linear``,
``llama3``, ``yarn`` and ``dynamic`` (identical to ``default`` up to ``max_position_embeddings``, which
caps poolkit's ``max_model_len``) take their frequencies from the installed transformers.
Sliding-window layers (Qwen2/3 ``use_sliding_window``) run only while every sequence fits the window.

Pooling and prompts
-------------------
Decoders pool the LAST token (vLLM's default for them, and the Sentence Transformers ``lasttoken``
mode). Generative checkpoints (``*ForCausalLM``) embed with their hidden states; ``lm_head`` is not
used except by a reranker head below. For sequence classifiers poolkit scores the sequence's last
token; transformers' ``*ForSequenceClassification`` instead takes the last token that is not
``pad_token_id`` (the same unless a text ends with the pad token, e.g. an appended EOS equal to it).

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

Qwen3-Reranker is a ``Qwen3ForCausalLM`` served, as in vLLM, with ``hf_overrides={"architectures":
["Qwen3ForSequenceClassification"], "classifier_from_token": ["no", "yes"],
"is_original_qwen3_reranker": True}``: the score logit is ``(lm_head[yes] - lm_head[no]) . h_last``,
so ``sigmoid(score)`` is the model card's softmax over the ``no``/``yes`` logits. Token ids come
from ``config.classifier_from_token_ids``; :func:`resolve_classifier_from_token` fills it from the
tokenizer (the engine calls it, or pass the ids in ``hf_overrides``), so the model class needs only
config and tensors. :func:`format_qwen3_reranker_pair` builds the model card's prompt.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from poolkit.batch import PackedBatch
from poolkit.config import id2label
from poolkit.kernels import FastLinear, packed_attention
from poolkit.weights import strip_prefix, take

# --- Qwen3-Reranker prompt (model card) ---------------------------------------------------------

QWEN3_RERANKER_PREFIX = (
    "<|im_start|>system\nJudge whether the Document meets the requirements based on the Query and the Instruct "
    'provided. Note that the answer can only be "yes" or "no".<|im_end|>\n<|im_start|>user\n'
)
QWEN3_RERANKER_SUFFIX = "<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\n"
QWEN3_RERANKER_INSTRUCTION = "Given a web search query, retrieve relevant passages that answer the query"


def format_qwen3_reranker_pair(query: str, doc: str, instruction: str | None = None) -> str:
    """The Qwen3-Reranker prompt for one (query, document) pair, to be tokenized as one text.

    Encode it with ``add_special_tokens=False``: that gives the model card's ``prefix_tokens +
    tokenizer(body) + suffix_tokens`` (Qwen3-Reranker's tokenizer has no post-processor adding
    tokens, and the last token must stay the suffix's, where the yes/no logits are read).
    """
    body = f"<Instruct>: {instruction or QWEN3_RERANKER_INSTRUCTION}\n<Query>: {query}\n<Document>: {doc}"
    return QWEN3_RERANKER_PREFIX + body + QWEN3_RERANKER_SUFFIX


def resolve_classifier_from_token(hf_config: Any, tokenizer: Any) -> None:
    """Set ``hf_config.classifier_from_token_ids`` from ``classifier_from_token`` with the model's tokenizer.

    A no-op when the config names no tokens or already has the ids. Call it before building the model.
    """
    tokens = _classifier_tokens(hf_config)
    if tokens is None or getattr(hf_config, "classifier_from_token_ids", None) is not None:
        return
    ids = [tokenizer.convert_tokens_to_ids(t) for t in tokens]
    unknown = [t for t, i in zip(tokens, ids) if i is None or i == tokenizer.unk_token_id]
    if unknown:
        raise ValueError(f"classifier_from_token {unknown} are not single tokens of the model's vocabulary")
    hf_config.classifier_from_token_ids = ids


def _classifier_tokens(cfg: Any) -> list[str] | None:
    tokens = getattr(cfg, "classifier_from_token", None)
    if tokens is None and getattr(cfg, "is_original_qwen3_reranker", False):
        tokens = ["no", "yes"]
    return list(tokens) if tokens is not None else None


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


class RMSNorm(nn.Module):
    """``w * x / sqrt(mean(x^2) + eps)`` over the last dim, in fp32 (as transformers' LlamaRMSNorm)."""

    def __init__(self, weight: torch.Tensor, eps: float) -> None:
        super().__init__()
        self.weight, self.eps = nn.Parameter(weight.float(), requires_grad=False), eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.float()
        return self.weight * (x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps))


def rope_frequencies(cfg: Any, head_dim: int) -> tuple[torch.Tensor, float]:
    """``(inv_freq (head_dim/2,), attention_scaling)`` of the config's RoPE."""
    params = dict(getattr(cfg, "rope_parameters", None) or getattr(cfg, "rope_scaling", None) or {})
    rope_type = params.get("rope_type", params.get("type", "default"))
    if params.get("partial_rotary_factor", getattr(cfg, "partial_rotary_factor", 1.0)) != 1.0:
        raise ValueError("partial_rotary_factor != 1 is not supported by the native Llama/Qwen decoder")
    if rope_type == "default":
        theta = float(params.get("rope_theta", getattr(cfg, "rope_theta", 10000.0)))
        return 1.0 / (theta ** (torch.arange(0, head_dim, 2, dtype=torch.int64).float() / head_dim)), 1.0
    if rope_type in ("linear", "llama3", "yarn", "dynamic"):
        from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS

        inv_freq, scaling = ROPE_INIT_FUNCTIONS[rope_type](cfg, "cpu")
        return inv_freq.float(), float(scaling)
    raise ValueError(f"rope_type={rope_type!r} is not supported; supported: default, linear, llama3, yarn, dynamic")


class Rotary(nn.Module):
    """RoPE in transformers' half-split layout: ``x * cos + rotate_half(x) * sin``."""

    def __init__(self, cfg: Any, head_dim: int, device: torch.device | str = "cpu") -> None:
        super().__init__()
        inv_freq, self.scaling = rope_frequencies(cfg, head_dim)
        self.register_buffer("inv_freq", inv_freq.to(device), persistent=False)

    def cos_sin(self, positions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(N,)`` positions -> cos, sin of shape ``(N, 1, head_dim)`` in fp32, shared by every layer."""
        freqs = positions[:, None].float() * self.inv_freq[None, :]  # (N, D/2)
        emb = torch.cat((freqs, freqs), dim=-1)[:, None, :]
        return emb.cos() * self.scaling, emb.sin() * self.scaling

    @staticmethod
    def apply(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        """``(N, H, D)`` -> rotated ``(N, H, D)`` in fp32."""
        x = x.float()
        x1, x2 = x.chunk(2, dim=-1)
        return x * cos + torch.cat((-x2, x1), dim=-1) * sin


class DecoderLayer(nn.Module):
    """Pre-norm layer: ``x += o(causal_attn(x_norm)); x += down(silu(gate) * up)``."""

    def __init__(self, cfg: Any, sd: dict[str, torch.Tensor], p: str, family: Family, dtype: torch.dtype,
                 kernels: str) -> None:
        super().__init__()
        self.num_heads, self.num_kv_heads, self.head_dim = _heads(cfg)
        self.dtype = dtype
        a = f"{p}self_attn."
        qkv_w = torch.cat([take(sd, f"{a}{n}_proj.weight") for n in "qkv"])  # ((H + 2*Hkv) * D, C)
        qkv_b = torch.cat([take(sd, f"{a}{n}_proj.bias") for n in "qkv"]) if family.qkv_bias else None
        self.qkv = FastLinear(qkv_w, qkv_b, None, dtype, kernels, keep_dtype=True)
        self.o_proj = FastLinear(take(sd, f"{a}o_proj.weight"), take(sd, f"{a}o_proj.bias") if family.o_bias else None,
                                 None, dtype, kernels)
        self.q_norm = self.k_norm = None
        if family.qk_norm:  # per head, over head_dim
            self.q_norm = RMSNorm(take(sd, f"{a}q_norm.weight"), cfg.rms_norm_eps)
            self.k_norm = RMSNorm(take(sd, f"{a}k_norm.weight"), cfg.rms_norm_eps)
        self.input_norm = RMSNorm(take(sd, f"{p}input_layernorm.weight"), cfg.rms_norm_eps)
        self.post_norm = RMSNorm(take(sd, f"{p}post_attention_layernorm.weight"), cfg.rms_norm_eps)
        m = f"{p}mlp."
        mlp_bias = bool(getattr(cfg, "mlp_bias", False))
        gate_up_w = torch.cat([take(sd, f"{m}gate_proj.weight"), take(sd, f"{m}up_proj.weight")])  # (2I, C)
        gate_up_b = torch.cat([take(sd, f"{m}gate_proj.bias"), take(sd, f"{m}up_proj.bias")]) if mlp_bias else None
        self.gate_up = FastLinear(gate_up_w, gate_up_b, None, dtype, kernels, keep_dtype=True)
        self.down = FastLinear(take(sd, f"{m}down_proj.weight"), take(sd, f"{m}down_proj.bias") if mlp_bias else None,
                               None, dtype, kernels)

    def attention(self, x: torch.Tensor, batch: PackedBatch, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        """``(N, C)`` normed states -> ``(N, H * D)`` causal attention output per sequence."""
        N, H, Hkv, D = x.shape[0], self.num_heads, self.num_kv_heads, self.head_dim
        q, k, v = self.qkv(x).split([H * D, Hkv * D, Hkv * D], dim=-1)
        q, k, v = q.view(N, H, D), k.view(N, Hkv, D), v.view(N, Hkv, D)
        if self.q_norm is not None:
            q, k = self.q_norm(q), self.k_norm(k)
        q, k = Rotary.apply(q, cos, sin).to(self.dtype), Rotary.apply(k, cos, sin).to(self.dtype)
        if Hkv != H:  # grouped-query attention: q head j reads kv head j // (H / Hkv), as transformers' repeat_kv
            k, v = k.repeat_interleave(H // Hkv, dim=1), v.repeat_interleave(H // Hkv, dim=1)
        qkv = torch.cat([q.reshape(N, H * D), k.reshape(N, H * D), v.reshape(N, H * D)], dim=-1)  # (N, 3 * H * D)
        return packed_attention(qkv, batch.attention_plan, H, causal=True)

    def forward(self, x: torch.Tensor, batch: PackedBatch, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        x = x + self.o_proj(self.attention(self.input_norm(x), batch, cos, sin))
        gate, up = self.gate_up(self.post_norm(x)).chunk(2, dim=-1)  # (N, I) each
        return x + self.down(F.silu(gate) * up)


def _heads(cfg: Any) -> tuple[int, int, int]:
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


class Decoder(nn.Module):
    """Embeddings, layers, final norm: the last hidden state of every token, ``(N, C)`` in fp32."""

    def __init__(self, cfg: Any, sd: dict[str, torch.Tensor], family: Family, dtype: torch.dtype = torch.float32,
                 kernels: str = "auto") -> None:
        super().__init__()
        act = getattr(cfg, "hidden_act", "silu")
        if act != "silu":
            raise ValueError(f"hidden_act={act!r} is not supported by the native Llama/Qwen decoder (silu only)")
        sd = strip_prefix(sd, ("model.",))
        # kept in the checkpoint's dtype: rows are upcast on lookup, which is exact
        self.embed = nn.Parameter(take(sd, "embed_tokens.weight"), requires_grad=False)  # (V, C)
        self.layers = nn.ModuleList(
            DecoderLayer(cfg, sd, f"layers.{i}.", family, dtype, kernels) for i in range(cfg.num_hidden_layers)
        )
        self.norm = RMSNorm(take(sd, "norm.weight"), cfg.rms_norm_eps)
        self.rotary = Rotary(cfg, _heads(cfg)[2], self.embed.device)
        self.sliding_window = _sliding_window(cfg)
        # old Llama checkpoints store RoPE buffers; task heads take their tensors from the rest
        self.leftover = {k: v for k, v in sd.items() if not k.endswith("rotary_emb.inv_freq")}

    def forward(self, batch: PackedBatch) -> torch.Tensor:
        if self.sliding_window is not None and max(batch.lengths) > self.sliding_window:
            raise ValueError(f"A sequence of {max(batch.lengths)} tokens exceeds the sliding window "
                             f"({self.sliding_window}), which the native decoder does not implement")
        cos, sin = self.rotary.cos_sin(batch.positions)
        x = self.embed[batch.input_ids].float()  # (N, C)
        for layer in self.layers:
            x = layer(x, batch, cos, sin)
        return self.norm(x)


# --- served models ------------------------------------------------------------------------------


class _DecoderModel(nn.Module):
    """Shared constructor: the decoder of ``family`` plus whatever heads a subclass takes."""

    family: str
    default_pooling = "LAST"
    supported_tasks: tuple[str, ...] = ()
    is_generative = False

    def __init__(self, cfg: Any, sd: dict[str, torch.Tensor], dtype: torch.dtype = torch.float32,
                 kernels: str = "auto") -> None:
        super().__init__()
        self.config = cfg
        self.model = Decoder(cfg, sd, Family.of(self.family, cfg), dtype, kernels)
        self.build_heads(self.model.leftover, dtype, kernels)
        if self.model.leftover:
            raise KeyError(f"Unexpected tensors in a {type(self).__name__} checkpoint: {sorted(self.model.leftover)[:8]}")
        del self.model.leftover

    def build_heads(self, rest: dict[str, torch.Tensor], dtype: torch.dtype, kernels: str) -> None:
        """Take the head's tensors out of ``rest`` (what the decoder did not use)."""

    @property
    def hidden_size(self) -> int:
        return self.config.hidden_size

    @property
    def max_model_len(self) -> int | None:
        """The sliding window, when there are sliding layers: the native decoder runs only within it, so
        longer inputs are truncated or refused when the request is admitted, never inside a shared batch."""
        window = self.model.sliding_window
        return min(window, getattr(self.config, "max_position_embeddings", window)) if window else None

    def forward(self, batch: PackedBatch) -> torch.Tensor:
        return self.model(batch)


class _ForEmbedding(_DecoderModel):
    """A base ``*Model`` checkpoint served for ``embed`` (LAST token) and ``token_embed``."""

    supported_tasks = ("embed", "token_embed")


class _CausalLMForEmbedding(_ForEmbedding):
    """A generative ``*ForCausalLM`` checkpoint embedding with its hidden states; ``lm_head`` is unused."""

    is_generative = True

    def build_heads(self, rest, dtype, kernels):
        rest.pop("lm_head.weight", None)


class _ForSequenceClassification(_DecoderModel):
    """``score`` (linear, no bias) on the LAST token; or, with ``classifier_from_token``, rows of ``lm_head``.

    Two tokens ``[false, true]`` give one logit ``(lm_head[true] - lm_head[false]) . h`` (vLLM's
    ``from_2_way_softmax``: a sigmoid of it is the softmax probability of ``true``); any other
    number gives one logit per token (``no_post_processing``).
    """

    supported_tasks = ("classify", "score")

    def build_heads(self, rest, dtype, kernels):
        tokens = _classifier_tokens(self.config)
        if tokens is None:
            weight = take(rest, "score.weight")  # (num_labels, C)
            self.num_labels, self.id2label = weight.shape[0], id2label(self.config, weight.shape[0])
        else:
            ids = getattr(self.config, "classifier_from_token_ids", None)
            if ids is None or len(ids) != len(tokens):
                raise ValueError(
                    f"classifier_from_token={tokens} needs the token ids in config.classifier_from_token_ids "
                    "(set by poolkit.builtin_models.llama.resolve_classifier_from_token, or in hf_overrides)")
            lm_head = rest.pop("lm_head.weight", None)
            if lm_head is None:
                if not getattr(self.config, "tie_word_embeddings", False):
                    take(rest, "lm_head.weight")  # raises, naming the key
                lm_head = self.model.embed
            rows = lm_head[torch.tensor(ids, device=lm_head.device)].float()  # (len(ids), C)
            if len(rows) == 2 and getattr(self.config, "method", "from_2_way_softmax") == "from_2_way_softmax":
                weight = rows[1:] - rows[:1]  # (1, C): true minus false
                self.num_labels, self.id2label = 1, {0: tokens[1]}
            else:
                weight = rows
                self.num_labels, self.id2label = len(tokens), dict(enumerate(tokens))
        self.score = FastLinear(weight, None, None, dtype, kernels)

    def classify(self, pooled: torch.Tensor) -> torch.Tensor:
        """``(B, C)`` last-token states -> ``(B, num_labels)`` logits."""
        return self.score(pooled)

    @classmethod
    def prepare_config(cls, hf_config: Any, tokenizer: Any) -> None:
        """Called by the Engine with the tokenizer before the model is built: resolve reranker token ids."""
        resolve_classifier_from_token(hf_config, tokenizer)

    def format_score_pair(self, query: str, doc: str) -> str | None:
        """Qwen3-Reranker's documented template for a (query, document) pair; None for plain pair input."""
        if not getattr(self.config, "is_original_qwen3_reranker", False):
            return None
        return format_qwen3_reranker_pair(query, doc, getattr(self.config, "reranker_instruction", None))


class LlamaForEmbedding(_ForEmbedding):
    """``LlamaModel`` checkpoints."""

    family = "llama"


class Qwen2ForEmbedding(_ForEmbedding):
    """``Qwen2Model`` checkpoints (gte-Qwen2 embedders...)."""

    family = "qwen2"


class Qwen3ForEmbedding(_ForEmbedding):
    """``Qwen3Model`` checkpoints (Qwen3-Embedding)."""

    family = "qwen3"


class LlamaCausalLMForEmbedding(_CausalLMForEmbedding):
    """``LlamaForCausalLM`` checkpoints, embedding."""

    family = "llama"


class Qwen2CausalLMForEmbedding(_CausalLMForEmbedding):
    """``Qwen2ForCausalLM`` checkpoints, embedding."""

    family = "qwen2"


class Qwen3CausalLMForEmbedding(_CausalLMForEmbedding):
    """``Qwen3ForCausalLM`` checkpoints, embedding."""

    family = "qwen3"


class LlamaForSequenceClassification(_ForSequenceClassification):
    """``LlamaForSequenceClassification`` checkpoints (reward models such as Skywork-Reward-Llama too)."""

    family = "llama"


class Qwen2ForSequenceClassification(_ForSequenceClassification):
    """``Qwen2ForSequenceClassification`` checkpoints."""

    family = "qwen2"


class Qwen3ForSequenceClassification(_ForSequenceClassification):
    """``Qwen3ForSequenceClassification`` checkpoints, and Qwen3-Reranker through ``classifier_from_token``."""

    family = "qwen3"


class Qwen2ForRewardModel(_DecoderModel):
    """Qwen2.5-Math-RM style outcome reward model: ``score`` = Linear -> ReLU -> Linear on every token.

    transformers ships no class for it (the checkpoints use remote code); the head's keys are
    ``score.0.*`` and ``score.2.*``. Served for ``token_classify`` (``Engine.reward``) with raw
    rewards; vLLM reads the last token's.
    """

    family = "qwen2"
    default_pooling = "ALL"
    supported_tasks = ("token_classify",)
    default_use_activation = False

    def build_heads(self, rest, dtype, kernels):
        self.score_in = FastLinear(take(rest, "score.0.weight"), take(rest, "score.0.bias"), "relu")
        self.score_out = FastLinear(take(rest, "score.2.weight"), take(rest, "score.2.bias"))
        self.num_labels = self.score_out.out_features
        self.id2label = id2label(self.config, self.num_labels)
        rest.pop("lm_head.weight", None)

    def classify_tokens(self, hidden: torch.Tensor) -> torch.Tensor:
        """``(N, C)`` -> ``(N, num_labels)`` rewards."""
        return self.score_out(self.score_in(hidden))


class Qwen2ForProcessRewardModel(Qwen2ForRewardModel):
    """Qwen2.5-Math-PRM: the same head with 2 labels, read at step-tag tokens (``pooling_type`` STEP), softmax."""

    default_pooling = "STEP"
    default_use_activation = True
