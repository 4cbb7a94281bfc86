"""CLIP (CLIPModel): a causal text tower and a ViT image tower, each projected into one shared space.

Reference: transformers/models/clip/modeling_clip.py (``get_text_features``, ``get_image_features``).
Texts run packed like every family: :meth:`CLIPForEmbedding.forward` returns every token's state
after the final LayerNorm and the (linear, bias-free) text projection, so the embed task's LAST
pooling picks the end-of-text token and gets transformers' pool-then-project (vLLM does the same;
the tokenizer puts ``<|endoftext|>`` last). Images run through :meth:`CLIPForEmbedding.embed_images`:
patches -> [class] + patches + positions -> pre-LayerNorm -> encoder -> post-LayerNorm of [class]
-> visual projection. SigLIP (``siglip.py``) reuses this file's layers.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from poolkit.batch import PackedBatch
from poolkit.layers import AttentionPlan, LayerNorm, packed_attention
from poolkit.model.interface import ModelInit, PoolingModel

FUSED_ACTS = {"gelu": "gelu", "gelu_new": "gelu_tanh", "gelu_pytorch_tanh": "gelu_tanh", "relu": "relu"}


def quick_gelu(x: torch.Tensor) -> torch.Tensor:
    """CLIP's activation: ``x * sigmoid(1.702 x)`` (transformers' QuickGELUActivation)."""
    return x * torch.sigmoid(1.702 * x)


class MLP(nn.Module):
    """``fc2(act(fc1(x)))``; GELU and ReLU are fused into fc1, quick_gelu runs after it."""

    def __init__(self, init: ModelInit, cfg: Any, p: str) -> None:
        super().__init__()
        w = init.weights
        act = cfg.hidden_act
        if act != "quick_gelu" and act not in FUSED_ACTS:
            raise ValueError(f"hidden_act={act!r} is not supported by the native CLIP/SigLIP; "
                             f"supported: {sorted([*FUSED_ACTS, 'quick_gelu'])}")
        self.quick = act == "quick_gelu"
        self.fc1 = init.linear(w.take(f"{p}fc1.weight"), w.take(f"{p}fc1.bias"), None if self.quick else FUSED_ACTS[act],
                               keep_dtype=True)
        self.fc2 = init.linear(w.take(f"{p}fc2.weight"), w.take(f"{p}fc2.bias"))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.fc1(x)
        return self.fc2(quick_gelu(h) if self.quick else h)


class EncoderLayer(nn.Module):
    """Pre-LN transformer layer of every tower: x += attn(LN1(x)); x += mlp(LN2(x)); q/k/v fused."""

    def __init__(self, init: ModelInit, cfg: Any, p: str, causal: bool) -> None:
        super().__init__()
        w = init.weights
        self.num_heads, self.causal = cfg.num_attention_heads, causal
        self.ln1 = LayerNorm.take(w, f"{p}layer_norm1", cfg.layer_norm_eps)
        names = ("q_proj", "k_proj", "v_proj")
        self.qkv = init.linear(torch.cat([w.take(f"{p}self_attn.{n}.weight") for n in names]),
                               torch.cat([w.take(f"{p}self_attn.{n}.bias") for n in names]), keep_dtype=True)
        self.out_proj = init.linear(w.take(f"{p}self_attn.out_proj.weight"), w.take(f"{p}self_attn.out_proj.bias"))
        self.ln2 = LayerNorm.take(w, f"{p}layer_norm2", cfg.layer_norm_eps)
        self.mlp = MLP(init, cfg, f"{p}mlp.")

    def forward(self, x: torch.Tensor, plan: AttentionPlan) -> torch.Tensor:  # x: (N, C) packed
        x = x + self.out_proj(packed_attention(self.qkv(self.ln1(x)), plan, self.num_heads, causal=self.causal))
        return x + self.mlp(self.ln2(x))


def encoder_layers(init: ModelInit, cfg: Any, p: str, causal: bool) -> nn.ModuleList:
    return nn.ModuleList(EncoderLayer(init, cfg, f"{p}encoder.layers.{i}.", causal)
                         for i in range(cfg.num_hidden_layers))


class TextTransformer(nn.Module):
    """token + absolute position embeddings -> encoder -> final LayerNorm: ``(N, C)`` per token, fp32.

    CLIP's layers are causal, SigLIP's bidirectional; neither has an embedding LayerNorm."""

    def __init__(self, init: ModelInit, cfg: Any, causal: bool, p: str = "text_model.") -> None:
        super().__init__()
        w = init.weights
        self.token = nn.Parameter(w.take(f"{p}embeddings.token_embedding.weight").float())
        self.position = nn.Parameter(w.take(f"{p}embeddings.position_embedding.weight").float())
        self.layers = encoder_layers(init, cfg, p, causal)
        self.final_ln = LayerNorm.take(w, f"{p}final_layer_norm", cfg.layer_norm_eps)

    def forward(self, batch: PackedBatch) -> torch.Tensor:
        x = self.token[batch.input_ids] + self.position[batch.positions]  # (N, C)
        for layer in self.layers:
            x = layer(x, batch.attention_plan)
        return self.final_ln(x)


class PatchEmbedding(nn.Module):
    """The ``Conv2d(kernel = stride = patch)`` of a ViT as one linear over flattened patches (same weights)."""

    def __init__(self, init: ModelInit, cfg: Any, p: str, bias: bool) -> None:
        super().__init__()
        w = init.weights
        weight = w.take(f"{p}weight")  # (C, 3, P, P)
        self.patch, self.image_size, self.width = cfg.patch_size, cfg.image_size, weight.shape[0]
        self.proj = init.linear(weight.reshape(self.width, -1), w.take(f"{p}bias") if bias else None)

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        B, ch, H, W = pixels.shape  # (B, 3, H, W)
        if H != self.image_size or W != self.image_size:
            raise ValueError(f"images of {H}x{W} pixels reached a vision tower for {self.image_size}x{self.image_size}; "
                             f"the checkpoint's image processor and vision_config.image_size disagree")
        P = self.patch
        x = pixels.reshape(B, ch, H // P, P, W // P, P).permute(0, 2, 4, 1, 3, 5)  # (B, H/P, W/P, 3, P, P)
        return self.proj(x.reshape(-1, ch * P * P)).view(B, -1, self.width)  # (B, num_patches, C)


def run_layers(layers: nn.ModuleList, x: torch.Tensor) -> torch.Tensor:
    """``(B, S, C)`` image sequences through encoder layers, packed as ``B`` sequences of ``S`` tokens."""
    B, S, C = x.shape
    plan = AttentionPlan([S] * B, x.device)
    x = x.reshape(B * S, C)
    for layer in layers:
        x = layer(x, plan)
    return x.view(B, S, C)


class CLIPVisionTransformer(nn.Module):
    """ViT: [class] + patches + positions -> pre-LayerNorm -> encoder -> post-LayerNorm of [class], ``(B, C)``."""

    def __init__(self, init: ModelInit, cfg: Any, p: str = "vision_model.") -> None:
        super().__init__()
        w = init.weights
        self.class_embedding = nn.Parameter(w.take(f"{p}embeddings.class_embedding").float())  # (C,)
        self.patches = PatchEmbedding(init, cfg, f"{p}embeddings.patch_embedding.", bias=False)
        self.position = nn.Parameter(w.take(f"{p}embeddings.position_embedding.weight").float())  # (S, C)
        self.pre_ln = LayerNorm.take(w, f"{p}pre_layrnorm", cfg.layer_norm_eps)  # sic: HF's key name
        self.layers = encoder_layers(init, cfg, p, causal=False)
        self.post_ln = LayerNorm.take(w, f"{p}post_layernorm", cfg.layer_norm_eps)

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        patches = self.patches(pixels)  # (B, S-1, C)
        cls = self.class_embedding.expand(patches.shape[0], 1, -1)
        x = self.pre_ln(torch.cat([cls, patches], dim=1) + self.position)  # (B, S, C)
        return self.post_ln(run_layers(self.layers, x)[:, 0])  # (B, C)


class CLIPForEmbedding(PoolingModel):
    """CLIPModel served for ``embed``: texts through the text tower, images through :meth:`embed_images`."""

    default_pooling = "LAST"  # the end-of-text token, last in every tokenized text (vLLM's CLIP)
    supported_tasks = ("embed",)
    score_type = "bi-encoder"  # score/rerank: cosine of the embeddings, text against text or image

    def __init__(self, init: ModelInit) -> None:
        super().__init__(init)
        cfg, w = init.config, init.weights
        text, vision = cfg.text_config, cfg.vision_config
        self.text = TextTransformer(init, text, causal=True)
        self.text_projection = init.linear(w.take("text_projection.weight"))
        self.vision = CLIPVisionTransformer(init, vision)
        self.visual_projection = init.linear(w.take("visual_projection.weight"))
        # logit_scale: the contrastive loss's temperature, no embedding reads it
        w.check_consumed(type(self).__name__, ignore=("logit_scale", "text_model.embeddings.position_ids",
                                                     "vision_model.embeddings.position_ids"))
        self.max_model_len = text.max_position_embeddings
        self.hidden_size = cfg.projection_dim
        self.image_tokens = (vision.image_size // vision.patch_size) ** 2 + 1  # patches and [class]

    def forward(self, batch: PackedBatch) -> torch.Tensor:
        return self.text_projection(self.text(batch))  # (N, projection_dim)

    def embed_images(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return self.visual_projection(self.vision(pixel_values))  # (B, projection_dim)
