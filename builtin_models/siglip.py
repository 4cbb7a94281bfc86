"""SigLIP (SiglipModel): a bidirectional text tower and a ViT pooled by attention, in one shared space.

Reference: transformers/models/siglip/modeling_siglip.py (``get_text_features``, ``get_image_features``).
The layers are CLIP's (``poolkit.builtin_models.clip``); what differs:

- texts are padded to ``max_position_embeddings`` (64) with the pad token, as the model card's
  ``processor(text=..., padding="max_length")`` does, and attention sees every position (no mask:
  SigLIP was trained so). The pooled text is the LAST position's state, a pad token for short texts,
  through ``text_model.head``. The padding happens in :meth:`SiglipForEmbedding.prepare_prompts`, so
  the packed batch holds exactly what transformers computes;
- images: patches + positions (no [class] token, no pre-LayerNorm) -> encoder -> post-LayerNorm ->
  multihead attention pooling (one learned probe query over every patch, then a residual MLP).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from poolkit.batch import PackedBatch
from poolkit.builtin_models.clip import MLP, PatchEmbedding, TextTransformer, encoder_layers, run_layers
from poolkit.layers import LayerNorm
from poolkit.model.interface import ModelInit, PoolingModel


class AttentionPoolingHead(nn.Module):
    """SigLIP's MAP head: ``y = attn(probe, x, x)``, then ``y + mlp(LN(y))``; ``(B, S, C) -> (B, C)``.

    The probe is a constant, so its query projection is computed once, here."""

    def __init__(self, init: ModelInit, cfg: Any, p: str) -> None:
        super().__init__()
        w = init.weights
        C, self.num_heads = cfg.hidden_size, cfg.num_attention_heads
        in_w, in_b = w.take(f"{p}attention.in_proj_weight"), w.take(f"{p}attention.in_proj_bias")  # (3C, C), (3C,)
        probe = w.take(f"{p}probe").float().reshape(1, C)
        query = F.linear(probe, in_w[:C].float(), in_b[:C].float())  # (1, C)
        self.register_buffer("query", query.view(1, self.num_heads, 1, C // self.num_heads), persistent=False)
        self.kv = init.linear(in_w[C:], in_b[C:], keep_dtype=True)
        self.out_proj = init.linear(w.take(f"{p}attention.out_proj.weight"), w.take(f"{p}attention.out_proj.bias"))
        self.ln = LayerNorm.take(w, f"{p}layernorm", cfg.layer_norm_eps)
        self.mlp = MLP(init, cfg, f"{p}mlp.")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, S, C = x.shape
        H = self.num_heads
        kv = self.kv(x.reshape(B * S, C)).view(B, S, 2, H, C // H).permute(2, 0, 3, 1, 4)  # (2, B, H, S, D)
        q = self.query.to(kv.dtype).expand(B, -1, -1, -1)  # (B, H, 1, D)
        y = self.out_proj(F.scaled_dot_product_attention(q, kv[0], kv[1]).reshape(B, C))  # (B, C)
        return y + self.mlp(self.ln(y))


class SiglipVisionTransformer(nn.Module):
    """ViT: patches + positions -> encoder -> post-LayerNorm -> attention pooling, ``(B, C)``."""

    def __init__(self, init: ModelInit, cfg: Any, p: str = "vision_model.") -> None:
        super().__init__()
        if not getattr(cfg, "vision_use_head", True):
            raise ValueError("vision_config.vision_use_head=False: this SigLIP has no pooling head, so "
                             "get_image_features has no embedding to match")
        w = init.weights
        self.patches = PatchEmbedding(init, cfg, f"{p}embeddings.patch_embedding.", bias=True)
        self.position = nn.Parameter(w.take(f"{p}embeddings.position_embedding.weight").float())  # (S, C)
        self.layers = encoder_layers(init, cfg, p, causal=False)
        self.post_ln = LayerNorm.take(w, f"{p}post_layernorm", cfg.layer_norm_eps)
        self.head = AttentionPoolingHead(init, cfg, f"{p}head.")

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        x = self.patches(pixels) + self.position  # (B, S, C)
        return self.head(self.post_ln(run_layers(self.layers, x)))


class SiglipForEmbedding(PoolingModel):
    """SiglipModel served for ``embed``: texts padded to the model's length, images through :meth:`embed_images`."""

    default_pooling = "LAST"  # the last position of the padded text (transformers' pooled output)
    supported_tasks = ("embed",)
    score_type = "bi-encoder"

    def __init__(self, init: ModelInit) -> None:
        super().__init__(init)
        cfg, w = init.config, init.weights
        text, vision = cfg.text_config, cfg.vision_config
        self.text = TextTransformer(init, text, causal=False)
        self.text_head = init.linear(w.take("text_model.head.weight"), w.take("text_model.head.bias"))
        self.vision = SiglipVisionTransformer(init, vision)
        # logit_scale / logit_bias: the sigmoid loss's, no embedding reads them
        w.check_consumed(type(self).__name__, ignore=("logit_scale", "logit_bias", "text_model.embeddings.position_ids",
                                                     "vision_model.embeddings.position_ids"))
        self.max_model_len = text.max_position_embeddings
        tokenizer = getattr(init, "tokenizer", None)  # the processor pads with the tokenizer's pad token
        pad = getattr(tokenizer, "pad_token_id", None)
        self.pad_token_id = pad if pad is not None else text.pad_token_id
        self.hidden_size = self.text_head.out_features
        self.image_tokens = (vision.image_size // vision.patch_size) ** 2

    def prepare_prompts(self, tokens: list[Any], role: str | None) -> list[Any]:
        """Each text padded to ``max_model_len`` with the pad token (``padding="max_length"``); images as they are."""
        n = self.max_model_len
        return [t if getattr(t, "pixel_values", None) is not None or len(t.ids) >= n else
                dataclasses.replace(t, ids=t.ids + [self.pad_token_id] * (n - len(t.ids)), token_types=None)
                for t in tokens]

    def forward(self, batch: PackedBatch) -> torch.Tensor:
        return self.text_head(self.text(batch))  # (N, C'): LAST pooling takes the padded last position

    def embed_images(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return self.vision(pixel_values)  # (B, C)
