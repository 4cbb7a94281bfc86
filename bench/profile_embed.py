"""Where poolkit's embedding time goes: torch.profiler over the bench corpus, top operators.

    python bench/profile_embed.py --dtype float32 --texts 500
    python bench/profile_embed.py --dtype bfloat16 --texts 500
    python bench/profile_embed.py --quantization int8 --texts 500

Also prints texts/s of one unprofiled pass over 1,000 texts and the peak RSS (VmHWM) at the end.
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
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        engine.embed(texts[: args.texts])
    print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=16))
    hwm = next(line.split()[1] for line in open("/proc/self/status") if line.startswith("VmHWM"))
    print(f"peak RSS {int(hwm) / 1024:.0f} MB")


if __name__ == "__main__":
    main()
