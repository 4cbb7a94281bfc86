"""EmbeddingGemma (``Gemma3TextModel``): poolkit's native family vs its transformers fallback, same weights.

    python bench/embeddinggemma.py                       # hidden 256, 4 layers, 200 texts, 2 threads, fp32
    python bench/embeddinggemma.py --texts 400 --rounds 5 --max-len 512

Both sides are a ``poolkit.Engine`` on one random-weight EmbeddingGemma-shaped checkpoint
(``tests/builtin_models/builders_gemma3.py``: bidirectional Gemma3, 3 sliding layers and one full
layer as EmbeddingGemma's 5:1 pattern, GQA with one kv head, ST mean -> Dense C->4C -> Dense 4C->C
-> Normalize), so tokenizing, batching and pooling are shared and only the forward pass differs:
``native`` is ``builtin_models/gemma3.py`` (packed), ``fallback`` is
``builtin_models/transformers_fallback.py`` (padded ``transformers.Gemma3TextModel``). The fallback
engine is built with the native entry taken out of the registry for the duration of its build.

Texts: ``bench/corpus.py`` (real docstrings, short/medium/long mix), truncated at ``--max-len``
tokens. Each round embeds all texts once per side, the side order alternating; reported: texts/s of
the median round (wall clock), the best round, the process CPU time (steadier than wall time when
other processes share the CPUs) and the max abs difference of the two sides' vectors.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))
import corpus as corpus_mod  # noqa: E402

ARCH = "Gemma3TextModel"


@contextlib.contextmanager
def native_removed():
    """The registry without poolkit's native ``Gemma3TextModel`` (so the Engine resolves the fallback)."""
    from poolkit import get_host

    entries = get_host().registry("architectures").entries
    entry = entries.pop(ARCH, None)
    try:
        yield
    finally:
        if entry is not None:
            entries[ARCH] = entry


@contextlib.contextmanager
def native_registered():
    """The registry with the native class, registered for the block if the built-in table leaves it out."""
    from poolkit import get_host, testing
    from poolkit.builtin_models.gemma3 import Gemma3TextEncoder

    if ARCH in get_host().registry("architectures").entries:
        yield
    else:
        with testing.plugin_parts(architectures={ARCH: Gemma3TextEncoder}):
            yield


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--texts", type=int, default=200)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--hidden", type=int, default=256)
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--heads", type=int, default=4, help="q heads (EmbeddingGemma: 3 of head_dim 256, 1 kv head)")
    ap.add_argument("--kv-heads", type=int, default=1)
    ap.add_argument("--head-dim", type=int, default=None, help="default: hidden / heads")
    ap.add_argument("--intermediate", type=int, default=None, help="default: 1.5 x hidden, as EmbeddingGemma")
    ap.add_argument("--sliding-window", type=int, default=512, help="as written in config.json (EmbeddingGemma: 512)")
    ap.add_argument("--max-len", type=int, default=512)
    ap.add_argument("--dtype", default="float32")
    ap.add_argument("--max-batch-tokens", type=int, default=4096)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    warnings.simplefilter("ignore")
    from poolkit import Engine
    from tests.builtin_models.builders_gemma3 import build_embeddinggemma

    texts = [t.text for t in corpus_mod.build_corpus(args.texts)]
    with tempfile.TemporaryDirectory() as tmp:
        layer_types = (["sliding_attention"] * 5 + ["full_attention"]) * (args.layers // 6 + 1)
        layer_types = layer_types[: args.layers - 1] + ["full_attention"]
        path = build_embeddinggemma(Path(tmp) / "eg", hidden_size=args.hidden, num_layers=args.layers,
                                    num_heads=args.heads, num_kv_heads=args.kv_heads,
                                    head_dim=args.head_dim or args.hidden // args.heads,
                                    intermediate_size=args.intermediate or args.hidden * 3 // 2,
                                    sliding_window=args.sliding_window,
                                    layer_types=layer_types, std=0.02)
        kwargs = dict(dtype=args.dtype, max_model_len=args.max_len, max_batch_tokens=args.max_batch_tokens)
        with native_registered():
            engines = {"native": Engine(str(path), **kwargs)}
        with native_removed():
            engines["fallback"] = Engine(str(path), **kwargs)
        for name, engine in engines.items():
            print(f"{name}: {type(engine.model).__name__}")
        lengths = [len(o.prompt_token_ids) for o in engines["native"].embed(texts, truncate_prompt_tokens=args.max_len)]
        print(f"{len(texts)} texts, {sum(lengths)} tokens (median {statistics.median(lengths):.0f}, "
              f"max {max(lengths)}), hidden {args.hidden}, {args.layers} layers, {args.heads} heads / {args.kv_heads} kv, "
              f"window {args.sliding_window}, "
              f"{args.dtype}, {args.threads} threads", flush=True)
        times: dict[str, list[float]] = {n: [] for n in engines}
        cpu: dict[str, list[float]] = {n: [] for n in engines}
        vectors: dict[str, torch.Tensor] = {}
        for r in range(args.rounds):
            for name in (list(engines) if r % 2 == 0 else list(engines)[::-1]):
                t, c = time.perf_counter(), time.process_time()
                out = engines[name].embed(texts, truncate_prompt_tokens=args.max_len)
                times[name].append(time.perf_counter() - t)
                cpu[name].append(time.process_time() - c)
                vectors[name] = torch.stack([o.outputs.data for o in out])
        for name, ts in times.items():
            med = statistics.median(ts)
            print(f"{name:9s} {len(texts) / med:8.1f} texts/s  {sum(lengths) / med:9.0f} tokens/s  (median of "
                  f"{len(ts)} rounds: {med:.2f} s wall, best {min(ts):.2f} s; CPU time median "
                  f"{statistics.median(cpu[name]):.2f} s, best {min(cpu[name]):.2f} s)")
        speedup = statistics.median(times["fallback"]) / statistics.median(times["native"])
        best = min(times["fallback"]) / min(times["native"])
        cpu_ratio = statistics.median(cpu["fallback"]) / statistics.median(cpu["native"])
        diff = float((vectors["native"] - vectors["fallback"]).abs().max())
        print(f"native / fallback speed: {speedup:.2f}x (median wall), {best:.2f}x (best wall), {cpu_ratio:.2f}x "
              f"(median CPU time); max abs diff of the vectors {diff:.2e}")
        print(f"load average {open('/proc/loadavg').read().split()[:3]} on {os.cpu_count()} CPUs")


if __name__ == "__main__":
    main()
