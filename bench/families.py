"""One row per native model family: poolkit vs transformers on the same random weights.

    python bench/embed_offline.py --families            # after the MiniLM table
    python bench/families.py --texts 300 --rounds 2     # this section alone

Every family is built at MiniLM's size (hidden 384, 6 layers, 12 heads, FFN 1536) with random
weights, saved, and run by poolkit (packed, fp32) and by transformers (texts sorted by length,
batches of 32, padded), alternating rounds. The corpus is tokenized with MiniLM's WordPiece
tokenizer for every family (speed does not depend on which tokenizer made the ids). Also
reported: the largest difference of last hidden states on a few texts (parity, not speed).
The HF_ColBERT row is token_embed of a late-interaction checkpoint (BERT + projection to 96,
normalized per token) against transformers' BertModel with the same projection in torch.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

SIZE = dict(hidden_size=384, num_hidden_layers=6, num_attention_heads=12, intermediate_size=1536)
FAMILIES = {  # name -> (transformers config class, model class, extra config)
    "BertModel": ("BertConfig", "BertModel", {}),
    "XLMRobertaModel": ("XLMRobertaConfig", "XLMRobertaModel", {"pad_token_id": 1, "max_position_embeddings": 514}),
    "ModernBertModel": ("ModernBertConfig", "ModernBertModel", {"pad_token_id": 0, "global_attn_every_n_layers": 3,
                                                                "local_attention": 128}),
    "Qwen3Model": ("Qwen3Config", "Qwen3Model", {"num_key_value_heads": 4, "head_dim": 32}),
    "LlamaModel": ("LlamaConfig", "LlamaModel", {"num_key_value_heads": 4}),
    # late interaction: BERT + a bias-free projection to 96 per token, L2-normalized (answerai-colbert-small's
    # shape, at MiniLM's depth); transformers side: BertModel, the same projection and normalize in torch
    "HF_ColBERT": ("BertConfig", "BertModel", {}),
}
COLBERT_DIM = 96


class ColBERTReference(torch.nn.Module):
    """transformers' BertModel + the checkpoint's projection, normalized per token (the ColBERT row's peer)."""

    def __init__(self, path: Path) -> None:
        import transformers
        from safetensors.torch import load_file

        super().__init__()
        self.bert = transformers.AutoModel.from_pretrained(path, attn_implementation="sdpa").eval()
        self.proj = load_file(path / "model.safetensors")["linear.weight"]

    def forward(self, input_ids, attention_mask=None):
        h = self.bert(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        return torch.nn.functional.normalize(h @ self.proj.T, dim=-1)


def build(name: str, dest: Path) -> Path:
    import transformers

    from poolkit import testing

    cfg_name, model_name, extra = FAMILIES[name]
    cfg = getattr(transformers, cfg_name)(vocab_size=30522, max_position_embeddings=extra.pop("max_position_embeddings", 512),
                                          **SIZE, **extra)
    torch.manual_seed(0)
    model = getattr(transformers, model_name)(cfg).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0, 0.02)
    model.save_pretrained(dest, safe_serialization=True)
    testing.copy_wordpiece_tokenizer(dest)
    if name == "HF_ColBERT":  # the HF_ColBERT layout: encoder under bert., the projection beside it
        import json

        from safetensors.torch import load_file, save_file

        state = {f"bert.{k}": v for k, v in load_file(dest / "model.safetensors").items()}
        state["linear.weight"] = torch.randn(COLBERT_DIM, SIZE["hidden_size"]) * 0.05
        save_file(state, dest / "model.safetensors")
        config = json.loads((dest / "config.json").read_text())
        config.update(architectures=["HF_ColBERT"], dim=COLBERT_DIM)
        (dest / "config.json").write_text(json.dumps(config))
    return dest


def transformers_embed(model, ids_list: list[list[int]], batch: int = 32) -> None:
    order = sorted(range(len(ids_list)), key=lambda i: len(ids_list[i]))
    with torch.inference_mode():
        for start in range(0, len(order), batch):
            chunk = [ids_list[i] for i in order[start:start + batch]]
            T = max(map(len, chunk))
            ids = torch.zeros(len(chunk), T, dtype=torch.long)
            mask = torch.zeros(len(chunk), T, dtype=torch.long)
            for b, seq in enumerate(chunk):
                ids[b, : len(seq)], mask[b, : len(seq)] = torch.tensor(seq), 1
            model(input_ids=ids, attention_mask=mask)


def parity(engine, model, ids_list: list[list[int]]) -> float:
    """Largest difference of last hidden states (ColBERT: of the normalized token vectors) over ``ids_list``."""
    worst = 0.0
    colbert = isinstance(model, ColBERTReference)
    with torch.inference_mode():
        for ids in ids_list:
            want = model(input_ids=torch.tensor([ids]))
            want = want[0] if colbert else want.last_hidden_state[0]
            params = None if colbert else _raw()
            got = engine.encode([ids], task="token_embed", pooling_params=params)[0].outputs.data
            worst = max(worst, float((got - want).abs().max()))
    return worst


def _raw():
    from poolkit import PoolingParams

    return PoolingParams(normalize=False)


def run(texts: list[str], rounds: int = 2, families: list[str] | None = None) -> list[dict]:
    import transformers
    from transformers.utils import logging as hf_logging

    from poolkit import Engine, testing

    hf_logging.disable_progress_bar()
    tok = transformers.AutoTokenizer.from_pretrained(testing.minilm_path())
    ids_list = [ids[:256] for ids in tok(texts, verbose=False)["input_ids"]]
    rows = []
    for name in families or list(FAMILIES):
        with tempfile.TemporaryDirectory() as tmp:
            path = build(name, Path(tmp))
            engine = Engine(str(path))
            ref = (ColBERTReference(path) if name == "HF_ColBERT" else
                   transformers.AutoModel.from_pretrained(path, attn_implementation="sdpa").eval())
            engine.encode(ids_list[:16], task="token_embed")
            transformers_embed(ref, ids_list[:16])
            times = {"poolkit": [], "transformers": []}
            for _ in range(rounds):
                t = time.perf_counter()
                engine.encode(ids_list, task="token_embed")
                times["poolkit"].append(time.perf_counter() - t)
                t = time.perf_counter()
                transformers_embed(ref, ids_list)
                times["transformers"].append(time.perf_counter() - t)
            p, h = statistics.median(times["poolkit"]), statistics.median(times["transformers"])
            rows.append({"family": name, "poolkit_texts_per_s": len(texts) / p, "transformers_texts_per_s": len(texts) / h,
                         "ratio": h / p, "max_abs_diff": parity(engine, ref, ids_list[:8])})
            print(f"  {name:<18} poolkit {rows[-1]['poolkit_texts_per_s']:7.1f} texts/s   transformers "
                  f"{rows[-1]['transformers_texts_per_s']:7.1f}   x{rows[-1]['ratio']:.2f}   "
                  f"max |diff| {rows[-1]['max_abs_diff']:.1e}", flush=True)
    return rows


def format_rows(rows: list[dict]) -> str:
    lines = ["family              poolkit texts/s  transformers texts/s  x transformers  max |diff| hidden",
             "-" * 92]
    for r in rows:
        lines.append(f"{r['family']:<20}{r['poolkit_texts_per_s']:15.1f}{r['transformers_texts_per_s']:22.1f}"
                     f"{r['ratio']:16.2f}{r['max_abs_diff']:19.1e}")
    return "\n".join(lines)


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--texts", type=int, default=500, help="corpus texts (default: %(default)s)")
    ap.add_argument("--rounds", type=int, default=2, help="alternating rounds (default: %(default)s)")
    ap.add_argument("--families", default=",".join(FAMILIES), help="comma list (default: all)")
    args = ap.parse_args()
    from bench import corpus

    torch.set_num_threads(2)
    rows = run([c.text for c in corpus.build_corpus(args.texts)], args.rounds, args.families.split(","))
    print("\n" + format_rows(rows))
