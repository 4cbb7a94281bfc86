"""Build a tiny random-weight ``MeanBagOfWordsModel`` checkpoint (safetensors + WordPiece tokenizer)."""

from __future__ import annotations

import json
from pathlib import Path


def build_tiny_bow(dest: str | Path, *, hidden_size: int = 16, seed: int = 0) -> Path:
    import torch
    from safetensors.torch import save_file

    from poolkit.testing import copy_wordpiece_tokenizer

    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    copy_wordpiece_tokenizer(dest)
    vocab = 30522
    g = torch.Generator().manual_seed(seed)
    save_file({"embeddings.weight": torch.randn(vocab, hidden_size, generator=g),
               "proj.weight": torch.randn(hidden_size, hidden_size, generator=g) * 0.5,
               "proj.bias": torch.randn(hidden_size, generator=g) * 0.1}, str(dest / "model.safetensors"))
    (dest / "config.json").write_text(json.dumps({
        "architectures": ["MeanBagOfWordsModel"], "model_type": "mean_bag_of_words", "vocab_size": vocab,
        "hidden_size": hidden_size, "max_position_embeddings": 128}, indent=2))
    return dest
