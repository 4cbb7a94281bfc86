"""Built-in task adapters: ``embed``, ``token_embed``, ``classify``, ``score`` (cross-encoder) and
``token_classify``. Each pools packed hidden states and applies its head; the Engine does the rest."""

from __future__ import annotations

import torch

from poolkit.builtin_poolers.activations import normalize
from poolkit.builtin_poolers.heads import DenseStack, matryoshka_truncate
from poolkit.errors import InvalidRequestError
from poolkit.outputs import (
    ClassificationOutput,
    EmbeddingOutput,
    ScoringOutput,
    TokenClassificationOutput,
    TokenEmbeddingOutput,
)
from poolkit.params import PoolingParams
from poolkit.tasks import TaskAdapter, TaskContext


def _matryoshka_error(ctx: TaskContext) -> InvalidRequestError:
    return InvalidRequestError(
        f'Model "{ctx.model_config.served_name}" does not support matryoshka representation, '
        f"changing output dimensions will lead to poor results.", "dimensions"
    )


def _output_width(ctx: TaskContext, dense: list) -> int | None:
    """Width of the pooled embedding: the last ST Dense layer's, else the model's hidden size (None: unknown)."""
    if dense:
        return dense[-1].out_features
    return ctx.model.hidden_size


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
        self.width = _output_width(ctx, st.dense if st else [])
        # the pooler config's normalize, else the method's default (SPLADE: off); a request's normalize wins
        self.default_dims = cfg.dimensions
        self.default_normalize = self.method.default_normalize if cfg.normalize is None else cfg.normalize
        self.check(PoolingParams(dimensions=cfg.dimensions))  # a configured default obeys the same rules

    def check(self, params: PoolingParams) -> None:
        if params.dimensions is None:
            return
        supported, allowed = self.ctx.model_config.matryoshka_dimensions()
        if not supported:
            raise _matryoshka_error(self.ctx)
        if allowed is not None and params.dimensions not in allowed:
            raise InvalidRequestError(f"dimensions={params.dimensions} is not one of this model's "
                                      f"matryoshka_dimensions {allowed}", "dimensions")
        if self.width is not None and params.dimensions > self.width:
            raise _too_wide(params.dimensions, self.width)

    def pool(self, hidden, batch, params):
        x = self.dense(self.method(hidden, batch))  # (B, C')
        wanted = [(p.dimensions or self.default_dims, self.default_normalize if p.normalize is None else p.normalize)
                  for p in params]
        out: list[torch.Tensor] = [None] * len(params)  # type: ignore[list-item]
        for dims, do_norm in set(wanted):  # usually one group: the whole batch in one op
            if dims is not None and dims > x.shape[-1]:  # normally refused by check(), before batching
                raise _too_wide(dims, x.shape[-1])
            rows = [i for i, w in enumerate(wanted) if w == (dims, do_norm)]
            y = matryoshka_truncate(x[rows], dims)
            y = normalize(y) if do_norm else y
            for i, row in zip(rows, y):
                out[i] = row
        return out


def _too_wide(dims: int, width: int) -> InvalidRequestError:
    return InvalidRequestError(f"dimensions={dims} is larger than the model's {width} output dimensions", "dimensions")


class TokenEmbedTask(TaskAdapter):
    """Every token's last hidden state, normalized unless ``normalize=False`` (vLLM's token_embed)."""

    name, output_cls = "token_embed", TokenEmbeddingOutput

    def __init__(self, ctx: TaskContext) -> None:
        super().__init__(ctx)
        self.method = ctx.pooling_method("ALL")
        self.default_normalize = ctx.pooler_config.normalize is not False

    def check(self, params: PoolingParams) -> None:
        if params.dimensions is not None:
            raise InvalidRequestError("dimensions is not supported for token_embed", "dimensions")

    def pool(self, hidden, batch, params):
        out = []
        per_seq = self.ctx.model.embed_tokens(hidden, batch)  # None: the hidden states themselves (ALL)
        if per_seq is None:
            per_seq = self.method(hidden, batch)
        for tokens, p in zip(per_seq, params):
            do_norm = self.default_normalize if p.normalize is None else p.normalize
            out.append(normalize(tokens) if do_norm else tokens)
        return out



def _activate(logits: torch.Tensor, use_activation: bool, activation=None) -> torch.Tensor:
    """The pooler config's named ``activation`` if any, else softmax over >= 2 labels and sigmoid for 1
    (vLLM and Sentence Transformers' CrossEncoder); nothing when ``use_activation`` is off."""
    if not use_activation:
        return logits
    if activation is not None:
        return activation(logits)
    return torch.sigmoid(logits) if logits.shape[-1] == 1 else torch.softmax(logits, dim=-1)


def _named_activation(ctx: TaskContext):
    """The registered activation the pooler config names (loaded when the Engine is built), or None."""
    name = ctx.pooler_config.activation
    return ctx.activation(name) if name else None


class ClassifyTask(TaskAdapter):
    """Pool (the config's ``pooling_type``) -> the model's ``classify`` head -> softmax/sigmoid."""

    name, output_cls = "classify", ClassificationOutput

    def __init__(self, ctx: TaskContext) -> None:
        super().__init__(ctx)
        self.method = ctx.pooling_method(ctx.pooler_config.pooling_type)
        if self.name not in self.method.supported_tasks:
            raise ValueError(f"Pooling type {ctx.pooler_config.pooling_type!r} does not support {self.name} "
                             f"(it supports {sorted(self.method.supported_tasks)})")
        default = ctx.pooler_config.use_activation
        self.default_activation = ctx.model.default_use_activation if default is None else default
        self.activation = _named_activation(ctx)

    def check(self, params: PoolingParams) -> None:
        if params.dimensions is not None or params.normalize is not None:
            raise InvalidRequestError(f"dimensions and normalize apply to embeddings, not to {self.name}")

    def pool(self, hidden, batch, params):
        logits = self.ctx.model.classify(self.method(hidden, batch))  # (B, num_labels)
        use = [self.default_activation if p.use_activation is None else p.use_activation for p in params]
        activated = _activate(logits, True, self.activation)
        return [a if u else raw for a, raw, u in zip(activated, logits, use)]


class ScoreTask(ClassifyTask):
    """Cross-encoder relevance: a one-label classifier over a tokenized pair, sigmoid by default."""

    name, output_cls = "score", ScoringOutput

    def check(self, params: PoolingParams) -> None:
        super().check(params)
        if self.ctx.model.num_labels != 1:  # the model's heads serve classify; only score is refused
            raise InvalidRequestError(f"A cross-encoder score needs a classifier with 1 label; this model has "
                                      f"{self.ctx.model.num_labels}. Use classify instead.")


class TokenClassifyTask(TaskAdapter):
    """Per-token logits from the model's ``classify_tokens`` (NER, rewards, BGE-M3 sparse weights).

    ``pooling_type`` ALL keeps every token; STEP keeps the ``step_tag_id`` tokens. The activation is
    softmax/sigmoid unless ``use_activation`` is False or the model sets ``default_use_activation``
    False (reward models return raw rewards).
    """

    name, output_cls = "token_classify", TokenClassificationOutput

    def __init__(self, ctx: TaskContext) -> None:
        super().__init__(ctx)
        cfg = ctx.pooler_config
        kind = cfg.pooling_type if cfg.pooling_type in ("ALL", "STEP") else "ALL"
        self.method = ctx.pooling_method(kind)
        self.columns = cfg.returned_token_ids
        default = cfg.use_activation
        self.default_activation = ctx.model.default_use_activation if default is None else default
        self.activation = _named_activation(ctx)

    def check(self, params: PoolingParams) -> None:
        if params.dimensions is not None or params.normalize is not None:
            raise InvalidRequestError("dimensions and normalize apply to embeddings, not to token_classify")

    def pool(self, hidden, batch, params):
        out = []
        # the head once over every token of the batch, then ALL/STEP picks each sequence's rows
        for logits, p in zip(self.method(self.ctx.model.classify_tokens(hidden), batch), params):
            if self.columns is not None:
                logits = logits[:, self.columns]
            use = self.default_activation if p.use_activation is None else p.use_activation
            out.append(_activate(logits, use, self.activation))
        return out
