"""BERT masked-LM checkpoints (``BertForMaskedLM``), and SPLADE learned sparse embeddings from them, packed.

References: transformers/models/bert/modeling_bert.py (``BertOnlyMLMHead``: ``cls.predictions``),
sentence_transformers/sparse_encoder/modules/splade_pooling.py (``SpladePooling``) and vLLM's
``BertSpladeSparseEmbeddingModel`` in vllm/model_executor/models/bert.py.

The encoder is ``bert.py``'s. The MLM head maps each token's hidden state to vocabulary logits:
``decoder(LayerNorm(act(dense(h))))``, the decoder's weight tied to the word embeddings when the
checkpoint leaves ``cls.predictions.decoder.weight`` out (transformers saves tied weights once).
The class exposes it as :meth:`BertForMaskedLM.mlm_logits`; pooling it is the SPLADE pooling
methods' job (``poolkit.builtin_poolers.splade``), so the ``(tokens, vocabulary)`` logits are only
ever built a chunk of tokens at a time.

How a checkpoint is served:

- a Sentence Transformers ``SparseEncoder`` directory (``config.json`` says ``BertForMaskedLM``,
  ``modules.json`` a fill-mask ``Transformer`` or the older ``MLMTransformer``, then
  ``SpladePooling``): its pooling strategy selects ``SPLADE_MAX`` or ``SPLADE_SUM`` and ``embed``
  returns ``SparseEncoder.encode``'s vocabulary-sized vector, not normalized (no ``Normalize``
  module: ``normalize: false`` from the ST files, and the SPLADE methods' ``default_normalize``);
- ``hf_overrides={"architectures": ["BertSpladeSparseEmbeddingModel"]}`` (vLLM's name): the same
  model with ``SPLADE_MAX`` as its default pooling, for directories without the ST files;
- any other ``BertForMaskedLM`` directory (``bert-base-uncased``): pooled hidden states like
  ``BertModel`` (CLS, or the ST Pooling module's mode); the MLM head serves ``pooling_type``
  ``SPLADE_MAX``/``SPLADE_SUM`` if asked for.

SPLADE pools every token, [CLS] and [SEP] included, as SparseEncoder and naver's SPLADE do; vLLM's
pooler drops a leading [CLS] and a trailing [SEP], so its vectors can differ on those tokens' terms.
"""

from __future__ import annotations

import torch
from torch import nn

from poolkit.builtin_models.bert import BUFFERS, BertPoolingModel, activation
from poolkit.layers import LayerNorm
from poolkit.model.interface import ModelInit

HEAD = "cls.predictions"


class MLMHead(nn.Module):
    """BERT's prediction head: ``(n, C) -> (n, V)`` vocabulary logits in fp32."""

    def __init__(self, init: ModelInit, word_embeddings: torch.Tensor) -> None:
        super().__init__()
        cfg, w = init.config, init.weights
        act = activation(getattr(cfg, "hidden_act", "gelu"), "hidden_act", "BERT MLM head")
        self.dense = init.linear(w.take(f"{HEAD}.transform.dense.weight"), w.take(f"{HEAD}.transform.dense.bias"), act)
        self.ln = LayerNorm.take(w, f"{HEAD}.transform.LayerNorm", cfg.layer_norm_eps)
        weight = w.take(f"{HEAD}.decoder.weight", None)  # absent when tied to the word embeddings
        # the decoder's bias is what the forward adds; tied to cls.predictions.bias, it is saved only as that
        tied_bias = w.take(f"{HEAD}.bias", None)
        bias = w.take(f"{HEAD}.decoder.bias", tied_bias)
        if bias is None:
            raise KeyError(f"Checkpoint has no tensor '{HEAD}.bias' (nor '{HEAD}.decoder.bias'): the MLM head's "
                           f"decoder bias")
        self.decoder = init.linear(word_embeddings.detach() if weight is None else weight, bias)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.ln(self.dense(hidden)))


class BertForMaskedLM(BertPoolingModel):
    """BERT + its MLM head: ``embed`` pools hidden states, or SPLADE vectors from :meth:`mlm_logits`."""

    default_pooling = "CLS"  # BertModel's; a SparseEncoder's SpladePooling selects SPLADE_MAX / SPLADE_SUM
    supported_tasks = ("embed", "token_embed")
    # bert-base-uncased and other converted pre-training checkpoints keep the tanh pooler and the
    # next-sentence head: no task reads them
    unused_weights = (*BUFFERS, "pooler.", "cls.seq_relationship.")

    def build_heads(self, init: ModelInit) -> None:
        self.mlm = MLMHead(init, self.encoder.embeddings.word)

    def mlm_logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """``(n, C)`` hidden states -> ``(n, V)`` vocabulary logits, fp32 (for any slice of tokens)."""
        return self.mlm(hidden)


class BertSpladeSparseEmbeddingModel(BertForMaskedLM):
    """vLLM's name for a BERT MLM checkpoint served as SPLADE: max pooling unless the ST files say sum."""

    default_pooling = "SPLADE_MAX"
