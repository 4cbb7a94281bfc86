"""Tiny random-weight Llama / Qwen2 / Qwen3 checkpoints with a Qwen-style byte-level BPE tokenizer, built offline.

The tokenizer is trained on ``tests.corpus`` texts plus Qwen3-Reranker prompts each time (a second
or so) and saved with transformers, so ``AutoTokenizer.from_pretrained(dir)`` loads it. Special
tokens follow Qwen: ``<|endoftext|>`` 0 (EOS and pad), ``<|im_start|>`` 1, ``<|im_end|>`` 2,
``<think>`` 3, ``</think>`` 4; ``yes`` and ``no`` are single tokens. ``append_eos`` adds a
post-processor that appends ``<|endoftext|>`` to every text, as Qwen3-Embedding's tokenizer does.
"""

from __future__ import annotations

from pathlib import Path

import torch

SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<think>", "</think>"]
EOS = PAD = 0


def build_qwen_tokenizer(dest: str | Path, vocab_size: int = 800, append_eos: bool = False) -> int:
    """Train a byte-level BPE and save it in ``dest``; returns its vocabulary size."""
    from tokenizers import processors

    from poolkit.builtin_models.qwen3_reranker import format_qwen3_reranker_pair
    from tests.builtin_models.helpers import train_bpe_tokenizer
    from tests.corpus import varied_texts

    texts = varied_texts(400)
    texts += [format_qwen3_reranker_pair(q, d) for q, d in zip(texts[:40], texts[40:80])]
    texts += ["yes", "no"] * 2000  # frequent enough to become single tokens, as in Qwen's vocabulary
    eos = (lambda tok: processors.TemplateProcessing(single="$A <|endoftext|>", pair="$A $B <|endoftext|>",
                                                     special_tokens=[("<|endoftext|>", EOS)])) if append_eos else None
    fast = train_bpe_tokenizer(dest, texts, SPECIAL_TOKENS, vocab_size, post_processor=eos,
                               eos_token="<|endoftext|>", pad_token="<|endoftext|>",
                               additional_special_tokens=SPECIAL_TOKENS[1:])
    for word in ("yes", "no"):
        assert fast.convert_tokens_to_ids(word) is not None and fast.convert_tokens_to_ids(word) >= len(SPECIAL_TOKENS)
    return fast.backend_tokenizer.get_vocab_size()


def build_tiny_decoder(dest: str | Path, architecture: str = "Qwen3Model", *, hidden_size: int = 64,
                       num_layers: int = 2, num_heads: int = 4, num_kv_heads: int = 2, head_dim: int | None = None,
                       intermediate_size: int = 96, num_labels: int = 3, tie_word_embeddings: bool = False,
                       max_position_embeddings: int = 256, append_eos: bool = False, seed: int = 0,
                       **config) -> Path:
    """Save a random-weight ``architecture`` (``{Llama,Qwen2,Qwen3}{Model,ForCausalLM,ForSequenceClassification}``)."""
    import transformers

    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    vocab_size = build_qwen_tokenizer(dest, append_eos=append_eos)
    family = next(f for f in ("Llama", "Qwen2", "Qwen3") if architecture.startswith(f))
    config_cls = getattr(transformers, f"{family}Config")
    if architecture.endswith("ForSequenceClassification"):
        config["id2label"] = {i: f"class_{i}" for i in range(num_labels)}
        config["label2id"] = {f"class_{i}": i for i in range(num_labels)}
    if head_dim is not None or family != "Qwen2":  # Qwen3's config would default to 128
        config["head_dim"] = head_dim or hidden_size // num_heads
    cfg = config_cls(vocab_size=vocab_size, hidden_size=hidden_size, num_hidden_layers=num_layers,
                     num_attention_heads=num_heads, num_key_value_heads=num_kv_heads,
                     intermediate_size=intermediate_size, max_position_embeddings=max_position_embeddings,
                     tie_word_embeddings=tie_word_embeddings, pad_token_id=PAD, bos_token_id=EOS, eos_token_id=EOS,
                     **config)
    torch.manual_seed(seed)
    model = getattr(transformers, architecture)(cfg).eval()
    with torch.no_grad():  # random weights with a scale that keeps activations lively; norms around 1
        for name, p in model.named_parameters():
            if "norm" in name:
                p.copy_(1 + 0.2 * torch.randn_like(p))
            else:
                p.normal_(0, 0.2)
    model.save_pretrained(dest, safe_serialization=True)
    return dest


def build_reward_checkpoint(path: str | Path, architecture: str, num_labels: int, seed: int):
    """A Qwen2 decoder saved with a Qwen2.5-Math-RM style head (transformers has no class for it);
    returns ``(path, head tensors)``."""
    import json

    from safetensors.torch import load_file, save_file

    path = build_tiny_decoder(path, "Qwen2Model", seed=seed)
    state = load_file(path / "model.safetensors")
    g = torch.Generator().manual_seed(seed)
    head = {"score.0.weight": torch.randn(64, 64, generator=g) * 0.2, "score.0.bias": torch.randn(64, generator=g) * 0.2,
            "score.2.weight": torch.randn(num_labels, 64, generator=g) * 0.2,
            "score.2.bias": torch.randn(num_labels, generator=g) * 0.2}
    save_file({**{f"model.{k}": v for k, v in state.items()}, **head}, path / "model.safetensors")
    cfg = json.loads((path / "config.json").read_text())
    cfg.update(architectures=[architecture], num_labels=num_labels)
    (path / "config.json").write_text(json.dumps(cfg))
    return path, head
