"""CLIP: poolkit vs transformers' CLIPModel on the same random ViT-B/32-shaped weights: images/s and texts/s.

    python bench/clip.py                                  # 48 images, 256 texts, 3 rounds, 2 threads, fp32
    python bench/clip.py --images 96 --texts 512 --rounds 5 --json bench/results/clip.json

The checkpoint has openai/clip-vit-base-patch32's shapes (text: 512 wide, 12 layers, 8 heads, 77
positions; vision: 768 wide, 12 layers, 12 heads, 224x224 pixels in 32x32 patches; projection 512),
transformers' random initialization, and CLIP's image processor config (saved from the Pillow class).
Every measurement runs in a fresh process (``--worker``), one per side and round, the side order
alternating from round to round; each worker warms up first. Reported: the median round of each side.

- images, end to end: PIL images of random sizes (200-400 px) -> the same Pillow image processor ->
  normalized embedding. poolkit: ``Engine.embed`` of image prompts (its batching: 2048 // 50 = 40 images
  a pass); transformers: processor + ``get_image_features`` in batches of 32.
- images, model only: the same preprocessed pixels through each vision tower and projection, batches of 32.
- texts: ``bench/corpus.py`` texts tokenized once by MiniLM's WordPiece (speed does not depend on which
  tokenizer made the ids), cut to 76 ids + ``<|endoftext|>``. poolkit: ``Engine.embed`` of the ids
  (packed); transformers: sorted by length, batches of 32, padded, ``get_text_features``.
- parity: the largest difference of the two sides' normalized embeddings on 8 images and 8 texts.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

TEXT = dict(hidden_size=512, intermediate_size=2048, num_hidden_layers=12, num_attention_heads=8,
            max_position_embeddings=77, vocab_size=49408)
VISION = dict(hidden_size=768, intermediate_size=3072, num_hidden_layers=12, num_attention_heads=12,
              image_size=224, patch_size=32)
EOS = 49407  # CLIP's <|endoftext|>: the text config's eos_token_id, last in every text


def build(dest: Path) -> Path:
    from transformers import CLIPConfig, CLIPImageProcessorPil, CLIPModel

    from tests.builtin_models.builders_clip import clip_tokenizer

    clip_tokenizer(dest)  # the Engine loads a tokenizer; the bench feeds token ids
    torch.manual_seed(0)
    cfg = CLIPConfig(text_config=dict(TEXT, eos_token_id=EOS), vision_config=VISION, projection_dim=512)
    CLIPModel(cfg).eval().save_pretrained(dest, safe_serialization=True)
    CLIPImageProcessorPil().save_pretrained(dest)  # shortest edge 224, center crop 224, OpenAI's mean/std
    return dest


def inputs(n_images: int, n_texts: int) -> tuple[list, list[list[int]]]:
    import numpy as np
    from PIL import Image
    from transformers import AutoTokenizer

    from bench import corpus
    from poolkit import testing

    rng = np.random.default_rng(0)
    images = [Image.fromarray(rng.integers(0, 256, (int(rng.integers(200, 400)), int(rng.integers(200, 400)), 3),
                                           dtype=np.uint8)) for _ in range(n_images)]
    tok = AutoTokenizer.from_pretrained(testing.minilm_path())
    ids = tok([c.text for c in corpus.build_corpus(n_texts)], add_special_tokens=False, verbose=False)["input_ids"]
    return images, [seq[:76] + [EOS] for seq in ids]


def batches(items: list, size: int = 32) -> list[list]:
    return [items[i:i + size] for i in range(0, len(items), size)]


class Poolkit:
    def __init__(self, path: Path) -> None:
        from poolkit import Engine

        self.engine = Engine(str(path))

    def images(self, images):
        return torch.stack([o.outputs.data for o in self.engine.embed([{"multi_modal_data": {"image": i}}
                                                                       for i in images])])

    def pixels(self, images):
        from poolkit.media import preprocess_image

        return torch.stack([preprocess_image(self.engine.image_processor, i) for i in images])

    def tower(self, pixels):
        with torch.inference_mode():
            return torch.cat([self.engine.model.embed_images(chunk) for chunk in pixels.split(32)])

    def texts(self, ids):
        return torch.stack([o.outputs.data for o in self.engine.embed(ids)])


class Transformers:
    def __init__(self, path: Path) -> None:
        from transformers import CLIPImageProcessorPil, CLIPModel

        self.model = CLIPModel.from_pretrained(path, attn_implementation="sdpa").eval()
        self.proc = CLIPImageProcessorPil.from_pretrained(path)

    @staticmethod
    def _out(out):
        return getattr(out, "pooler_output", out)

    def images(self, images):
        with torch.inference_mode():
            return torch.nn.functional.normalize(torch.cat(
                [self._out(self.model.get_image_features(**self.proc(images=b, return_tensors="pt"))) for b in
                 batches(images)]), dim=-1)

    def pixels(self, images):
        return self.proc(images=images, return_tensors="pt")["pixel_values"]

    def tower(self, pixels):
        with torch.inference_mode():
            return torch.cat([self._out(self.model.get_image_features(pixel_values=c)) for c in pixels.split(32)])

    def texts(self, ids):
        order = sorted(range(len(ids)), key=lambda i: len(ids[i]))
        out = [None] * len(ids)
        with torch.inference_mode():
            for chunk in batches(order):
                T = max(len(ids[i]) for i in chunk)
                x = torch.full((len(chunk), T), EOS, dtype=torch.long)
                mask = torch.zeros(len(chunk), T, dtype=torch.long)
                for b, i in enumerate(chunk):
                    x[b, : len(ids[i])], mask[b, : len(ids[i])] = torch.tensor(ids[i]), 1
                for i, v in zip(chunk, self._out(self.model.get_text_features(input_ids=x, attention_mask=mask))):
                    out[i] = v
        return torch.nn.functional.normalize(torch.stack(out), dim=-1)


def worker(side: str, path: Path, n_images: int, n_texts: int, threads: int) -> dict:
    """One side's timings in this process (after a warm-up), or the parity of the two sides."""
    torch.set_num_threads(threads)
    images, ids = inputs(n_images, n_texts)
    if side == "parity":
        a, b = Poolkit(path), Transformers(path)
        return {"images": float((a.images(images[:8]) - b.images(images[:8])).abs().max()),
                "texts": float((a.texts(ids[:8]) - b.texts(ids[:8])).abs().max())}
    runner = Poolkit(path) if side == "poolkit" else Transformers(path)
    runner.images(images[:4]), runner.texts(ids[:32])  # warm-up
    pixels = runner.pixels(images)
    times = {}
    for name, fn, arg in (("images", runner.images, images), ("tower", runner.tower, pixels), ("texts", runner.texts, ids)):
        t = time.perf_counter()
        fn(arg)
        times[name] = time.perf_counter() - t
    return times


def spawn(side: str, path: Path, args: argparse.Namespace) -> dict:
    cmd = [sys.executable, __file__, "--worker", side, "--model", str(path), "--images", str(args.images),
           "--texts", str(args.texts), "--threads", str(args.threads)]
    out = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if out.returncode != 0:
        raise SystemExit(f"worker {side} failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images", type=int, default=48)
    ap.add_argument("--texts", type=int, default=256)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--json", help="also write the rows here")
    ap.add_argument("--worker", choices=("poolkit", "transformers", "parity"), help=argparse.SUPPRESS)
    ap.add_argument("--model", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        print(json.dumps(worker(args.worker, Path(args.model), args.images, args.texts, args.threads)))
        return
    with tempfile.TemporaryDirectory() as tmp:
        path = build(Path(tmp))
        parity = spawn("parity", path, args)
        runs: dict[str, list[dict]] = {"poolkit": [], "transformers": []}
        for r in range(args.rounds):
            for side in (("poolkit", "transformers") if r % 2 == 0 else ("transformers", "poolkit")):
                runs[side].append(spawn(side, path, args))
                print(f"  round {r + 1} {side:<12} " + "  ".join(f"{k} {v:.2f} s" for k, v in runs[side][-1].items()),
                      flush=True)
    counts = {"images": args.images, "tower": args.images, "texts": args.texts}
    labels = {"images": "images/s, end to end", "tower": "images/s, vision tower only", "texts": "texts/s"}
    rows = []
    for key, label in labels.items():
        p = counts[key] / statistics.median(t[key] for t in runs["poolkit"])
        h = counts[key] / statistics.median(t[key] for t in runs["transformers"])
        rows.append({"measure": label, "poolkit": p, "transformers": h, "ratio": p / h})
    print(f"\nCLIP ViT-B/32 shapes, fp32, {args.threads} threads, {args.images} images, {args.texts} texts, "
          f"median of {args.rounds} rounds (fresh process each)")
    print(f"{'measure':<30}{'poolkit':>10}{'transformers':>15}{'x transformers':>17}")
    print("-" * 72)
    for row in rows:
        print(f"{row['measure']:<30}{row['poolkit']:10.1f}{row['transformers']:15.1f}{row['ratio']:17.2f}")
    print(f"parity (normalized embeddings, max |diff|): images {parity['images']:.1e}, texts {parity['texts']:.1e}")
    if args.json:
        Path(args.json).write_text(json.dumps({"rows": rows, "parity": parity, "runs": runs, "args": vars(args)},
                                              indent=2))


if __name__ == "__main__":
    main()
