"""A tiny random-weight EmbeddingGemma: ``Gemma3TextModel`` saved as a Sentence Transformers model, built offline.

google/embeddinggemma-300m is a bidirectional Gemma3 text model (``use_bidirectional_attention``)
under Transformer -> Pooling (mean) -> Dense (C -> 4C, no bias) -> Dense (4C -> C, no bias) ->
Normalize, with named prompts in ``config_sentence_transformers.json``. This builds the same
layout at toy size with Sentence Transformers' own modules and ``save``, so ``SentenceTransformer(dir)``
is the reference. The tokenizer is MiniLM's WordPiece (vocab 30,522; [PAD] is 0 as in Gemma).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

PROMPTS = {  # EmbeddingGemma's own prompts (config_sentence_transformers.json), a subset
    "query": "task: search result | query: ",
    "document": "title: none | text: ",
    "Classification": "task: classification | query: ",
    "Clustering": "task: clustering | query: ",
}


def build_tiny_gemma3(dest: str | Path, *, hidden_size: int = 64, num_layers: int = 3, num_heads: int = 4,
                      num_kv_heads: int = 2, head_dim: int = 16, intermediate_size: int = 96, sliding_window: int = 8,
                      layer_types: list[str] | None = None, bidirectional: bool = True, seed: int = 0,
                      std: float = 0.2, **config: Any) -> Path:
    """Save a random ``Gemma3TextModel`` (transformers checkpoint + WordPiece tokenizer) to ``dest``.

    ``sliding_window`` is written to config.json as EmbeddingGemma writes it; with ``bidirectional``
    transformers reads it as a symmetric band of ``sliding_window // 2`` tokens either side.
    """
    from transformers import Gemma3TextConfig, Gemma3TextModel

    from poolkit import testing

    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    layer_types = layer_types or ["sliding_attention", "full_attention", "sliding_attention"][:num_layers]
    config.setdefault("query_pre_attn_scalar", head_dim)  # EmbeddingGemma: 256 = head_dim
    cfg = Gemma3TextConfig(vocab_size=30522, hidden_size=hidden_size, num_hidden_layers=num_layers,
                           num_attention_heads=num_heads, num_key_value_heads=num_kv_heads, head_dim=head_dim,
                           intermediate_size=intermediate_size, sliding_window=sliding_window,
                           layer_types=layer_types, use_bidirectional_attention=bidirectional,
                           max_position_embeddings=512, pad_token_id=0,
                           bos_token_id=101, eos_token_id=102, rope_theta=10_000.0, rope_local_base_freq=100.0,
                           **config)
    torch.manual_seed(seed)
    model = Gemma3TextModel(cfg).eval()
    with torch.no_grad():  # lively random weights; Gemma's norms scale by (1 + w), so w around 0
        for _, p in model.named_parameters():
            p.normal_(0, std)
    model.save_pretrained(dest, safe_serialization=True)
    testing.copy_wordpiece_tokenizer(dest)
    return dest


def build_embeddinggemma(dest: str | Path, st_dest: str | Path | None = None, **kwargs: Any) -> Path:
    """:func:`build_tiny_gemma3` at ``dest``, then wrapped by Sentence Transformers as EmbeddingGemma is
    (mean pooling, two bias-free Dense layers C -> 4C -> C, Normalize, prompts), saved at ``st_dest``
    (default: ``dest`` itself). Returns the Sentence Transformers directory."""
    import warnings

    from sentence_transformers import SentenceTransformer

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        from sentence_transformers.models import Dense, Normalize, Pooling, Transformer

    dest = build_tiny_gemma3(dest, **kwargs)
    hidden = kwargs.get("hidden_size", 64)
    torch.manual_seed(kwargs.get("seed", 0) + 1)
    transformer = Transformer(str(dest))
    up = Dense(hidden, 4 * hidden, bias=False, activation_function=torch.nn.Identity())
    down = Dense(4 * hidden, hidden, bias=False, activation_function=torch.nn.Identity())
    for dense in (up, down):
        with torch.no_grad():
            dense.linear.weight.normal_(0, dense.linear.in_features ** -0.5)
    model = SentenceTransformer(modules=[transformer, Pooling(hidden, "mean"), up, down, Normalize()],
                                prompts=PROMPTS, device="cpu")
    out = Path(st_dest or dest)
    model.save(str(out))
    return out
