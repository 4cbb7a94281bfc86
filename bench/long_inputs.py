"""A long document costs what its kept tokens cost: embedding time by document size, MiniLM (256 tokens kept).

    python bench/long_inputs.py

For documents of 5,000 characters to 1.25 MB (one text each): ``Engine.embed`` time, and the time
of tokenizing the whole text and truncating it (what embedding cost before ``poolkit.truncation``).
Medians of 5 runs, 2 threads.
"""

from __future__ import annotations

from timing import median_seconds


def main() -> None:
    import torch

    from poolkit import Engine, testing

    torch.set_num_threads(2)
    engine = Engine(str(testing.minilm_path()))
    base = "Pooling models turn text into vectors: embeddings, scores and one vector per token. "
    print(f"{'characters':>12} {'embed s':>9} {'whole tokenize s':>17}")
    for size in (5_000, 50_000, 250_000, 1_250_000):
        doc = (base * (size // len(base) + 1))[:size]
        embed = median_seconds(lambda: engine.embed([doc]), 5, warmup=1)
        whole = median_seconds(lambda: engine.tokenizer(doc, truncation=True, max_length=engine.max_model_len), 5, warmup=1)
        print(f"{size:>12,} {embed:>9.3f} {whole:>17.3f}", flush=True)


if __name__ == "__main__":
    main()
