"""``FastLinear``: the linear layer of every native family, prepacked for oneDNN on CPU.

On CPU, torch's default fp32 ``linear`` goes to MKL's AVX2 path; oneDNN's prepacked kernels (the
ones inductor's CPU weight freezing uses: ``mkldnn._reorder_linear_weight`` +
``mkldnn._linear_pointwise``) reach AVX-512 and AMX/bf16 and fuse GELU. They are private ops, so
every use is guarded: if they are missing or disagree with ``F.linear`` on a probe, the plain
path is used. ``POOLKIT_KERNELS=torch`` forces the plain path.
"""

from __future__ import annotations

import os
import warnings
from typing import Any

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
        """The oneDNN-packed weight if the kernel agrees with ``F.linear`` on a random probe, else None."""
        try:
            packed = torch.ops.mkldnn._reorder_linear_weight(self.weight, None)
            probe = torch.randn(3, self.in_features, dtype=self.compute_dtype)
            attr, scalars, algo = _ACTS[self.act]
            got = torch.ops.mkldnn._linear_pointwise(probe, packed, self.bias, attr, scalars, algo)
            want = _plain_act(F.linear(probe, self.weight, self.bias), self.act)
            # the probe catches a broken kernel (a wrong layout is off by the outputs' whole scale), not
            # rounding: bf16 keeps 8 significant bits, so a correct output of ~100 (randn probe, 1024
            # inputs) is itself rounded to steps of 0.5 and two correct bf16 kernels differ by ~0.25
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


def head_linear(init: Any, weight: torch.Tensor, bias: torch.Tensor | None = None,
                act: str | None = None) -> FastLinear:
    """A task head's linear, fp32 whatever ``init.dtype``, with ``init.kernels`` (``init``: the model's
    :class:`poolkit.ModelInit`, typed loosely because the layers sit below the model contract).

    Classifier and reward heads are a small share of the work and their outputs are what the user
    reads (logits, rewards), so they skip bf16; a head in the compute dtype uses ``init.linear``.
    """
    return FastLinear(weight, bias, act, torch.float32, init.kernels)
