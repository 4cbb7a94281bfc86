"""Tiny random-weight CLIPModel / SiglipModel checkpoints with their tokenizer and image processor, built offline,
and the images the tests feed them.

- CLIP: a real ``CLIPTokenizer`` over a byte-level vocabulary without merges (each byte of a word is a
  token, the last one with ``</w>``); ``<|startoftext|>`` and ``<|endoftext|>`` are the highest ids,
  as in OpenAI's vocabulary, and ``<|endoftext|>`` (the text config's ``eos_token_id``) is the pad token;
  77 tokens at most. ``CLIPImageProcessor`` (saved from the Pillow class): shortest edge to 32, center
  crop 32x32, OpenAI's mean and std.
- SigLIP: SigLIP's own tokenizer is sentencepiece, not installed here, so a byte-level BPE trained on
  ``tests.corpus`` (``PreTrainedTokenizerFast``) with google/siglip's special tokens: ``</s>`` (id 1)
  appended to every text and used as the pad token, 32 tokens at most (``max_position_embeddings``).
  ``SiglipImageProcessor``: resize to 32x32, mean and std 0.5.

Weights are drawn with std 0.2 like the other families' tiny checkpoints (see ``helpers.py``).
"""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import numpy as np
import torch

TOWER = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4)
VISION = dict(TOWER, image_size=32, patch_size=8)


def _randomize(model: Any, seed: int) -> None:
    torch.manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0, 0.2)


def clip_tokenizer(dest: str | Path) -> Any:
    """A ``CLIPTokenizer`` (bytes as tokens, no merges) saved to ``dest``."""
    from tokenizers import pre_tokenizers
    from transformers import CLIPTokenizer

    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    vocab = {c: i for i, c in enumerate(alphabet)}
    vocab.update({f"{c}</w>": len(alphabet) + i for i, c in enumerate(alphabet)})
    vocab.update({"<|startoftext|>": len(vocab), "<|endoftext|>": len(vocab) + 1})
    tok = CLIPTokenizer(vocab=vocab, merges=[], model_max_length=77)
    tok.save_pretrained(dest)
    return tok


def build_tiny_clip(dest: str | Path, seed: int = 0, **text: Any) -> Path:
    """A random CLIPModel (text: causal, quick_gelu; vision: ViT 32x32 in 8x8 patches) saved with its
    tokenizer and image processor."""
    from transformers import CLIPConfig, CLIPImageProcessorPil, CLIPModel

    dest = Path(dest)
    tok = clip_tokenizer(dest)
    cfg = CLIPConfig(text_config=dict(TOWER, vocab_size=len(tok), max_position_embeddings=77,
                                      bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
                                      pad_token_id=tok.pad_token_id, **text),
                     vision_config=VISION, projection_dim=16)
    model = CLIPModel(cfg).eval()
    _randomize(model, seed)
    model.save_pretrained(dest, safe_serialization=True)
    CLIPImageProcessorPil(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}).save_pretrained(dest)
    return dest


def build_tiny_siglip(dest: str | Path, seed: int = 0) -> Path:
    """A random SiglipModel (text: bidirectional, 32 positions; vision: ViT 32x32 in 8x8 patches with the
    attention-pooling head) saved with its tokenizer and image processor."""
    from tokenizers import processors
    from transformers import SiglipConfig, SiglipImageProcessorPil, SiglipModel

    from tests.builtin_models.helpers import train_bpe_tokenizer
    from tests.corpus import varied_texts

    dest = Path(dest)
    eos = lambda _: processors.TemplateProcessing(single="$A </s>", special_tokens=[("</s>", 1)])  # noqa: E731
    tok = train_bpe_tokenizer(dest, varied_texts(200), ["<unk>", "</s>"], 400, post_processor=eos,
                              eos_token="</s>", pad_token="</s>", model_max_length=32)
    assert tok.pad_token_id == 1
    cfg = SiglipConfig(text_config=dict(TOWER, vocab_size=len(tok), max_position_embeddings=32, pad_token_id=1,
                                        bos_token_id=None, eos_token_id=1),
                       vision_config=VISION)
    model = SiglipModel(cfg).eval()
    _randomize(model, seed)
    model.save_pretrained(dest, safe_serialization=True)
    SiglipImageProcessorPil(size={"height": 32, "width": 32}).save_pretrained(dest)
    return dest


def sample_images(n: int = 4, seed: int = 0) -> list[Any]:
    """``n`` PIL images of different sizes and kinds: random RGB, a gradient, a grayscale, an RGBA."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        h, w = 24 + 9 * i, 40 - 3 * i
        kind = i % 4
        if kind == 0:
            out.append(Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)))
        elif kind == 1:
            ramp = np.linspace(0, 255, w, dtype=np.uint8)[None, :, None].repeat(h, 0).repeat(3, 2)
            out.append(Image.fromarray(np.ascontiguousarray(ramp[..., ::-1] // (1 + i % 3))))
        elif kind == 2:
            out.append(Image.fromarray(rng.integers(0, 256, (h, w), dtype=np.uint8)))  # grayscale (L)
        else:
            out.append(Image.fromarray(rng.integers(0, 256, (h, w, 4), dtype=np.uint8)))  # RGBA
    return out


def png_bytes(image: Any) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return buf.getvalue()


def data_uri(image: Any) -> str:
    import base64

    return "data:image/png;base64," + base64.b64encode(png_bytes(image)).decode("ascii")


def config(path: str | Path) -> dict:
    return json.loads((Path(path) / "config.json").read_text())
