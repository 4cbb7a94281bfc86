"""BERT-family encoder (BertModel and models saved as it: MiniLM, BGE, E5, GTE-base...), packed.

Reference: transformers/models/bert/modeling_bert.py. All sequences of a batch are laid end to end
as ``(N, C)`` tokens: embeddings, linears, LayerNorm and GELU never see padding; attention pads
each run of similar lengths to its longest member only (``poolkit.kernels.AttentionPlan``).
Weights go straight from the checkpoint into prepacked kernels (``FastLinear``), q/k/v fused.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from poolkit.batch import PackedBatch
from poolkit.config import id2label
from poolkit.kernels import FastLinear, packed_attention
from poolkit.weights import strip_prefix, take

_ACT = {"gelu": "gelu", "gelu_new": "gelu_tanh", "gelu_pytorch_tanh": "gelu_tanh", "relu": "relu"}


class LayerNorm(nn.Module):
    """LayerNorm in fp32 over the last dim, weights taken from the checkpoint."""

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor, eps: float) -> None:
        super().__init__()
        self.weight, self.bias, self.eps = nn.Parameter(weight.float()), nn.Parameter(bias.float()), eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.layer_norm(x, self.weight.shape, self.weight, self.bias, self.eps)


class BertEmbeddings(nn.Module):
    """word + position + token type embeddings, then LayerNorm (dropout is a no-op at inference)."""

    def __init__(self, cfg: Any, sd: dict[str, torch.Tensor]) -> None:
        super().__init__()
        if getattr(cfg, "position_embedding_type", "absolute") != "absolute":
            raise ValueError(f"position_embedding_type={cfg.position_embedding_type!r} is not supported by the native BERT")
        self.word = nn.Parameter(take(sd, "embeddings.word_embeddings.weight").float())
        self.position = nn.Parameter(take(sd, "embeddings.position_embeddings.weight").float())
        self.token_type = nn.Parameter(take(sd, "embeddings.token_type_embeddings.weight").float())
        self.ln = LayerNorm(take(sd, "embeddings.LayerNorm.weight"), take(sd, "embeddings.LayerNorm.bias"), cfg.layer_norm_eps)

    def forward(self, batch: PackedBatch) -> torch.Tensor:
        x = self.word[batch.input_ids] + self.position[batch.positions]  # (N, C)
        if batch.token_type_ids is None:
            x = x + self.token_type[0]
        else:
            x = x + self.token_type[batch.token_type_ids]
        return self.ln(x)


class BertLayer(nn.Module):
    """Post-LN transformer layer: x = LN(x + attn(x)); x = LN(x + mlp(x))."""

    def __init__(self, cfg: Any, sd: dict[str, torch.Tensor], p: str, dtype: torch.dtype, kernels: str) -> None:
        super().__init__()
        self.num_heads = cfg.num_attention_heads
        qkv_w = torch.cat([take(sd, f"{p}attention.self.{n}.weight") for n in ("query", "key", "value")])
        qkv_b = torch.cat([take(sd, f"{p}attention.self.{n}.bias") for n in ("query", "key", "value")])
        # q/k/v and the MLP's inner layer keep the compute dtype: attention and ffn_out read it directly
        self.qkv = FastLinear(qkv_w, qkv_b, None, dtype, kernels, keep_dtype=True)
        self.attn_out = FastLinear(take(sd, f"{p}attention.output.dense.weight"), take(sd, f"{p}attention.output.dense.bias"), None, dtype, kernels)
        self.ln1 = LayerNorm(take(sd, f"{p}attention.output.LayerNorm.weight"), take(sd, f"{p}attention.output.LayerNorm.bias"), cfg.layer_norm_eps)
        act = _ACT.get(cfg.hidden_act)
        if act is None:
            raise ValueError(f"hidden_act={cfg.hidden_act!r} is not supported by the native BERT; supported: {sorted(_ACT)}")
        self.ffn_in = FastLinear(take(sd, f"{p}intermediate.dense.weight"), take(sd, f"{p}intermediate.dense.bias"), act, dtype, kernels, keep_dtype=True)
        self.ffn_out = FastLinear(take(sd, f"{p}output.dense.weight"), take(sd, f"{p}output.dense.bias"), None, dtype, kernels)
        self.ln2 = LayerNorm(take(sd, f"{p}output.LayerNorm.weight"), take(sd, f"{p}output.LayerNorm.bias"), cfg.layer_norm_eps)

    def forward(self, x: torch.Tensor, batch: PackedBatch) -> torch.Tensor:
        x = self.ln1(x + self.attn_out(packed_attention(self.qkv(x), batch.attention_plan, self.num_heads)))
        return self.ln2(x + self.ffn_out(self.ffn_in(x)))


class BertModel(nn.Module):
    """The encoder: returns the last hidden state of every token, ``(N, C)`` in fp32."""

    prefixes = ("bert.", "model.")  # what task-head checkpoints put in front of the encoder's keys
    embeddings_cls = BertEmbeddings

    def __init__(self, cfg: Any, sd: dict[str, torch.Tensor], dtype: torch.dtype = torch.float32, kernels: str = "auto") -> None:
        super().__init__()
        sd = strip_prefix(sd, self.prefixes)
        self.embeddings = self.embeddings_cls(cfg, sd)
        self.layers = nn.ModuleList(
            BertLayer(cfg, sd, f"encoder.layer.{i}.", dtype, kernels) for i in range(cfg.num_hidden_layers)
        )
        self.leftover = sd  # task heads take their tensors from here

    def forward(self, batch: PackedBatch) -> torch.Tensor:
        x = self.embeddings(batch)
        for layer in self.layers:
            x = layer(x, batch)
        return x


class BertForEmbedding(nn.Module):
    """BertModel served for ``embed`` (pooled) and ``token_embed`` (every token)."""

    default_pooling = "CLS"  # vLLM's default; a Sentence Transformers config overrides it
    supported_tasks = ("embed", "token_embed")

    def __init__(self, cfg: Any, sd: dict[str, torch.Tensor], dtype: torch.dtype = torch.float32, kernels: str = "auto") -> None:
        super().__init__()
        self.config = cfg
        self.bert = BertModel(cfg, sd, dtype, kernels)
        # the MLM head and BertModel's tanh pooler are not used for embeddings
        unknown = [k for k in self.bert.leftover if not k.startswith(("pooler.", "cls.", "embeddings.position_ids"))]
        if unknown:
            raise KeyError(f"Unexpected tensors in a BertModel checkpoint: {unknown[:8]}")
        del self.bert.leftover

    @property
    def hidden_size(self) -> int:
        return self.config.hidden_size

    def forward(self, batch: PackedBatch) -> torch.Tensor:
        return self.bert(batch)


class _BertWithClassifier(nn.Module):
    """BERT plus a ``classifier`` linear; subclasses add what sits between (``build_head``) and how it applies."""

    def __init__(self, cfg: Any, sd: dict[str, torch.Tensor], dtype: torch.dtype = torch.float32, kernels: str = "auto") -> None:
        super().__init__()
        self.config = cfg
        self.bert = BertModel(cfg, sd, dtype, kernels)
        rest = self.bert.leftover
        self.build_head(rest)
        self.classifier = FastLinear(take(rest, "classifier.weight"), take(rest, "classifier.bias"))
        self.num_labels = self.classifier.out_features
        self.id2label = id2label(cfg, self.num_labels)
        del self.bert.leftover

    def build_head(self, rest: dict[str, torch.Tensor]) -> None:
        """Take any extra head tensors out of ``rest``."""

    @property
    def hidden_size(self) -> int:
        return self.config.hidden_size

    def forward(self, batch: PackedBatch) -> torch.Tensor:
        return self.bert(batch)


class BertForSequenceClassification(_BertWithClassifier):
    """BERT with its classification head: tanh pooler on [CLS] -> classifier (cross-encoders too)."""

    default_pooling = "CLS"
    supported_tasks = ("classify", "score")

    def build_head(self, rest: dict[str, torch.Tensor]) -> None:
        self.pooler = FastLinear(take(rest, "pooler.dense.weight"), take(rest, "pooler.dense.bias"))

    def classify(self, pooled: torch.Tensor) -> torch.Tensor:
        """(B, C) [CLS] states -> (B, num_labels) logits."""
        return self.classifier(torch.tanh(self.pooler(pooled)))


class BertForTokenClassification(_BertWithClassifier):
    """BERT with a per-token classifier (NER and other taggers)."""

    default_pooling = "ALL"
    supported_tasks = ("token_classify",)

    def classify_tokens(self, hidden: torch.Tensor) -> torch.Tensor:
        """(N, C) token states -> (N, num_labels) logits."""
        return self.classifier(hidden)
