"""Where poolkit's embedding time goes: torch.profiler over the bench corpus, top operators.

    python bench/profile_embed.py --dtype float32 --texts 500
    python bench/profile_embed.py --dtype bfloat16 --texts 500
    python bench/profile_embed.py --quantization int8 --texts 500
    python bench/profile_embed.py --dtype bfloat16 --wall     # wall time per part of the BERT layers

Also prints texts/s of one unprofiled pass over 1,000 texts and the peak RSS (VmHWM) at the end.
``--wall``: instead of the profiler, wall-clock time of each part of every BERT layer (q/k/v,
attention, attention output, LayerNorms, FFN in and out) over the 1,000 texts. The profiler's
per-operator self time leaves out what happens between operators (OpenMP fork/join, dynamo's guards
on int8's compiled passes), so the two can disagree; the wall time is what a user waits for.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dtype", default="auto", help="auto, float32 or bfloat16")
    ap.add_argument("--texts", type=int, default=500, help="texts under the profiler (default: %(default)s)")
    ap.add_argument("--quantization", default=None, help="int8 (dtype auto then means bfloat16)")
    ap.add_argument("--max-batch-tokens", type=int, default=None, help="default: the Engine's for the dtype")
    ap.add_argument("--wall", action="store_true", help="wall time per part of the BERT layers, no profiler")
    args = ap.parse_args()
    from torch.profiler import ProfilerActivity, profile

    from bench.corpus import build_corpus
    from poolkit import Engine, testing

    texts = [t.text for t in build_corpus(1000)]
    engine = Engine(str(testing.minilm_path()), dtype=args.dtype, max_batch_tokens=args.max_batch_tokens,
                    quantization=args.quantization)
    engine.embed(texts[:100])
    start = time.perf_counter()
    engine.embed(texts)
    print(f"{len(texts) / (time.perf_counter() - start):.1f} texts/s ({engine.dtype}, quantization "
          f"{args.quantization}, {len(texts)} texts)")
    if args.wall:
        wall_breakdown(engine, texts)
        return
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        engine.embed(texts[: args.texts])
    print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=16))
    hwm = next(line.split()[1] for line in open("/proc/self/status") if line.startswith("VmHWM"))
    print(f"peak RSS {int(hwm) / 1024:.0f} MB")


def wall_breakdown(engine, texts: list[str]) -> None:
    """Time each part of every BERT layer (wrapping their forwards) over one pass of ``texts``."""
    import collections

    import poolkit.builtin_models.bert as bert

    spent: dict[str, float] = collections.defaultdict(float)

    def timed(name, fn):
        def run(*args, **kwargs):
            start = time.perf_counter()
            out = fn(*args, **kwargs)
            spent[name] += time.perf_counter() - start
            return out
        return run

    layers = [m for m in engine.model.modules() if isinstance(m, bert.BertLayer)]
    if not layers:
        sys.exit("--wall times the BERT layers; this model has none")
    for layer in layers:
        for part in ("qkv", "attn_out", "ffn_in", "ffn_out", "ln1", "ln2"):
            module = getattr(layer, part)
            module.forward = timed(part, module.forward)
    attention = bert.packed_attention
    bert.packed_attention = timed("attention", attention)
    start = time.perf_counter()
    try:
        engine.embed(texts)
    finally:
        bert.packed_attention = attention
    total = time.perf_counter() - start
    print(f"wall time of one pass over {len(texts)} texts: {total:.2f} s")
    for name, seconds in sorted(spent.items(), key=lambda kv: -kv[1]):
        print(f"  {name:<10} {seconds:6.3f} s  {100 * seconds / total:5.1f}%")
    rest = total - sum(spent.values())
    print(f"  {'the rest':<10} {rest:6.3f} s  {100 * rest / total:5.1f}%  (tokenizer, embeddings, pooling, batching)")


if __name__ == "__main__":
    main()
