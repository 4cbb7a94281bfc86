"""SPLADE (BertForMaskedLM + SpladePooling): poolkit vs ``SparseEncoder.encode``, and the memory of chunked logits.

    python bench/splade.py                        # hidden 768, 2 layers, 60 texts <= 256 tokens, 2 threads
    python bench/splade.py --layers 12 --texts 400 --max-len 512

One random-weight SparseEncoder directory (``tests/builtin_models/builders_splade.py`` shapes, BERT's
vocabulary of 30,522; ``--hidden``/``--layers`` set the encoder) serves both sides.

- ``throughput``: texts/s of ``Engine.embed`` and of ``SparseEncoder.encode`` (batch size 32) on
  ``bench/corpus.py`` texts truncated at ``--max-len`` tokens, median of ``--rounds``, and the max abs
  difference of the two sides' vectors.
- ``memory``: peak RSS growth (sampled every 2 ms) while embedding 8 texts of ``--max-len`` tokens
  in one ``max_batch_tokens=4096`` batch, with the default ``chunk_tokens`` (1024) and with the
  logits of the whole batch at once, each in a fresh process.
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))


def build(dest: Path, hidden: int, layers: int) -> Path:
    from transformers import BertConfig, BertForMaskedLM

    from poolkit import testing
    from tests.builtin_models.builders_splade import save_as_sparse_encoder

    cfg = BertConfig(vocab_size=30522, hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=hidden // 64,
                     intermediate_size=4 * hidden, max_position_embeddings=512)
    torch.manual_seed(0)
    mlm = dest / "mlm"
    BertForMaskedLM(cfg).eval().save_pretrained(mlm)
    testing.copy_wordpiece_tokenizer(mlm)
    return save_as_sparse_encoder(mlm, dest / "splade", strategy="max")


def throughput(path: Path, texts: list[str], rounds: int) -> dict:
    from sentence_transformers import SparseEncoder

    from poolkit import Engine

    engine, st = Engine(str(path)), SparseEncoder(str(path), device="cpu")
    sides = {"poolkit": lambda: torch.stack([o.outputs.data for o in engine.embed(texts)]),
             "sentence_transformers": lambda: st.encode(texts, batch_size=32, convert_to_tensor=True,
                                                        convert_to_sparse_tensor=False)}
    times: dict[str, list[float]] = {k: [] for k in sides}
    out: dict[str, torch.Tensor] = {}
    for r in range(rounds):
        for name in (list(sides) if r % 2 == 0 else list(sides)[::-1]):
            start = time.perf_counter()
            out[name] = sides[name]()
            times[name].append(time.perf_counter() - start)
    result = {f"{k}_texts_per_s": round(len(texts) / statistics.median(v), 1) for k, v in times.items()}
    result["max_abs_diff"] = float((out["poolkit"] - out["sentence_transformers"]).abs().max())
    return result


def _rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize()


def memory(path: str, chunk: int, max_len: int) -> dict:
    """Run in a child process: peak RSS growth (MiB, sampled every 2 ms) over one 8 x max_len-token batch."""
    import threading

    from poolkit import Engine
    from poolkit.model.loading import release_freed_memory

    engine = Engine(path, max_batch_tokens=4096)
    engine.task("embed").method.chunk_tokens = chunk
    engine.embed("warm up")
    texts = ["token " * (max_len - 2)] * 8
    release_freed_memory()
    before, peak, done = _rss(), [0], threading.Event()

    def sample() -> None:
        while not done.is_set():
            peak[0] = max(peak[0], _rss())
            time.sleep(0.002)

    sampler = threading.Thread(target=sample)
    sampler.start()
    start = time.perf_counter()
    engine.embed(texts)
    seconds = time.perf_counter() - start
    done.set()
    sampler.join()
    growth = round((peak[0] - before) / 2**20)
    return {"chunk_tokens": chunk, "peak_rss_growth_mib": growth, "seconds": round(seconds, 2)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--hidden", type=int, default=768)
    ap.add_argument("--layers", type=int, default=2)
    ap.add_argument("--texts", type=int, default=60)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--max-len", type=int, default=256)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--_memory", nargs=2, help=argparse.SUPPRESS)  # child process: PATH CHUNK
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    if args._memory:
        print(json.dumps(memory(args._memory[0], int(args._memory[1]), args.max_len)))
        return
    import corpus as corpus_mod

    with tempfile.TemporaryDirectory() as tmp:
        path = build(Path(tmp), args.hidden, args.layers)
        from transformers import AutoTokenizer

        tok = AutoTokenizer.from_pretrained(path)
        texts = [tok.convert_tokens_to_string(tok.tokenize(t.text)[: args.max_len - 2])
                 for t in corpus_mod.build_corpus(args.texts)]
        report = {"hidden": args.hidden, "layers": args.layers, "texts": len(texts), "threads": args.threads,
                  **throughput(path, texts, args.rounds), "memory": []}
        for chunk in (1024, 10**9):
            child = subprocess.run([sys.executable, __file__, "--_memory", str(path), str(chunk), "--max-len",
                                    str(args.max_len), "--threads", str(args.threads)],
                                   capture_output=True, text=True, check=True)
            report["memory"].append(json.loads(child.stdout.strip().splitlines()[-1]))
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
