"""``MeanBagOfWordsModel``: a context-free encoder, ``h_i = tanh(W e(t_i) + b)``, one token at a time.

The smallest model on poolkit's model contract (docs/plugins.md, 'Architectures'):

- a :class:`poolkit.PoolingModel` built from one :class:`poolkit.ModelInit`: the checkpoint's tensors
  (``embeddings.weight`` ``(V, C)``, ``proj.weight`` ``(C, C)``, ``proj.bias`` ``(C,)``) taken from
  ``init.weights``, the projection through ``init.linear`` (poolkit's fastest kernels in ``init.dtype``);
- ``forward(batch)`` returns the fp32 hidden state of every packed token, ``(N, C)``;
- it declares only what differs from ``PoolingModel``'s defaults: ``default_pooling`` and ``supported_tasks``.

Its ``config.json`` has ``"architectures": ["MeanBagOfWordsModel"]`` and a ``model_type`` transformers
does not know, which poolkit reads into a plain ``PretrainedConfig`` keeping every field.
"""

from __future__ import annotations

import torch

from poolkit import ModelInit, PoolingModel
from poolkit.batch import PackedBatch


class MeanBagOfWords(PoolingModel):
    default_pooling = "MEAN"
    supported_tasks = ("embed", "token_embed", "token_norms")

    def __init__(self, init: ModelInit) -> None:
        super().__init__(init)  # sets self.config
        w = init.weights
        self.table = w.take("embeddings.weight")  # (V, C), on init.device
        self.proj = init.linear(w.take("proj.weight"), w.take("proj.bias"))  # (C, C) and (C,)
        w.check_consumed("MeanBagOfWords")  # a tensor nothing took: KeyError
        self.hidden_size = self.table.shape[1]

    def forward(self, batch: PackedBatch) -> torch.Tensor:
        return torch.tanh(self.proj(self.table[batch.input_ids]))  # (N, C) fp32
