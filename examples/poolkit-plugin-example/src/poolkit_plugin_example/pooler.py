"""``MEAN_SQRT_LEN``: the sum of a sequence's token states divided by sqrt(its length).

Sentence Transformers' ``pooling_mode_mean_sqrt_len_tokens``. Select it with
``pooler_config={"pooling_type": "MEAN_SQRT_LEN"}``; like MEAN it leaves out the ``skip`` prompt
tokens of a sequence when the pooler config says ``include_prompt: false``.
"""

from __future__ import annotations

import torch

from poolkit.builtin_poolers.methods import SEQUENCE_TASKS, MeanPool


class MeanSqrtLenPool(MeanPool):
    name, supported_tasks = "MEAN_SQRT_LEN", SEQUENCE_TASKS

    def __call__(self, hidden, batch):
        skip = batch.skip or [0] * len(batch.lengths)
        counts = torch.tensor([n - s for n, s in zip(batch.lengths, skip)], dtype=hidden.dtype, device=hidden.device)
        return super().__call__(hidden, batch) * counts.clamp(min=1).sqrt()[:, None]  # mean * n / sqrt(n)
