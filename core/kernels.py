"""Compatibility names: the shared layers now live in :mod:`poolkit.layers`.

Plugins written against ``poolkit.kernels`` (``FastLinear``, ``AttentionPlan``, ``packed_attention``,
``attention_chunks``, ``bound_kernel_caches``) keep working; new code imports from ``poolkit.layers``.
"""

from poolkit.layers.attention import AttentionPlan, attention_chunks, packed_attention
from poolkit.layers.linear import FastLinear, bound_kernel_caches

__all__ = ["AttentionPlan", "FastLinear", "attention_chunks", "bound_kernel_caches", "packed_attention"]
