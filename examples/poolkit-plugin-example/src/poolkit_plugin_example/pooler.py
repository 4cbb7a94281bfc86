"""``MEAN_SQRT_LEN``: the sum of a sequence's token states divided by sqrt(its length).

Sentence Transformers' ``pooling_mode_mean_sqrt_len_tokens``. Select it with
``pooler_config={"pooling_type": "MEAN_SQRT_LEN"}``; like MEAN it leaves out the ``skip`` prompt
tokens of a sequence when the pooler config says ``include_prompt: false``.
"""

from __future__ import annotations

import torch

from poolkit import PoolingMethod
from poolkit.pooling import SEQUENCE_TASKS


class MeanSqrtLenPool(PoolingMethod):
    name, supported_tasks = "MEAN_SQRT_LEN", SEQUENCE_TASKS

    def __call__(self, hidden, batch):  # hidden: (N, C), every sequence's tokens end to end
        skip = batch.skip or [0] * len(batch.lengths)
        rows = [h[s:].sum(0) / max(len(h) - s, 1) ** 0.5 for h, s in zip(hidden.split(batch.lengths), skip)]
        return torch.stack(rows)  # (B, C)
