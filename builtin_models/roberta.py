"""RoBERTa / XLM-RoBERTa encoders (RobertaModel, XLMRobertaModel) and their sequence classifiers, packed.

Reference: transformers/models/roberta/modeling_roberta.py (XLM-RoBERTa's file is a copy of it).
Layers, served classes and the classification head are BERT's (``poolkit.builtin_models.bert``);
what differs is in the embeddings and the head's key names:

- positions are offset by the padding index: the token at index ``i`` of a sequence sits at position
  ``padding_idx + 1 + i`` (transformers' ``create_position_ids_from_input_ids``; a pad token inside
  a sequence keeps position ``padding_idx`` and does not advance the count);
- most checkpoints have ``type_vocab_size`` 1: every token gets token type 0, whatever segment ids
  the tokenizer produced;
- the classification head is ``out_proj(tanh(dense(h[<s>])))`` on the first token, under
  ``classifier.dense`` / ``classifier.out_proj`` (BERT's ``ClassificationHead``).
"""

from __future__ import annotations

from typing import Any

import torch

from poolkit.batch import PackedBatch
from poolkit.builtin_models.bert import (
    BUFFERS,
    BertEmbeddings,
    BertForEmbedding,
    BertForSequenceClassification,
    BertModel,
)
from poolkit.model.weights import Weights

# tensors a RoBERTa checkpoint may carry that no pooling task reads: the MLM head, the tanh pooler
UNUSED = (*BUFFERS, "pooler.", "lm_head.")


def roberta_positions(batch: PackedBatch, padding_idx: int) -> torch.Tensor:
    """``(N,)`` RoBERTa position ids: ``padding_idx + 1 + index`` counting only non-pad tokens of each sequence."""
    not_pad = (batch.input_ids != padding_idx).long()  # (N,)
    count = not_pad.cumsum(0)  # running count over the whole packed batch
    before = torch.nn.functional.pad(count, (1, 0))[batch.cu_seqlens[:-1]]  # (B,) count before each sequence
    before = before.repeat_interleave(torch.tensor(batch.lengths, device=batch.device))  # (N,)
    return (count - before) * not_pad + padding_idx


class RobertaEmbeddings(BertEmbeddings):
    """BERT's embeddings with RoBERTa's padding-offset positions."""

    def __init__(self, cfg: Any, w: Weights) -> None:
        super().__init__(cfg, w)
        self.padding_idx = cfg.pad_token_id
        # the longest sequence the position table holds: positions start at padding_idx + 1
        self.max_length = self.position.shape[0] - self.padding_idx - 1

    def positions(self, batch: PackedBatch) -> torch.Tensor:
        return roberta_positions(batch, self.padding_idx)

    def forward(self, batch: PackedBatch) -> torch.Tensor:
        if max(batch.lengths) > self.max_length:
            raise ValueError(f"A sequence of {max(batch.lengths)} tokens exceeds this RoBERTa model's limit of "
                             f"{self.max_length} (max_position_embeddings - pad_token_id - 1)")
        return super().forward(batch)


class RobertaEncoder(BertModel):
    """BERT's encoder with RoBERTa's embeddings: the last hidden state of every token, ``(N, C)`` in fp32."""

    prefixes = ("roberta.", "model.")
    embeddings_cls = RobertaEmbeddings


class RobertaForEmbedding(BertForEmbedding):
    """RobertaModel / XLMRobertaModel served for ``embed`` (pooled) and ``token_embed`` (every token)."""

    default_pooling = "CLS"  # vLLM's RobertaEmbeddingModel; a Sentence Transformers config overrides it
    encoder_cls = RobertaEncoder
    unused_weights = UNUSED


class RobertaForSequenceClassification(BertForSequenceClassification):
    """(XLM-)RobertaForSequenceClassification: ``classify`` and, for cross-encoders, ``score``."""

    default_pooling = "CLS"  # the HF head reads the <s> token
    encoder_cls = RobertaEncoder
    unused_weights = UNUSED
    head_weights = ("classifier.dense", "classifier.out_proj")
