"""Rotary position embedding (RoPE) in transformers' half-split layout, for ModernBERT and Llama/Qwen.

``x * cos + rotate_half(x) * sin`` with ``rotate_half([x1, x2]) = [-x2, x1]`` (the two halves of the
head dim), as ``apply_rotary_pos_emb`` in transformers. A token's angle is its position inside its
own sequence (``PackedBatch.positions``); cos and sin are computed once per batch and shared by
every layer.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn


ROPE_TYPES = ("default", "linear", "llama3", "yarn", "dynamic")


def rope_parameters(cfg: Any, layer_type: str | None = None, theta: float | None = None,
                    types: tuple[str, ...] = ROPE_TYPES, model: str = "poolkit's rotary embedding") -> dict[str, Any]:
    """The one reading of a config's RoPE: its parameters with ``rope_type`` and ``rope_theta`` resolved.

    ``config.rope_parameters`` (transformers 5; one dict per ``layer_type`` where the model has layer
    types) or ``rope_scaling`` / ``rope_theta`` (transformers 4). ``theta``: the base when the config
    names none (ModernBERT's older field names); ``types``: the rope types ``model`` supports.
    """
    if layer_type is None:
        params = dict(getattr(cfg, "rope_parameters", None) or getattr(cfg, "rope_scaling", None) or {})
    else:
        params = dict((getattr(cfg, "rope_parameters", None) or {}).get(layer_type) or {})
    rope_type = params.get("rope_type", params.get("type", "default"))
    if rope_type not in types:
        where = f" ({layer_type})" if layer_type else ""
        raise ValueError(f"rope_type={rope_type!r}{where} is not supported by {model}; supported: {', '.join(types)}")
    if params.get("partial_rotary_factor", getattr(cfg, "partial_rotary_factor", None) or 1.0) != 1.0:
        raise ValueError(f"partial_rotary_factor != 1 is not supported by {model}")
    if "rope_theta" not in params:
        params["rope_theta"] = theta if theta is not None else getattr(cfg, "rope_theta", 10000.0)
    params["rope_type"], params["rope_theta"] = rope_type, float(params["rope_theta"])
    return params


def rope_frequencies(cfg: Any, head_dim: int, layer_type: str | None = None,
                     model: str = "poolkit's rotary embedding") -> tuple[torch.Tensor, float]:
    """``(inv_freq (head_dim/2,), attention_scaling)`` of a config's RoPE (:func:`rope_parameters`), of one
    ``layer_type`` if given. ``default`` is computed here; ``linear``, ``llama3``, ``yarn`` and ``dynamic``
    take their frequencies from the installed transformers."""
    params = rope_parameters(cfg, layer_type, model=model)
    if params["rope_type"] == "default":
        return default_frequencies(head_dim, params["rope_theta"]), 1.0
    from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS

    extra = {"layer_type": layer_type} if layer_type is not None else {}
    inv_freq, scaling = ROPE_INIT_FUNCTIONS[params["rope_type"]](cfg, "cpu", **extra)
    return inv_freq.float(), float(scaling)


def default_frequencies(head_dim: int, theta: float) -> torch.Tensor:
    """``1 / theta^(2i / head_dim)`` for ``i < head_dim / 2``, as transformers' default RoPE."""
    return 1.0 / (theta ** (torch.arange(0, head_dim, 2, dtype=torch.int64).float() / head_dim))


class Rotary(nn.Module):
    """cos and sin of every token's angles; ``scaling`` multiplies both (YaRN's attention scaling)."""

    def __init__(self, inv_freq: torch.Tensor, scaling: float = 1.0, device: torch.device | str = "cpu") -> None:
        super().__init__()
        self.scaling = scaling
        self.register_buffer("inv_freq", inv_freq.float().to(device), persistent=False)

    @classmethod
    def from_theta(cls, head_dim: int, theta: float, device: torch.device | str = "cpu") -> Rotary:
        """Plain RoPE with base ``theta`` (ModernBERT's global and local layers)."""
        return cls(default_frequencies(head_dim, theta), 1.0, device)

    @classmethod
    def from_config(cls, cfg: Any, head_dim: int, device: torch.device | str = "cpu") -> Rotary:
        """The RoPE a decoder config describes (:func:`rope_frequencies`)."""
        return cls(*rope_frequencies(cfg, head_dim), device)

    def cos_sin(self, positions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(N,)`` positions -> cos, sin of shape ``(N, 1, head_dim)`` in fp32, shared by every layer."""
        freqs = positions[:, None].float() * self.inv_freq.to(positions.device)[None, :]  # (N, D/2)
        emb = torch.cat((freqs, freqs), dim=-1)[:, None, :]
        return emb.cos() * self.scaling, emb.sin() * self.scaling

    def extra_repr(self) -> str:
        return f"head_dim={2 * self.inv_freq.numel()}, scaling={self.scaling}"


def rotate(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """``(N, H, D)`` -> rotated ``(N, H, D)`` in fp32."""
    x = x.float()
    x1, x2 = x.chunk(2, dim=-1)
    return x * cos + torch.cat((-x2, x1), dim=-1) * sin


def rotate_qkv(qkv: torch.Tensor, num_heads: int, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate q and k of fused ``(N, 3*C)`` projections (in fp32, back to ``qkv``'s dtype); v is left as it is."""
    N = qkv.shape[0]
    x = qkv.view(N, 3, num_heads, -1)  # (N, 3, H, D)
    q, k = rotate(x[:, 0], cos, sin), rotate(x[:, 1], cos, sin)
    return torch.stack((q.to(qkv.dtype), k.to(qkv.dtype), x[:, 2]), dim=1).view(N, -1)
