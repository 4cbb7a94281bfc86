"""Tiny random-weight ModernBERT checkpoints with an offline-trained byte-level BPE tokenizer."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

SPECIAL = ["[UNK]", "[CLS]", "[SEP]", "[PAD]", "[MASK]"]
WORDS = ("the a of to and in is was for on with as by at from that this it be are or an which not have "
         "river mountain quick brown fox jumps over lazy dog model token window local global attention rope "
         "packed sequence length embedding vector search query document answer question city north south "
         "green blue small large bright dark water fire stone tree light ModernBERT encoder 42 2024 3.14").split()


def _sentences(n: int = 400, seed: int = 0) -> list[str]:
    import random

    rng = random.Random(seed)
    return [" ".join(rng.choice(WORDS) for _ in range(rng.randint(3, 25))) + rng.choice([".", "?", "!", ""])
            for _ in range(n)]


def save_bpe_tokenizer(dest: str | Path, vocab_size: int = 600) -> Any:
    """Train a byte-level BPE (ModernBERT's kind: [CLS] text [SEP]) offline and save it to ``dest``."""
    from tokenizers import processors

    from tests.builtin_models.helpers import train_bpe_tokenizer

    def cls_sep(tok: Any) -> Any:
        cls, sep = tok.token_to_id("[CLS]"), tok.token_to_id("[SEP]")
        return processors.TemplateProcessing(single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B [SEP]",
                                             special_tokens=[("[CLS]", cls), ("[SEP]", sep)])

    return train_bpe_tokenizer(dest, _sentences(), SPECIAL, vocab_size, unk_token="[UNK]", post_processor=cls_sep,
                               cls_token="[CLS]", sep_token="[SEP]", pad_token="[PAD]",
                               mask_token="[MASK]", model_max_length=8192)  # no token types, as ModernBERT


def build_tiny_modernbert(dest: str | Path, *, architecture: str = "ModernBertModel", hidden_size: int = 32,
                          num_layers: int = 4, num_heads: int = 4, intermediate_size: int = 48,
                          local_attention: int = 16, global_attn_every_n_layers: int = 3, seed: int = 0,
                          **config: Any) -> Path:
    """Save a random-weight ModernBERT (``architecture``: ModernBertModel, ModernBertFor{Sequence,Token}Classification)
    with safetensors and a BPE tokenizer to ``dest``. ``config`` goes to ModernBertConfig (num_labels,
    classifier_pooling, attention_bias, mlp_bias, norm_bias, classifier_bias, global_rope_theta...)."""
    import torch
    import transformers

    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    tok = save_bpe_tokenizer(dest)
    ids = {name: tok.convert_tokens_to_ids(name) for name in SPECIAL}
    cfg = transformers.ModernBertConfig(
        vocab_size=len(tok), hidden_size=hidden_size, num_hidden_layers=num_layers, num_attention_heads=num_heads,
        intermediate_size=intermediate_size, local_attention=local_attention,
        global_attn_every_n_layers=global_attn_every_n_layers, max_position_embeddings=512,
        pad_token_id=ids["[PAD]"], bos_token_id=ids["[CLS]"], cls_token_id=ids["[CLS]"], eos_token_id=ids["[SEP]"],
        sep_token_id=ids["[SEP]"], **config)
    torch.manual_seed(seed)
    model = getattr(transformers, architecture)(cfg).eval()
    with torch.no_grad():  # random weights with a scale that keeps activations lively; norms stay near 1
        for name, p in model.named_parameters():
            if "norm" in name and name.endswith("weight"):
                p.copy_(1 + 0.2 * torch.randn_like(p))
            else:
                p.normal_(0, 0.2)
    model.save_pretrained(dest, safe_serialization=True)
    data = json.loads((dest / "config.json").read_text())
    assert data["architectures"] == [architecture], data["architectures"]
    return dest


def reference_model(path: str | Path, attn_implementation: str = "sdpa", **overrides: Any) -> Any:
    """The saved checkpoint loaded by transformers (its ``architectures[0]`` class), fp32, eval mode."""
    import transformers

    arch = json.loads((Path(path) / "config.json").read_text())["architectures"][0]
    return getattr(transformers, arch).from_pretrained(path, attn_implementation=attn_implementation,
                                                       **overrides).eval()
