"""``Int8Linear``: the opt-in int8 linear (``Engine(quantization="int8")``), oneDNN's u8 x s8 matmul on CPU.

Weights are quantized once, symmetrically per output channel (``W ~ s_w[o] * W_q[o, :]``), after
SmoothQuant's migration of activation outliers into them (:meth:`Int8Linear.finalize`);
activations dynamically and asymmetrically per token (``x ~ s[n] * x_u[n, :] - o[n]``, from each
row's own minimum and maximum), so one outlier token does not coarsen the others and a text's
vector does not depend on its batch. The matmul is oneDNN's int8 linear
(``onednn.qlinear_prepack`` / ``onednn.qlinear_pointwise``, the kernels PyTorch's x86 quantization
lowers to: VNNI / AMX-int8), which applies ``s_w``; the per-token scale and zero point, the bias and
the activation are one epilogue, since the kernel takes only one activation scale per tensor.

Quantizing a row and the epilogue are memory-bound passes that eager torch would split into five;
they are compiled with ``torch.compile`` (inductor's C++ backend) when it works here, else they run
eagerly (same numbers, slower). ``POOLKIT_INT8_COMPILE=0`` forces eager.
"""

from __future__ import annotations

import functools
import logging
import os
import threading
import time
import warnings
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from poolkit.layers.linear import _plain_act

logger = logging.getLogger("poolkit.engine")  # the calibration's one line, as the Engine logged it

QUANTIZATIONS = ("int8",)
ALPHAS = (0.3, 0.4, 0.5, 0.6, 0.7)  # SmoothQuant migration strengths a layer chooses from
SAMPLE_ROWS = 1024  # calibration rows kept per layer to choose it


def int8_available() -> str | None:
    """None when oneDNN's int8 linear runs here, else why not (for the error a user sees)."""
    ops = getattr(torch.ops, "onednn", None)
    if not torch.backends.mkldnn.is_available() or ops is None or not hasattr(ops, "qlinear_pointwise"):
        return "this torch build has no oneDNN int8 linear (onednn.qlinear_pointwise)"
    return None


def check_quantization(quantization: str, model_cls: type, architecture: str, device: torch.device) -> None:
    """ValueError naming what is wrong with ``Engine(quantization=...)`` for this model here, else None."""
    if quantization not in QUANTIZATIONS:
        raise ValueError(f"quantization={quantization!r}; choose one of {list(QUANTIZATIONS)} or None")
    supported = getattr(model_cls, "supported_quantizations", ())
    if quantization not in supported:
        raise ValueError(f"quantization={quantization!r} is not supported by {architecture}: it is supported by "
                         "the BERT and RoBERTa embedding models (BertModel, RobertaModel, XLMRobertaModel; an "
                         "architecture declares it in supported_quantizations); serve this model with "
                         "dtype='bfloat16' instead")
    if device.type != "cpu":
        raise ValueError(f"quantization={quantization!r} runs on CPU (oneDNN int8); on {device} use dtype='bfloat16'")
    why = int8_available()
    if why is not None:
        raise ValueError(f"quantization={quantization!r}: {why}")


@functools.cache
def activation_levels() -> int:
    """The largest uint8 activation code: 255 where the CPU has VNNI or AMX int8 dot products; 127 without
    them. oneDNN's AVX2/AVX-512 fallback multiplies uint8 x int8 pairs into *saturating* int16 sums
    (vpmaddubsw: 255 * 127 * 2 > 32767), which silently clips large products; 7-bit activations cannot
    overflow (FBGEMM's ``reduce_range`` for the same reason)."""
    cpu = torch.cpu
    dot_products = getattr(cpu, "_is_vnni_supported", lambda: False)() or \
        getattr(cpu, "_is_amx_tile_supported", lambda: False)()
    return 255 if dot_products else 127


def quantize_rows(x: torch.Tensor, inv_m: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``x (N, K)`` smoothed (``x * inv_m``) -> uint8 ``x_u`` and fp32 per-row scale ``s`` and offset
    ``o = s * zero_point`` (``(N, 1)`` each) with ``x * inv_m ~ s * x_u - o``: asymmetric, so a row
    whose values are mostly on one side of zero (GELU's outputs) keeps all its levels
    (:func:`activation_levels`)."""
    levels = activation_levels()
    x = x.float() * inv_m
    lo = x.amin(dim=1, keepdim=True).clamp(max=0.0)
    hi = x.amax(dim=1, keepdim=True).clamp(min=0.0)
    s = (hi - lo).clamp_min(1e-12) / levels
    zero = torch.round(-lo / s)
    return (torch.round(x / s) + zero).clamp_(0, levels).to(torch.uint8), s, s * zero


def epilogue(y: torch.Tensor, s: torch.Tensor, o: torch.Tensor, w_sum: torch.Tensor, bias: torch.Tensor | None,
             act: str | None, dtype: torch.dtype) -> torch.Tensor:
    """``act(y * s - o * w_sum + bias)`` in fp32, as ``dtype``: what the kernel cannot apply itself, the
    per-token scale ``s`` and the zero point's share ``o (N, 1) * w_sum (M,)`` (``w_sum``: each output's
    dequantized weight row summed)."""
    y = y.float() * s - o * w_sum
    if bias is not None:
        y = y + bias
    return _plain_act(y, act).to(dtype)


class _Compiled:
    """``fn`` through ``torch.compile`` (dynamic shapes), built on first call (importing inductor takes
    seconds: only an int8 model pays it), falling back to ``fn`` itself, with a warning, the first time
    compiling or running the compiled code fails (no C++ compiler, an inductor bug)."""

    def __init__(self, fn: Callable) -> None:
        self.fn = fn
        self.compiled: Callable | None = None
        self.enabled = os.environ.get("POOLKIT_INT8_COMPILE", "1") != "0"
        self.lock = threading.Lock()

    def _give_up(self, exc: Exception) -> None:
        warnings.warn(f"poolkit: torch.compile unavailable for the int8 kernels ({type(exc).__name__}: {exc}); "
                      "running them eagerly (slower)", RuntimeWarning, stacklevel=3)
        self.enabled = False

    def __call__(self, *args):
        if not self.enabled:
            return self.fn(*args)
        try:
            with self.lock:  # dynamo's compile is not thread-safe; the compiled call is cheap to serialize
                if self.compiled is None:
                    self.compiled = torch.compile(self.fn, dynamic=True)
                return self.compiled(*args)
        except Exception as exc:  # noqa: BLE001 - any failure means: run eagerly
            self._give_up(exc)
            return self.fn(*args)


_quantize_rows = _Compiled(quantize_rows)
_epilogue = _Compiled(epilogue)


class Int8Linear(nn.Module):
    """``y = act(x @ W.T + b)`` with int8 weights (per output channel) and uint8 activations (per token).

    Built in two steps. Until :meth:`finalize` it runs in fp32 and records each input channel's largest
    absolute value (:func:`calibrate` runs the calibration texts through the model); then, SmoothQuant's
    migration (Xiao et al., 2023): input channel ``j`` is divided by ``m_j = amax_x_j**alpha /
    amax_w_j**(1 - alpha)`` and weight column ``j`` multiplied by it, which leaves ``x @ W.T`` unchanged
    but flattens the few outlier channels of transformer activations that would otherwise set every
    token's scale, and the weights are quantized and packed. The division is part of the fused
    quantize pass, so it costs nothing at run time.

    ``out_dtype``: the result's dtype (bfloat16 for outputs that feed attention or another linear
    directly, float32 otherwise), like :class:`poolkit.layers.FastLinear`'s ``keep_dtype``.
    """

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor | None, act: str | None = None,
                 out_dtype: torch.dtype = torch.float32) -> None:
        super().__init__()
        why = int8_available()
        if why is not None:
            raise RuntimeError(f"quantization='int8': {why}")
        if weight.device.type != "cpu":
            raise ValueError("quantization='int8' runs on CPU (oneDNN); on a GPU use dtype='bfloat16'")
        self.act, self.out_dtype = act, out_dtype
        self.out_features, self.in_features = weight.shape
        self.register_buffer("weight", weight.detach().float().contiguous(), persistent=False)
        self.register_buffer("bias", None if bias is None else bias.detach().float().contiguous(), persistent=False)
        self.register_buffer("x_absmax", torch.zeros(self.in_features), persistent=False)
        self.samples: list[torch.Tensor] = []  # calibration input rows, for the choice of alpha
        self.packed: torch.Tensor | None = None

    def _smoothed(self, alpha: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(m, per-channel weight scale, int8 weight) for migration strength ``alpha``."""
        w = self.weight
        if bool((self.x_absmax > 0).any()):
            w_absmax = w.abs().amax(dim=0).clamp_min(1e-5)  # per input channel
            m = (self.x_absmax.clamp_min(1e-5) ** alpha / w_absmax ** (1 - alpha)).clamp(1e-2, 1e2)
        else:
            m = torch.ones(self.in_features)
        w = w * m[None, :]
        w_scale = w.abs().amax(dim=1).clamp_min(1e-12) / 127.0
        return m, w_scale, torch.round(w / w_scale[:, None]).clamp_(-127, 127).to(torch.int8)

    def _error(self, alpha: float, x: torch.Tensor, want: torch.Tensor) -> float:
        m, w_scale, w_q = self._smoothed(alpha)
        x_u, s, o = quantize_rows(x, 1.0 / m)
        got = (x_u.float() * s - o) @ (w_q.float() * w_scale[:, None]).T
        return float(((got - want) ** 2).sum())

    def finalize(self, alpha: float | None = None, alphas: tuple[float, ...] = ALPHAS) -> None:
        """Smooth with the recorded input ranges (none recorded: no smoothing), quantize and pack the weight.

        ``alpha`` None: of ``alphas``, the one whose quantized outputs on the recorded calibration rows are
        closest to the fp32 outputs (SmoothQuant's per-layer search); 0.5 when no rows were recorded."""
        if alpha is None:
            x = torch.cat(self.samples) if self.samples else None
            if x is None:
                alpha = 0.5
            else:
                want = x @ self.weight.T
                alpha = min(alphas, key=lambda a: self._error(a, x, want))
        self.alpha = alpha
        m, w_scale, w_q = self._smoothed(alpha)
        self.samples = []
        self.inv_m = (1.0 / m).contiguous()
        self.w_scale = w_scale.contiguous()
        self.w_zero = torch.zeros(self.out_features, dtype=torch.int64)
        self.w_sum = (w_q.float().sum(dim=1) * w_scale).contiguous()
        self.packed = torch.ops.onednn.qlinear_prepack(w_q, None)
        self.weight = None  # the packed int8 copy is all the forward pass reads
        self.x_absmax = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.packed is None:  # calibrating: fp32, recording the input's ranges
            xf = x.float()
            torch.maximum(self.x_absmax, xf.abs().amax(dim=0), out=self.x_absmax)
            if sum(len(r) for r in self.samples) < SAMPLE_ROWS:
                self.samples.append(xf[:SAMPLE_ROWS].clone())
            return _plain_act(F.linear(xf, self.weight, self.bias), self.act).to(self.out_dtype)
        x_u, s, o = _quantize_rows(x, self.inv_m)
        # the kernel's output stays fp32: the zero point's share is subtracted afterwards, and that difference of
        # two large terms would lose digits in bf16 (all four BERT linears int8: top-10 agreement 0.972 vs 0.973)
        y = torch.ops.onednn.qlinear_pointwise(x_u, 1.0, 0, self.packed, self.w_scale, self.w_zero, None,
                                               1.0, 0, torch.float32, "none", [], "")
        return _epilogue(y, s, o, self.w_sum, self.bias, self.act, self.out_dtype)

    def extra_repr(self) -> str:
        state = "int8" if self.packed is not None else "calibrating"
        return f"{self.in_features}->{self.out_features}, act={self.act}, {state} (per-channel w, per-token asymmetric x)"


def calibrate(model: nn.Module, run: Callable[[], object], alpha: float | None = None) -> int:
    """Record the input ranges of ``model``'s :class:`Int8Linear` layers over ``run()`` (forward passes on
    calibration inputs), then finalize them (``alpha`` None: each layer's best); returns how many were quantized."""
    layers = [m for m in model.modules() if isinstance(m, Int8Linear) and m.packed is None]
    if layers:
        with torch.inference_mode():
            run()
        for layer in layers:
            layer.finalize(alpha)
    return len(layers)


def calibrate_model(model: nn.Module, tokenizer: Any, max_model_len: int, device: Any) -> None:
    """``quantization="int8"`` at load: :func:`calibrate` over :data:`poolkit.quantize.CALIBRATION_TEXTS` (fixed,
    so the quantized model is the same every load), then one pass that compiles the int8 kernels now, not in
    the first request."""
    from poolkit.quantize import CALIBRATION_TEXTS

    ids = tokenizer(CALIBRATION_TEXTS, truncation=True, max_length=max_model_len)["input_ids"]
    n = calibrate(model, functools.partial(_forward, model, ids, device))
    started = time.perf_counter()
    _forward(model, ids[:4], device)
    logger.info("int8: %d linears quantized, activation ranges from %d calibration texts; kernels ready in %.1f s",
                n, len(ids), time.perf_counter() - started)


def _forward(model: nn.Module, ids: list[list[int]], device: Any) -> None:
    from poolkit.batch import PackedBatch

    with torch.inference_mode():
        model(PackedBatch.from_token_lists(ids, device=device))
