"""Attention on the bench corpus's own batches: poolkit's SDPA path against the alternatives tried.

    python bench/attention_variants.py                 # bf16, 800 texts, ~1 minute on 2 cores
    python bench/attention_variants.py --flex          # also compiled flex_attention on three shapes

Runs all-MiniLM-L6-v2 at bfloat16 over the corpus once, keeping the first layer's fused q/k/v and
attention plan of every batch, then times each way of computing that attention over all of them
(``--rounds`` passes, best round) and reports its largest deviation from fp32 SDPA on the same inputs:

* ``poolkit``: ``packed_attention`` as the engine runs it (SDPA; short sequences share rows at bf16)
* ``one row each``: the same with ``shared_rows=False``
* ``fp32 SDPA``: q/k/v cast to fp32, SDPA, cast back
* ``matmul+softmax``: q/k/v made contiguous, ``baddbmm`` with the scale and an additive mask, softmax,
  ``bmm`` (the scores materialized in bf16)

``--flex``: ``torch.compile(flex_attention)`` against SDPA on three dense shapes (compiling takes ~5 s
a shape). docs/performance.md cites this script's tables.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402


def matmul_softmax(x: torch.Tensor, H: int, Hkv: int, mask: torch.Tensor | None, is_causal: bool) -> torch.Tensor:
    """``poolkit.layers.attention._sdpa``'s contract (full attention) with explicit matmuls and softmax."""
    assert Hkv == H and not is_causal, "the corpus model is BERT: full attention, no grouped kv heads"
    B, T = x.shape[:2]
    q, k, v = x.view(B, T, 3, H, -1).permute(2, 0, 3, 1, 4).reshape(3, B * H, T, -1)
    scale = q.shape[-1] ** -0.5
    if mask is None:
        scores = torch.bmm(q * scale, k.transpose(1, 2))
    else:  # (B, 1, 1 or T, T) bool -> additive, one copy per head
        add = torch.zeros(mask.shape, dtype=x.dtype).masked_fill_(~mask, float("-inf"))
        add = add.expand(B, H, *mask.shape[2:]).reshape(B * H, *mask.shape[2:])
        scores = torch.baddbmm(add, q, k.transpose(1, 2), alpha=scale)
    return torch.bmm(torch.softmax(scores, -1), v).view(B, H, T, -1)


def capture(texts: list[str]) -> tuple[list[tuple[torch.Tensor, object]], int]:
    """The first BERT layer's (qkv, plan) of every batch of a bf16 pass over ``texts``, and num_heads."""
    import poolkit.builtin_models.bert as bert
    from poolkit import Engine, testing

    engine = Engine(str(testing.minilm_path()), dtype="bfloat16")
    first = next(m for m in engine.model.modules() if isinstance(m, bert.BertLayer))
    kept: list[tuple[torch.Tensor, object]] = []
    run_qkv = first.qkv.forward

    def keep(x):
        out = run_qkv(x)
        kept.append((out.clone(), None))
        return out

    attention = bert.packed_attention

    def keep_plan(qkv, plan, *args, **kwargs):
        if kept and kept[-1][1] is None and kept[-1][0].shape == qkv.shape:
            kept[-1] = (kept[-1][0], plan)
        return attention(qkv, plan, *args, **kwargs)

    first.qkv.forward, bert.packed_attention = keep, keep_plan
    try:
        engine.embed(texts)
    finally:
        bert.packed_attention = attention
    return [(q, p) for q, p in kept if p is not None], first.num_heads


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--texts", type=int, default=800)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--flex", action="store_true", help="also time compiled flex_attention on three shapes")
    args = ap.parse_args()
    import poolkit.layers.attention as attention
    from bench.corpus import build_corpus

    batches, H = capture([t.text for t in build_corpus(args.texts)])
    tokens = sum(q.shape[0] for q, _ in batches)
    sdpa = attention._sdpa

    def poolkit_path(qkv, plan):
        return attention.packed_attention(qkv, plan, H)

    def one_row(qkv, plan):
        return attention.packed_attention(qkv, plan, H, shared_rows=False)

    def fp32(qkv, plan):
        return attention.packed_attention(qkv.float(), plan, H, shared_rows=False).to(qkv.dtype)

    def explicit(qkv, plan):
        attention._sdpa = matmul_softmax
        try:
            return attention.packed_attention(qkv, plan, H, shared_rows=False)
        finally:
            attention._sdpa = sdpa

    variants = {"poolkit (SDPA)": poolkit_path, "one row each (SDPA)": one_row, "fp32 SDPA": fp32,
                "matmul+softmax": explicit}
    with torch.inference_mode():
        refs = [attention.packed_attention(q.float(), p, H, shared_rows=False) for q, p in batches]
        best = {name: float("inf") for name in variants}
        for _ in range(args.rounds):
            for name, fn in variants.items():  # alternating, so load spikes hit every variant alike
                start = time.perf_counter()
                for q, p in batches:
                    fn(q, p)
                best[name] = min(best[name], time.perf_counter() - start)
        print(f"attention of one layer over {len(batches)} batches ({tokens} tokens), bf16, best of {args.rounds}")
        print(f"{'variant':<22} {'ms':>8} {'x poolkit':>10} {'max |diff| vs fp32':>20}")
        for name, fn in variants.items():
            err = max(float((fn(q, p).float() - r).abs().max()) for (q, p), r in zip(batches, refs))
            print(f"{name:<22} {1e3 * best[name]:8.1f} {best['poolkit (SDPA)'] / best[name]:10.2f} {err:20.4f}")
    if args.flex:
        flex_table(H)


def flex_table(H: int) -> None:
    from torch.nn.attention.flex_attention import flex_attention

    compiled = torch.compile(flex_attention, dynamic=False)
    print("\ndense B x 12 heads x T x 32, bf16, GFLOP/s   SDPA  compiled flex_attention")
    for B, T in ((16, 256), (16, 128), (38, 64)):
        q, k, v = (torch.randn(B, H, T, 32, dtype=torch.bfloat16) for _ in range(3))
        flops = 4 * B * H * T * T * 32 / 1e9
        rates = []
        for fn in (F.scaled_dot_product_attention, compiled):
            fn(q, k, v)
            start = time.perf_counter()
            for _ in range(10):
                fn(q, k, v)
            rates.append(10 * flops / (time.perf_counter() - start))
        print(f"B={B:<3} T={T:<4}                              {rates[0]:5.0f}  {rates[1]:5.0f}")


if __name__ == "__main__":
    main()
