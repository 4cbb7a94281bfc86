"""Fast linear layers and packed attention shared by every native model family.

On CPU, torch's default fp32 ``linear`` goes to MKL's AVX2 path; oneDNN's prepacked kernels (the
ones inductor's CPU weight freezing uses: ``mkldnn._reorder_linear_weight`` +
``mkldnn._linear_pointwise``) reach AVX-512 and AMX/bf16 and fuse GELU. They are private ops, so
every use is guarded: if they are missing or disagree with ``F.linear`` on a probe, the plain
path is used. ``POOLKIT_KERNELS=torch`` forces the plain path.
"""

from __future__ import annotations

import os
import warnings

import torch
import torch.nn.functional as F
from torch import nn

_ACTS = {"gelu": ("gelu", [], "none"), "gelu_tanh": ("gelu", [], "tanh"), "relu": ("relu", [], ""), None: ("none", [], "")}


def bound_kernel_caches(capacity: int = 16) -> None:
    """Cap oneDNN's per-shape caches, unless the environment already sets them; call before building the Engine.

    oneDNN keeps a primitive cache and ideep an LRU cache of 1,024 entries each, keyed by input
    shape; every distinct batch size (packed token count) adds entries (a few MB each for a
    MiniLM-sized model), so a long job's memory would grow by hundreds of MB before they fill. A
    batch needs one entry per distinct weight shape, reused by every layer, so a small cap costs
    nothing measurable. The variables are read when oneDNN is first used.
    """
    os.environ.setdefault("ONEDNN_PRIMITIVE_CACHE_CAPACITY", str(capacity))
    os.environ.setdefault("LRU_CACHE_CAPACITY", str(capacity))


def _onednn_usable() -> bool:
    if os.environ.get("POOLKIT_KERNELS", "auto") == "torch":
        return False
    ops = getattr(torch.ops, "mkldnn", None)
    return bool(torch.backends.mkldnn.is_available() and ops is not None and hasattr(ops, "_linear_pointwise"))


def _plain_act(x: torch.Tensor, act: str | None) -> torch.Tensor:
    if act == "gelu":
        return F.gelu(x)
    if act == "gelu_tanh":
        return F.gelu(x, approximate="tanh")
    if act == "relu":
        return F.relu(x)
    return x


class FastLinear(nn.Module):
    """``y = act(x @ W.T + b)`` with weights prepacked for oneDNN on CPU, else plain ``F.linear``.

    ``compute_dtype`` bfloat16 runs the matmul in bf16 (the opt-in fast mode); the result is fp32
    unless ``keep_dtype``, for outputs that feed another bf16 matmul directly.
    """

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor | None, act: str | None = None,
                 compute_dtype: torch.dtype = torch.float32, kernels: str = "auto", keep_dtype: bool = False) -> None:
        super().__init__()
        self.act, self.compute_dtype, self.keep_dtype = act, compute_dtype, keep_dtype
        self.out_features, self.in_features = weight.shape
        w = weight.detach().to(compute_dtype).contiguous()
        b = None if bias is None else bias.detach().to(compute_dtype).contiguous()
        self.register_buffer("weight", w, persistent=False)
        self.register_buffer("bias", b, persistent=False)
        self.packed: torch.Tensor | None = None
        if kernels != "torch" and w.device.type == "cpu" and _onednn_usable():
            self.packed = self._try_pack()
            if self.packed is not None:
                self.weight = None  # the packed copy is all the forward pass reads

    def _try_pack(self) -> torch.Tensor | None:
        try:
            packed = torch.ops.mkldnn._reorder_linear_weight(self.weight, None)
            probe = torch.randn(3, self.in_features, dtype=self.compute_dtype)
            attr, scalars, algo = _ACTS[self.act]
            got = torch.ops.mkldnn._linear_pointwise(probe, packed, self.bias, attr, scalars, algo)
            want = _plain_act(F.linear(probe, self.weight, self.bias), self.act)
            tol = 1e-3 if self.compute_dtype == torch.float32 else 0.25
            if not torch.allclose(got.float(), want.float(), atol=tol, rtol=tol):
                raise RuntimeError("oneDNN probe disagrees with F.linear")
            return packed
        except Exception as exc:  # private op missing or broken: use the plain path
            warnings.warn(f"poolkit: oneDNN linear unavailable ({exc}); using F.linear", RuntimeWarning, stacklevel=2)
            return None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.to(self.compute_dtype)
        if self.packed is not None:
            attr, scalars, algo = _ACTS[self.act]
            y = torch.ops.mkldnn._linear_pointwise(x, self.packed, self.bias, attr, scalars, algo)
        else:
            y = _plain_act(F.linear(x, self.weight, self.bias), self.act)
        return y if self.keep_dtype else y.float()

    def extra_repr(self) -> str:
        kind = "onednn" if self.packed is not None else "torch"
        return f"{self.in_features}->{self.out_features}, act={self.act}, dtype={self.compute_dtype}, kernel={kind}"


def attention_chunks(lengths: list[int], max_waste: float = 0.15) -> list[tuple[int, int]]:
    """Split sequences (sorted longest first) into runs whose padding stays under ``max_waste``."""
    chunks, start = [], 0
    for i in range(1, len(lengths) + 1):
        if i == len(lengths) or lengths[i] < (1 - max_waste) * lengths[start]:
            chunks.append((start, i))
            start = i
    return chunks


class AttentionPlan:
    """Gather indices that turn packed tokens into padded length-bucketed chunks, built once per batch.

    Linears run on the packed ``(N, C)`` tokens with no padding; only attention pads, and only to the
    longest sequence of a run of similar lengths. Every layer of the forward pass reuses the plan.
    """

    def __init__(self, lengths: list[int], device: torch.device | str = "cpu") -> None:
        self.lengths = lengths
        self.num_tokens = sum(lengths)
        offsets = [0]
        for n in lengths:
            offsets.append(offsets[-1] + n)
        order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
        sorted_lengths = [lengths[i] for i in order]
        self.chunks = []
        for lo, hi in attention_chunks(sorted_lengths):
            idx = order[lo:hi]
            T = sorted_lengths[lo]
            starts = torch.tensor([offsets[i] for i in idx], device=device)
            lens = torch.tensor([lengths[i] for i in idx], device=device)
            ar = torch.arange(T, device=device)
            valid = ar[None, :] < lens[:, None]  # (B, T)
            gather = torch.where(valid, starts[:, None] + ar[None, :], starts[:, None])  # pads repeat token 0
            uniform = bool(valid.all())
            self.chunks.append((gather.reshape(-1), valid.reshape(-1), gather[valid], len(idx), T,
                                None if uniform else valid[:, None, None, :]))

    def __repr__(self) -> str:
        return f"AttentionPlan(seqs={len(self.lengths)}, tokens={self.num_tokens}, chunks={len(self.chunks)})"


def packed_attention(qkv: torch.Tensor, plan: AttentionPlan, num_heads: int, causal: bool = False) -> torch.Tensor:
    """Bidirectional (or causal) attention over packed sequences.

    :param qkv: ``(N, 3*C)``: the fused q, k, v projections of ``N`` tokens laid end to end.
    :returns: ``(N, C)``. Padded keys are masked; padded queries are computed and dropped.
    """
    N, C3 = qkv.shape
    C = C3 // 3
    D = C // num_heads
    if len(plan.chunks) == 1 and plan.chunks[0][5] is None and plan.chunks[0][3] == 1:
        x = qkv.view(1, N, 3, num_heads, D).permute(2, 0, 3, 1, 4)  # one sequence: no gather at all
        y = F.scaled_dot_product_attention(x[0], x[1], x[2], is_causal=causal)
        return y.transpose(1, 2).reshape(N, C)
    out = torch.empty(N, C, dtype=qkv.dtype, device=qkv.device)
    for gather, valid, rows, B, T, key_mask in plan.chunks:
        x = qkv.index_select(0, gather).view(B, T, 3, num_heads, D).permute(2, 0, 3, 1, 4)
        if key_mask is None:
            y = F.scaled_dot_product_attention(x[0], x[1], x[2], is_causal=causal)
        else:
            mask = key_mask
            if causal:
                mask = mask & torch.ones(T, T, dtype=torch.bool, device=qkv.device).tril()
            y = F.scaled_dot_product_attention(x[0], x[1], x[2], attn_mask=mask)
        y = y.transpose(1, 2).reshape(B * T, C)
        out.index_copy_(0, rows, y if key_mask is None else y[valid])
    return out
