"""``MeanBagOfWordsModel``: a context-free encoder, ``h_i = tanh(W e(t_i) + b)``, one token at a time.

The smallest model that honours poolkit's model class contract:

- built as ``MeanBagOfWords(hf_config, state_dict, dtype, kernels)`` from the checkpoint's tensors
  (``embeddings.weight`` ``(V, C)``, ``proj.weight`` ``(C, C)``, ``proj.bias`` ``(C,)``);
- ``forward(batch)`` returns the fp32 hidden state of every packed token, ``(N, C)``;
- class attributes ``default_pooling`` and ``supported_tasks``, property ``hidden_size``.

Its ``config.json`` has ``"architectures": ["MeanBagOfWordsModel"]`` and a ``model_type`` transformers
does not know, which poolkit reads into a plain ``PretrainedConfig`` keeping every field.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from poolkit.batch import PackedBatch
from poolkit.weights import take


class MeanBagOfWords(nn.Module):
    default_pooling = "MEAN"
    supported_tasks = ("embed", "token_embed", "token_norms")

    def __init__(self, cfg: Any, sd: dict[str, torch.Tensor], dtype: torch.dtype = torch.float32,
                 kernels: str = "auto") -> None:
        super().__init__()
        sd = dict(sd)
        self.dtype = dtype
        self.embeddings = nn.Parameter(take(sd, "embeddings.weight").to(dtype), requires_grad=False)  # (V, C)
        self.weight = nn.Parameter(take(sd, "proj.weight").to(dtype), requires_grad=False)  # (C, C)
        self.bias = nn.Parameter(take(sd, "proj.bias").to(dtype), requires_grad=False)  # (C,)
        if sd:
            raise ValueError(f"MeanBagOfWords: unexpected tensors in the checkpoint: {sorted(sd)}")

    @property
    def hidden_size(self) -> int:
        return self.weight.shape[0]

    def forward(self, batch: PackedBatch) -> torch.Tensor:
        x = self.embeddings[batch.input_ids]  # (N, C)
        return torch.tanh(F.linear(x, self.weight, self.bias)).float()  # (N, C) fp32
