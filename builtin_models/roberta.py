"""RoBERTa / XLM-RoBERTa encoders (RobertaModel, XLMRobertaModel) and their sequence classifiers, packed.

Reference: transformers/models/roberta/modeling_roberta.py (XLM-RoBERTa's file is a copy of it).
The encoder layers are BERT's (``poolkit.builtin_models.bert.BertLayer``); what differs is in the
embeddings and the head:

- positions are offset by the padding index: the token at index ``i`` of a sequence sits at position
  ``padding_idx + 1 + i`` (transformers' ``create_position_ids_from_input_ids``; a pad token inside
  a sequence keeps position ``padding_idx`` and does not advance the count);
- most checkpoints have ``type_vocab_size`` 1: every token gets token type 0, whatever segment ids
  the tokenizer produced;
- the classification head is ``out_proj(tanh(dense(h[<s>])))`` on the first token.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from poolkit.batch import PackedBatch
from poolkit.config import id2label
from poolkit.builtin_models.bert import BertEmbeddings, BertModel
from poolkit.kernels import FastLinear
from poolkit.weights import take

# tensors a RoBERTa checkpoint may carry that no pooling task reads: the MLM head, the tanh pooler
_UNUSED = ("pooler.", "lm_head.", "embeddings.position_ids", "embeddings.token_type_ids")


def roberta_positions(batch: PackedBatch, padding_idx: int) -> torch.Tensor:
    """``(N,)`` RoBERTa position ids: ``padding_idx + 1 + index`` counting only non-pad tokens of each sequence."""
    not_pad = (batch.input_ids != padding_idx).long()  # (N,)
    count = not_pad.cumsum(0)  # running count over the whole packed batch
    before = torch.nn.functional.pad(count, (1, 0))[batch.cu_seqlens[:-1]]  # (B,) count before each sequence
    before = before.repeat_interleave(torch.tensor(batch.lengths, device=batch.device))  # (N,)
    return (count - before) * not_pad + padding_idx


def _check_unused(leftover: dict[str, torch.Tensor], arch: str) -> None:
    unknown = [k for k in leftover if not k.startswith(_UNUSED)]
    if unknown:
        raise KeyError(f"Unexpected tensors in a {arch} checkpoint: {unknown[:8]}")


class RobertaEmbeddings(BertEmbeddings):
    """BERT's embeddings with RoBERTa's padding-offset positions."""

    def __init__(self, cfg: Any, sd: dict[str, torch.Tensor]) -> None:
        super().__init__(cfg, sd)
        self.padding_idx = cfg.pad_token_id
        # the longest sequence the position table holds: positions start at padding_idx + 1
        self.max_length = self.position.shape[0] - self.padding_idx - 1

    def forward(self, batch: PackedBatch) -> torch.Tensor:
        if max(batch.lengths) > self.max_length:
            raise ValueError(f"A sequence of {max(batch.lengths)} tokens exceeds this RoBERTa model's limit of "
                             f"{self.max_length} (max_position_embeddings - pad_token_id - 1)")
        x = self.word[batch.input_ids] + self.position[roberta_positions(batch, self.padding_idx)]  # (N, C)
        if batch.token_type_ids is None or self.token_type.shape[0] == 1:
            x = x + self.token_type[0]
        else:
            x = x + self.token_type[batch.token_type_ids]
        return self.ln(x)


class RobertaEncoder(BertModel):
    """BERT's encoder with RoBERTa's embeddings: the last hidden state of every token, ``(N, C)`` in fp32."""

    prefixes = ("roberta.", "model.")
    embeddings_cls = RobertaEmbeddings


class RobertaForEmbedding(nn.Module):
    """RobertaModel / XLMRobertaModel served for ``embed`` (pooled) and ``token_embed`` (every token)."""

    default_pooling = "CLS"  # vLLM's RobertaEmbeddingModel; a Sentence Transformers config overrides it
    supported_tasks: tuple[str, ...] = ("embed", "token_embed")

    def __init__(self, cfg: Any, sd: dict[str, torch.Tensor], dtype: torch.dtype = torch.float32,
                 kernels: str = "auto") -> None:
        super().__init__()
        self.config = cfg
        self.roberta = RobertaEncoder(cfg, sd, dtype, kernels)
        _check_unused(self.roberta.leftover, type(self).__name__)
        del self.roberta.leftover
        self.max_model_len = self.roberta.embeddings.max_length

    @property
    def hidden_size(self) -> int:
        return self.config.hidden_size

    def forward(self, batch: PackedBatch) -> torch.Tensor:
        return self.roberta(batch)


class RobertaClassificationHead(nn.Module):
    """``out_proj(tanh(dense(x)))`` on the pooled ``<s>`` row: ``(B, C) -> (B, num_labels)``, fp32."""

    def __init__(self, sd: dict[str, torch.Tensor], kernels: str) -> None:
        super().__init__()
        # a few rows per batch: kept in fp32 whatever the encoder's compute dtype
        self.dense = FastLinear(take(sd, "classifier.dense.weight"), take(sd, "classifier.dense.bias"),
                                None, torch.float32, kernels)
        self.out_proj = FastLinear(take(sd, "classifier.out_proj.weight"), take(sd, "classifier.out_proj.bias"),
                                   None, torch.float32, kernels)

    def forward(self, pooled: torch.Tensor) -> torch.Tensor:
        return self.out_proj(torch.tanh(self.dense(pooled)))


class RobertaForSequenceClassification(nn.Module):
    """(XLM-)RobertaForSequenceClassification: ``classify`` and, for cross-encoders, ``score``."""

    default_pooling = "CLS"  # the HF head reads the <s> token
    supported_tasks: tuple[str, ...] = ("classify", "score")

    def __init__(self, cfg: Any, sd: dict[str, torch.Tensor], dtype: torch.dtype = torch.float32,
                 kernels: str = "auto") -> None:
        super().__init__()
        self.config = cfg
        self.roberta = RobertaEncoder(cfg, sd, dtype, kernels)
        self.classifier = RobertaClassificationHead(self.roberta.leftover, kernels)
        _check_unused(self.roberta.leftover, type(self).__name__)
        del self.roberta.leftover
        self.max_model_len = self.roberta.embeddings.max_length
        self.num_labels: int = self.classifier.out_proj.out_features
        self.id2label = id2label(cfg, self.num_labels)

    @property
    def hidden_size(self) -> int:
        return self.config.hidden_size

    def forward(self, batch: PackedBatch) -> torch.Tensor:
        return self.roberta(batch)

    def classify(self, pooled: torch.Tensor) -> torch.Tensor:
        """Raw logits ``(B, num_labels)`` from the pooled ``(B, C)`` first-token rows."""
        return self.classifier(pooled)
