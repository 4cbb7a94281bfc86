"""ModernBERT encoder (ModernBertModel, ModernBertForSequenceClassification), packed.

Reference: transformers/models/modernbert/modeling_modernbert.py. Differences from BERT: pre-norm
layers (layer 0 has no attention norm), no biases unless ``attention_bias`` / ``mlp_bias`` /
``norm_bias``, a GeGLU MLP (``Wi`` holds the input and gate halves), RoPE instead of position
embeddings, and alternating attention: every ``global_attn_every_n_layers``-th layer (from layer 0)
is global, the others are local, each token seeing the tokens within ``local_attention // 2`` of it.
Global and local layers use RoPE with their own theta (``global_rope_theta`` / ``local_rope_theta``,
in transformers 5.x ``rope_parameters["full_attention" | "sliding_attention"]["rope_theta"]``).

As in ``bert.py``, the tokens of all sequences are laid end to end as ``(N, C)``; attention pads
only inside the length-bucketed chunks of ``poolkit.kernels.AttentionPlan``, and local layers add a
band mask to those chunks.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from poolkit.batch import PackedBatch
from poolkit.config import id2label
from poolkit.builtin_models.bert import _ACT, LayerNorm
from poolkit.kernels import AttentionPlan, FastLinear, packed_attention
from poolkit.weights import strip_prefix, take

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
    params = (getattr(cfg, "rope_parameters", None) or {}).get(kind)
    if params is not None:
        if params.get("rope_type", "default") != "default":
            raise ValueError(f"rope_type={params['rope_type']!r} is not supported by the native ModernBERT")
        return float(params["rope_theta"])
    global_theta = getattr(cfg, "global_rope_theta", None) or 160_000.0
    if kind == GLOBAL:
        return float(global_theta)
    return float(getattr(cfg, "local_rope_theta", None) or global_theta)  # 4.x: None means the global one


def _maybe(sd: dict[str, torch.Tensor], key: str, present: bool) -> torch.Tensor | None:
    """``take`` a tensor the config says exists (a bias under ``*_bias: true``), else None."""
    return take(sd, key) if present else None


def _norm(cfg: Any, sd: dict[str, torch.Tensor], name: str) -> LayerNorm:
    """A LayerNorm whose bias is zero unless ``norm_bias``."""
    weight = take(sd, f"{name}.weight")
    bias = _maybe(sd, f"{name}.bias", cfg.norm_bias)
    return LayerNorm(weight, torch.zeros_like(weight) if bias is None else bias, cfg.norm_eps)


# --- RoPE and local attention ----------------------------------------------------------------------


class Rotary(nn.Module):
    """Rotary position embedding (rotate-half layout) with base ``theta`` over ``head_dim``."""

    def __init__(self, head_dim: int, theta: float) -> None:
        super().__init__()
        inv_freq = 1.0 / (theta ** (torch.arange(0, head_dim, 2, dtype=torch.float) / head_dim))  # as transformers
        self.register_buffer("inv_freq", inv_freq, persistent=False)

    def cos_sin(self, positions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(N,)`` positions -> cos, sin of shape ``(N, 1, D)`` in fp32."""
        freqs = positions[:, None].float() * self.inv_freq.to(positions.device)  # (N, D/2)
        emb = torch.cat((freqs, freqs), dim=-1)[:, None, :]
        return emb.cos(), emb.sin()


def _rotate_half(x: torch.Tensor) -> torch.Tensor:
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat((-x2, x1), dim=-1)


def apply_rope(qkv: torch.Tensor, num_heads: int, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate q and k of fused ``(N, 3*C)`` projections (in fp32); v is left as it is."""
    N = qkv.shape[0]
    x = qkv.view(N, 3, num_heads, -1)  # (N, 3, H, D)
    q, k = x[:, 0].float(), x[:, 1].float()
    q = q * cos + _rotate_half(q) * sin
    k = k * cos + _rotate_half(k) * sin
    return torch.stack((q.to(qkv.dtype), k.to(qkv.dtype), x[:, 2]), dim=1).view(N, -1)


def local_attention_masks(plan: AttentionPlan, window: int) -> list[torch.Tensor | None] | None:
    """Per chunk of ``plan``, the bool mask of a local layer: query i sees key j iff ``|i - j| <= window``
    and j is a real token. ``(B, 1, T, T)``, or ``(1, 1, T, T)`` for chunks without padding.

    Returns None when no sequence is longer than ``window + 1``: local attention is then global.
    """
    if max(plan.lengths, default=0) <= window + 1:
        return None
    masks: list[torch.Tensor | None] = []
    for _, _, _, _, T, key_mask in plan.chunks:
        if T <= window + 1:
            masks.append(key_mask)  # the band covers the whole chunk
            continue
        ar = torch.arange(T, device=plan.chunks[0][0].device)
        band = ((ar[:, None] - ar[None, :]).abs() <= window)[None, None]  # (1, 1, T, T)
        masks.append(band if key_mask is None else band & key_mask)
    return masks


def packed_local_attention(qkv: torch.Tensor, plan: AttentionPlan, num_heads: int,
                           masks: list[torch.Tensor | None]) -> torch.Tensor:
    """Sliding-window bidirectional attention over packed sequences, ``masks`` from :func:`local_attention_masks`.

    :param qkv: ``(N, 3*C)`` fused q, k, v of ``N`` tokens laid end to end.
    :returns: ``(N, C)``. Padded queries are computed and dropped.
    """
    N, C3 = qkv.shape
    C = C3 // 3
    D = C // num_heads
    if len(plan.chunks) == 1 and plan.chunks[0][3] == 1:  # one sequence: no gather at all
        x = qkv.view(1, N, 3, num_heads, D).permute(2, 0, 3, 1, 4)
        y = F.scaled_dot_product_attention(x[0], x[1], x[2], attn_mask=masks[0])
        return y.transpose(1, 2).reshape(N, C)
    out = torch.empty(N, C, dtype=qkv.dtype, device=qkv.device)
    for (gather, valid, rows, B, T, key_mask), mask in zip(plan.chunks, masks):
        x = qkv.index_select(0, gather).view(B, T, 3, num_heads, D).permute(2, 0, 3, 1, 4)
        y = F.scaled_dot_product_attention(x[0], x[1], x[2], attn_mask=mask)
        y = y.transpose(1, 2).reshape(B * T, C)
        out.index_copy_(0, rows, y if key_mask is None else y[valid])
    return out


# --- the model -------------------------------------------------------------------------------------


class ModernBertLayer(nn.Module):
    """Pre-LN layer: x = x + Wo(attn(norm(x))); x = x + Wo(act(input) * gate), [input|gate] = Wi(norm(x))."""

    def __init__(self, cfg: Any, sd: dict[str, torch.Tensor], i: int, kind: str, dtype: torch.dtype, kernels: str) -> None:
        super().__init__()
        p = f"layers.{i}."
        self.kind, self.num_heads = kind, cfg.num_attention_heads
        self.attn_norm = None if i == 0 else _norm(cfg, sd, f"{p}attn_norm")  # layer 0: the embedding norm
        ab, mb = cfg.attention_bias, cfg.mlp_bias
        self.qkv = FastLinear(take(sd, f"{p}attn.Wqkv.weight"), _maybe(sd, f"{p}attn.Wqkv.bias", ab), None, dtype, kernels,
                              keep_dtype=True)  # (3C, C): q, k, v rows, as packed_attention reads them
        self.attn_out = FastLinear(take(sd, f"{p}attn.Wo.weight"), _maybe(sd, f"{p}attn.Wo.bias", ab), None, dtype, kernels)
        self.mlp_norm = _norm(cfg, sd, f"{p}mlp_norm")
        act = _ACT.get(cfg.hidden_activation)
        if act is None:
            raise ValueError(f"hidden_activation={cfg.hidden_activation!r} is not supported by the native ModernBERT; "
                             f"supported: {sorted(_ACT)}")
        wi, wi_b = take(sd, f"{p}mlp.Wi.weight"), _maybe(sd, f"{p}mlp.Wi.bias", mb)  # (2I, C): input rows, then gate rows
        inner = wi.shape[0] // 2
        self.ffn_in = FastLinear(wi[:inner], None if wi_b is None else wi_b[:inner], act, dtype, kernels, keep_dtype=True)
        self.ffn_gate = FastLinear(wi[inner:], None if wi_b is None else wi_b[inner:], None, dtype, kernels, keep_dtype=True)
        self.ffn_out = FastLinear(take(sd, f"{p}mlp.Wo.weight"), _maybe(sd, f"{p}mlp.Wo.bias", mb), None, dtype, kernels)

    def forward(self, x: torch.Tensor, plan: AttentionPlan, rope: tuple[torch.Tensor, torch.Tensor],
                local_masks: list[torch.Tensor | None] | None) -> torch.Tensor:
        h = x if self.attn_norm is None else self.attn_norm(x)
        qkv = apply_rope(self.qkv(h), self.num_heads, *rope)  # (N, 3C)
        if self.kind == LOCAL and local_masks is not None:
            a = packed_local_attention(qkv, plan, self.num_heads, local_masks)
        else:
            a = packed_attention(qkv, plan, self.num_heads)
        x = x + self.attn_out(a)
        h = self.mlp_norm(x)
        return x + self.ffn_out(self.ffn_in(h) * self.ffn_gate(h))


class ModernBertModel(nn.Module):
    """The encoder: token embeddings + norm, the layers, final norm; ``(N, C)`` in fp32."""

    def __init__(self, cfg: Any, sd: dict[str, torch.Tensor], dtype: torch.dtype = torch.float32, kernels: str = "auto") -> None:
        super().__init__()
        sd = strip_prefix(sd, ("model.",))
        if cfg.hidden_size % cfg.num_attention_heads:
            raise ValueError(f"hidden_size {cfg.hidden_size} is not a multiple of num_attention_heads {cfg.num_attention_heads}")
        self.window = cfg.local_attention // 2  # each side
        self.tok = nn.Parameter(take(sd, "embeddings.tok_embeddings.weight").float())
        self.emb_norm = _norm(cfg, sd, "embeddings.norm")
        kinds = layer_types(cfg)
        self.layers = nn.ModuleList(
            ModernBertLayer(cfg, sd, i, kinds[i], dtype, kernels) for i in range(cfg.num_hidden_layers)
        )
        self.final_norm = _norm(cfg, sd, "final_norm")
        head_dim = cfg.hidden_size // cfg.num_attention_heads
        self.rope = nn.ModuleDict({kind: Rotary(head_dim, rope_theta(cfg, kind)) for kind in sorted(set(kinds))})
        self.leftover = sd  # task heads take their tensors from here

    def forward(self, batch: PackedBatch) -> torch.Tensor:
        plan = batch.attention_plan
        positions = batch.positions
        rope = {kind: r.cos_sin(positions) for kind, r in self.rope.items()}
        local_masks = local_attention_masks(plan, self.window) if LOCAL in rope else None
        x = self.emb_norm(self.tok[batch.input_ids])  # (N, C)
        for layer in self.layers:
            x = layer(x, plan, rope[layer.kind], local_masks)
        return self.final_norm(x)


class _ModernBert(nn.Module):
    """The encoder every ModernBERT architecture starts from; ``forward`` is its last hidden state."""

    def __init__(self, cfg: Any, sd: dict[str, torch.Tensor], dtype: torch.dtype = torch.float32, kernels: str = "auto") -> None:
        super().__init__()
        self.config = cfg
        self.model = ModernBertModel(cfg, sd, dtype, kernels)

    @property
    def hidden_size(self) -> int:
        return self.config.hidden_size

    def forward(self, batch: PackedBatch) -> torch.Tensor:
        return self.model(batch)


class ModernBertForEmbedding(_ModernBert):
    """ModernBertModel served for ``embed`` (pooled) and ``token_embed`` (every token)."""

    default_pooling = "CLS"  # vLLM's default for ModernBertModel; a Sentence Transformers config overrides it
    supported_tasks = ("embed", "token_embed")

    def __init__(self, cfg: Any, sd: dict[str, torch.Tensor], dtype: torch.dtype = torch.float32, kernels: str = "auto") -> None:
        super().__init__(cfg, sd, dtype, kernels)
        # an MLM head (ModernBertForMaskedLM's head./decoder.) is not used for embeddings
        unknown = [k for k in self.model.leftover if not k.startswith(("head.", "decoder."))]
        if unknown:
            raise KeyError(f"Unexpected tensors in a ModernBertModel checkpoint: {unknown[:8]}")
        del self.model.leftover


class _ModernBertWithHead(_ModernBert):
    """ModernBERT plus its prediction head (dense -> act -> norm) and a ``classifier`` linear."""

    def __init__(self, cfg: Any, sd: dict[str, torch.Tensor], dtype: torch.dtype = torch.float32, kernels: str = "auto") -> None:
        super().__init__(cfg, sd, dtype, kernels)
        rest = self.model.leftover
        act = _ACT.get(cfg.classifier_activation)
        if act is None:
            raise ValueError(f"classifier_activation={cfg.classifier_activation!r} is not supported by the native "
                             f"ModernBERT; supported: {sorted(_ACT)}")
        self.dense = FastLinear(take(rest, "head.dense.weight"), _maybe(rest, "head.dense.bias", cfg.classifier_bias),
                                act)  # the head runs in fp32
        self.norm = _norm(cfg, rest, "head.norm")
        self.classifier = FastLinear(take(rest, "classifier.weight"), take(rest, "classifier.bias"))
        if rest:
            raise KeyError(f"Unexpected tensors in a {type(self).__name__} checkpoint: {list(rest)[:8]}")
        self.num_labels = self.classifier.out_features
        self.id2label = id2label(cfg, self.num_labels)
        del self.model.leftover

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

    def __init__(self, cfg: Any, sd: dict[str, torch.Tensor], dtype: torch.dtype = torch.float32, kernels: str = "auto") -> None:
        pooling = getattr(cfg, "classifier_pooling", "cls")
        if pooling not in ("cls", "mean"):
            raise ValueError(f"classifier_pooling={pooling!r} is not supported; expected 'cls' or 'mean'")
        super().__init__(cfg, sd, dtype, kernels)
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
