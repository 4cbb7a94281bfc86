"""Built-in task adapters: ``embed`` (one vector per input) and ``token_embed`` (one per token)."""

from __future__ import annotations

import torch

from poolkit.builtin_poolers.activations import normalize
from poolkit.builtin_poolers.heads import DenseStack, matryoshka_truncate
from poolkit.outputs import EmbeddingOutput, TokenEmbeddingOutput
from poolkit.params import PoolingParams
from poolkit.tasks import TaskAdapter, TaskContext


def _matryoshka_error(ctx: TaskContext) -> ValueError:
    return ValueError(
        f'Model "{ctx.model_config.name}" does not support matryoshka representation, '
        f"changing output dimensions will lead to poor results."
    )


class EmbedTask(TaskAdapter):
    """Pool (the config's ``pooling_type``) -> ST Dense layers -> Matryoshka truncate -> normalize."""

    name, output_cls = "embed", EmbeddingOutput

    def __init__(self, ctx: TaskContext) -> None:
        super().__init__(ctx)
        cfg = ctx.pooler_config
        self.method = ctx.pooling_method(cfg.pooling_type)
        if "embed" not in self.method.supported_tasks:
            raise ValueError(f"Pooling type {cfg.pooling_type!r} does not support embed "
                             f"(it supports {sorted(self.method.supported_tasks)})")
        st = ctx.model_config.st
        self.dense = DenseStack(st.dense if st else [])
        self.default_dims, self.default_normalize = cfg.dimensions, cfg.normalize is not False
        self.check(PoolingParams(dimensions=cfg.dimensions))  # a configured default obeys the same rules

    def check(self, params: PoolingParams) -> None:
        if params.dimensions is None:
            return
        supported, allowed = self.ctx.model_config.matryoshka_dimensions()
        if not supported:
            raise _matryoshka_error(self.ctx)
        if allowed is not None and params.dimensions not in allowed:
            raise ValueError(f"dimensions={params.dimensions} is not one of this model's matryoshka_dimensions {allowed}")

    def pool(self, hidden, batch, params):
        x = self.dense(self.method(hidden, batch))  # (B, C')
        wanted = [(p.dimensions or self.default_dims, self.default_normalize if p.normalize is None else p.normalize)
                  for p in params]
        out: list[torch.Tensor] = [None] * len(params)  # type: ignore[list-item]
        for dims, do_norm in set(wanted):  # usually one group: the whole batch in one op
            if dims is not None and dims > x.shape[-1]:
                raise ValueError(f"dimensions={dims} is larger than the model's {x.shape[-1]} output dimensions")
            rows = [i for i, w in enumerate(wanted) if w == (dims, do_norm)]
            y = matryoshka_truncate(x[rows], dims)
            y = normalize(y) if do_norm else y
            for i, row in zip(rows, y):
                out[i] = row
        return out


class TokenEmbedTask(TaskAdapter):
    """Every token's last hidden state, normalized unless ``normalize=False`` (vLLM's token_embed)."""

    name, output_cls = "token_embed", TokenEmbeddingOutput

    def __init__(self, ctx: TaskContext) -> None:
        super().__init__(ctx)
        self.method = ctx.pooling_method("ALL")
        self.default_normalize = ctx.pooler_config.normalize is not False

    def check(self, params: PoolingParams) -> None:
        if params.dimensions is not None:
            raise ValueError("dimensions is not supported for token_embed")

    def pool(self, hidden, batch, params):
        out = []
        for tokens, p in zip(self.method(hidden, batch), params):
            do_norm = self.default_normalize if p.normalize is None else p.normalize
            out.append(normalize(tokens) if do_norm else tokens)
        return out

