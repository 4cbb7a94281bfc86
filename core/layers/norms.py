"""The normalizations of the native families, in fp32 whatever the compute dtype (the residual stream is fp32).

- :class:`LayerNorm`: BERT, RoBERTa (with bias), ModernBERT (bias only under ``norm_bias``);
- :class:`RMSNorm`: Llama, Qwen2, Qwen3 (also Qwen3's per-head ``q_norm``/``k_norm``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import nn

if TYPE_CHECKING:
    from poolkit.model.weights import Weights


class LayerNorm(nn.Module):
    """LayerNorm over the last dim in fp32, weights taken from the checkpoint; no bias is a zero bias."""

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor | None, eps: float) -> None:
        super().__init__()
        bias = torch.zeros_like(weight) if bias is None else bias
        self.weight, self.bias, self.eps = nn.Parameter(weight.float()), nn.Parameter(bias.float()), eps

    @classmethod
    def take(cls, weights: Weights, name: str, eps: float, bias: bool = True) -> LayerNorm:
        """``{name}.weight`` and, when ``bias``, ``{name}.bias`` taken from ``weights``."""
        return cls(weights.take(f"{name}.weight"), weights.take(f"{name}.bias") if bias else None, eps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.layer_norm(x, self.weight.shape, self.weight, self.bias, self.eps)


class RMSNorm(nn.Module):
    """``w * x / sqrt(mean(x^2) + eps)`` over the last dim, in fp32 (as transformers' LlamaRMSNorm)."""

    def __init__(self, weight: torch.Tensor, eps: float) -> None:
        super().__init__()
        self.weight, self.eps = nn.Parameter(weight.float(), requires_grad=False), eps

    @classmethod
    def take(cls, weights: Weights, name: str, eps: float) -> RMSNorm:
        """``{name}.weight`` taken from ``weights``."""
        return cls(weights.take(f"{name}.weight"), eps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.float()
        return self.weight * (x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps))
