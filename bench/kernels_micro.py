"""Microbenchmarks behind docs/performance.md: linear kernels and attention on the MiniLM shapes.

    python bench/kernels_micro.py            # all tables, ~1 minute on 2 cores
    python bench/kernels_micro.py --int8     # the int8 table only (compiles its passes first: ~20 s)

Linear: oneDNN prepacked (what poolkit's FastLinear uses) vs torch's default F.linear, fp32 and bf16.
Attention: CPU SDPA vs a plain matmul/softmax/matmul, fp32 and bf16, B x 12 heads x T x 32.
Shared rows: ~4,000 tokens of sequences of random lengths in a range, through poolkit's ``packed_attention``,
bf16 and fp32, one sequence per row vs short sequences sharing rows of up to 96 slots (``shared_rows=True``;
poolkit shares them at bf16 only).
Int8 (``--int8``): per linear of MiniLM's int8 layers at 4,096 tokens, poolkit's bf16 ``FastLinear`` against
``Int8Linear`` whole and its three steps (per-token quantization, oneDNN's u8 x s8 GEMM, the epilogue).
"""

from __future__ import annotations

import time

import torch
import torch.nn.functional as F


def timed(fn, n: int = 20) -> float:
    fn()
    fn()
    start = time.perf_counter()
    for _ in range(n):
        fn()
    return (time.perf_counter() - start) / n


def linear_table() -> None:
    print("linear GFLOP/s          onednn fp32  F.linear fp32  onednn bf16")
    for M in (512, 2048):
        for K, N in ((384, 1536), (1536, 384), (384, 1152)):
            x, w, b = torch.randn(M, K), torch.randn(N, K), torch.randn(N)
            packed = torch.ops.mkldnn._reorder_linear_weight(w, None)
            xb, bb = x.bfloat16(), b.bfloat16()
            packed_bf16 = torch.ops.mkldnn._reorder_linear_weight(w.bfloat16(), None)
            flops = 2 * M * K * N / 1e9
            onednn = flops / timed(lambda: torch.ops.mkldnn._linear_pointwise(x, packed, b, "none", [], ""))
            plain = flops / timed(lambda: F.linear(x, w, b))
            bf16 = flops / timed(lambda: torch.ops.mkldnn._linear_pointwise(xb, packed_bf16, bb, "none", [], ""))
            print(f"M={M:<5} {K:>4}x{N:<5}      {onednn:9.0f}  {plain:13.0f}  {bf16:11.0f}")


def manual_attention(q, k, v):
    scores = torch.matmul(q, k.transpose(-1, -2)) * q.shape[-1] ** -0.5
    return torch.matmul(torch.softmax(scores, -1), v)


def attention_table() -> None:
    print("\nattention GFLOP/s       sdpa fp32  manual fp32  sdpa bf16  manual bf16")
    for B, T in ((256, 8), (128, 16), (64, 32), (32, 64), (16, 128), (8, 256)):
        row = []
        for dtype in (torch.float32, torch.bfloat16):
            q, k, v = (torch.randn(B, 12, T, 32, dtype=dtype) for _ in range(3))
            flops = 4 * B * 12 * T * T * 32 / 1e9
            row += [flops / timed(lambda: F.scaled_dot_product_attention(q, k, v)),
                    flops / timed(lambda: manual_attention(q, k, v))]
        print(f"B={B:<4} T={T:<4}          {row[0]:7.0f}  {row[1]:11.0f}  {row[2]:9.0f}  {row[3]:11.0f}")


def shared_rows_table() -> None:
    import random

    import poolkit.layers.attention as attention

    print("\nshared rows, ~4000 tokens, ms        one per row   shared rows")
    for dtype in (torch.bfloat16, torch.float32):
        for lo, hi in ((3, 16), (8, 30), (16, 48)):
            rnd, lengths = random.Random(0), []
            while sum(lengths) < 4000:
                lengths.append(rnd.randint(lo, hi))
            qkv = torch.randn(sum(lengths), 3 * 384, dtype=dtype)
            plan = attention.AttentionPlan(lengths)
            row = [1e3 * timed(lambda: attention.packed_attention(qkv, plan, 12, shared_rows=shared), n=10)
                   for shared in (False, True)]
            name = str(dtype).removeprefix("torch.")
            print(f"{name:<9} lengths {lo}-{hi:<4}             {row[0]:9.2f}  {row[1]:12.2f}")


def int8_table() -> None:
    import poolkit.layers.quantized as quantized
    from poolkit.layers import FastLinear

    print("\nint8, M=4096, ms          bf16 FastLinear   Int8Linear  = quantize +   GEMM + epilogue")
    M = 4096
    for K, N, act in ((384, 1152, None), (384, 384, None), (384, 1536, "gelu")):
        w, b = torch.randn(N, K) * 0.05, torch.randn(N) * 0.1
        x = torch.randn(M, K)
        int8 = quantized.Int8Linear(w, b, act, torch.bfloat16)
        with torch.inference_mode():
            int8(x[:256])  # calibration rows
            int8.finalize()
            bf16 = FastLinear(w, b, act, torch.bfloat16, keep_dtype=True)
            xb = x.bfloat16()
            x_u, s, o = quantized._quantize_rows(xb, int8.inv_m)

            def gemm():
                return torch.ops.onednn.qlinear_pointwise(x_u, 1.0, 0, int8.packed, int8.w_scale, int8.w_zero, None,
                                                          1.0, 0, torch.float32, "none", [], "")
            y = gemm()
            row = [timed(lambda: bf16(xb)), timed(lambda: int8(xb)), timed(lambda: quantized._quantize_rows(xb, int8.inv_m)),
                   timed(gemm), timed(lambda: quantized._epilogue(y, s, o, int8.w_sum, int8.bias, act, torch.bfloat16))]
        name = f"{K}x{N}" + (f" {act}" if act else "")
        print(f"{name:<22} " + "  ".join(f"{1e3 * t:9.2f}" for t in row))


if __name__ == "__main__":
    import sys

    torch.manual_seed(0)
    if "--int8" in sys.argv:
        int8_table()
        sys.exit()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    linear_table()
    attention_table()
    shared_rows_table()
