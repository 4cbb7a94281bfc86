"""Tiny random-weight RoBERTa / XLM-RoBERTa checkpoints with a byte-level BPE tokenizer, built offline.

The tokenizer is trained on ``tests.corpus`` texts each time (a second or so) and saved with
transformers, so ``AutoTokenizer.from_pretrained(dir)`` and Sentence Transformers load it. Special
tokens follow RoBERTa / XLM-R: ``<s>`` 0, ``<pad>`` 1, ``</s>`` 2, ``<unk>`` 3; pairs are
``<s> A </s></s> B </s>``.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

SPECIAL_TOKENS = ["<s>", "<pad>", "</s>", "<unk>", "<mask>"]
BOS, PAD, EOS = 0, 1, 2


def build_bpe_tokenizer(dest: str | Path, vocab_size: int = 700) -> int:
    """Train a byte-level BPE on the test corpus and save it in ``dest``; returns its vocabulary size."""
    from tokenizers import processors

    from tests.builtin_models.helpers import train_bpe_tokenizer
    from tests.corpus import varied_texts

    fast = train_bpe_tokenizer(
        dest, varied_texts(400), SPECIAL_TOKENS, vocab_size, unk_token="<unk>",
        post_processor=lambda tok: processors.RobertaProcessing(("</s>", EOS), ("<s>", BOS), trim_offsets=True,
                                                                add_prefix_space=False),
        bos_token="<s>", eos_token="</s>", sep_token="</s>", cls_token="<s>", pad_token="<pad>", mask_token="<mask>")
    return fast.backend_tokenizer.get_vocab_size()


def build_tiny_roberta(dest: str | Path, architecture: str = "XLMRobertaModel", *, hidden_size: int = 32,
                       num_layers: int = 2, num_heads: int = 4, intermediate_size: int = 64, type_vocab_size: int = 1,
                       num_labels: int = 2, max_position_embeddings: int = 514, seed: int = 0,
                       hidden_act: str = "gelu") -> Path:
    """Save a random-weight ``architecture`` (``[XLM]Roberta{Model,ForSequenceClassification}``) to ``dest``."""
    import transformers

    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    vocab_size = build_bpe_tokenizer(dest)
    xlm = architecture.startswith("XLM")
    config_cls = transformers.XLMRobertaConfig if xlm else transformers.RobertaConfig
    labels = {}
    if architecture.endswith("ForSequenceClassification"):
        names = ["negative", "neutral", "positive"] if num_labels == 3 else [f"LABEL_{i}" for i in range(num_labels)]
        labels = {"id2label": dict(enumerate(names)), "label2id": {n: i for i, n in enumerate(names)}}
    cfg = config_cls(vocab_size=vocab_size, hidden_size=hidden_size, num_hidden_layers=num_layers,
                     num_attention_heads=num_heads, intermediate_size=intermediate_size, hidden_act=hidden_act,
                     type_vocab_size=type_vocab_size, max_position_embeddings=max_position_embeddings,
                     pad_token_id=PAD, bos_token_id=BOS, eos_token_id=EOS, **labels)
    torch.manual_seed(seed)
    model = getattr(transformers, architecture)(cfg).eval()
    with torch.no_grad():  # random weights with a scale that keeps activations lively
        for name, p in model.named_parameters():
            p.normal_(0, 0.2)
            if name.endswith("LayerNorm.weight"):
                p += 1  # gains near 1: with gains near 0 every token's final state is nearly the same
    model.save_pretrained(dest, safe_serialization=True)
    return dest


def build_tiny_bge_m3(dest: str | Path, *, colbert_dim: int | None = None, seed: int = 0, **kwargs) -> Path:
    """A tiny XLM-R plus random ``sparse_linear.pt`` (C -> 1) and ``colbert_linear.pt`` (C -> colbert_dim).

    Both are torch state dicts ``{"weight", "bias"}``, as FlagEmbedding saves them.

    The sparse bias is set so that about half the tokens of the test corpus get a weight of zero
    after the relu and half a positive one: random weights alone tend to put every token on one side.
    """
    from transformers import AutoTokenizer, XLMRobertaModel

    from tests.corpus import varied_texts

    dest = build_tiny_roberta(dest, "XLMRobertaModel", seed=seed, **kwargs)
    hidden = json.loads((dest / "config.json").read_text())["hidden_size"]
    torch.manual_seed(seed + 1)
    heads = {"sparse_linear": torch.nn.Linear(hidden, 1), "colbert_linear": torch.nn.Linear(hidden, colbert_dim or hidden)}
    tok = AutoTokenizer.from_pretrained(dest)
    encoder = XLMRobertaModel.from_pretrained(dest).eval()
    with torch.no_grad():
        for linear in heads.values():
            for p in linear.parameters():
                p.normal_(0, 0.2)
        states = torch.cat([encoder(**tok(t, return_tensors="pt")).last_hidden_state[0] for t in varied_texts(16)])
        heads["sparse_linear"].bias -= heads["sparse_linear"](states).median()
    for name, linear in heads.items():
        torch.save(linear.state_dict(), dest / f"{name}.pt")
    return dest
