"""Layers shared by the native model families: one copy of each.

- :mod:`poolkit.layers.linear`: :class:`FastLinear` (oneDNN-prepacked on CPU, checked by a probe);
- :mod:`poolkit.layers.attention`: :class:`AttentionPlan` and :func:`packed_attention` (full,
  causal and local-window masks over packed sequences);
- :mod:`poolkit.layers.rotary`: :class:`Rotary`, the rotary position embedding;
- :mod:`poolkit.layers.norms`: :class:`LayerNorm` and :class:`RMSNorm` in fp32.
"""

from poolkit.layers.attention import AttentionPlan, attention_chunks, packed_attention
from poolkit.layers.linear import FastLinear, bound_kernel_caches, head_linear
from poolkit.layers.norms import LayerNorm, RMSNorm
from poolkit.layers.rotary import Rotary, rope_frequencies, rope_parameters, rotate, rotate_qkv

__all__ = ["AttentionPlan", "FastLinear", "LayerNorm", "RMSNorm", "Rotary", "attention_chunks", "bound_kernel_caches",
           "head_linear", "packed_attention", "rope_frequencies", "rope_parameters", "rotate", "rotate_qkv"]
