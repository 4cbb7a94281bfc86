"""``multi-vector-matryoshka``: one text in, one normalized vector per Matryoshka size out, from one forward pass.

This is the IO processor to copy when writing your own: it has its own request type (validated by
pydantic), chooses the pooling task and parameters it needs (``embed``, unnormalized, full size),
and returns a type of its own (``{dims: vector}``) instead of an ``EmbeddingOutput``. Each vector is
the first ``dims`` components of the full embedding, L2-normalized: what
``embed(text, PoolingParams(dimensions=dims))`` returns, for every size at once.

Request: a text or ``{"text": ..., "dimensions": [64, 256]}`` (default: the model's
``matryoshka_dimensions``). The model must declare Matryoshka support (``is_matryoshka`` or
``matryoshka_dimensions`` in ``config.json``).
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from poolkit.io_processor import IOProcessor
from poolkit.params import PoolingParams


class MatryoshkaRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    text: str
    dimensions: list[int] | None = Field(default=None, min_length=1)


class MatryoshkaVectors(BaseModel):
    vectors: dict[int, list[float]]  # dims -> unit vector of that size


class MatryoshkaProcessor(IOProcessor[MatryoshkaRequest, MatryoshkaVectors]):
    task = "embed"
    request_type = MatryoshkaRequest

    def parse_request(self, raw: Any) -> MatryoshkaRequest:
        request = MatryoshkaRequest(text=raw) if isinstance(raw, str) else super().parse_request(raw)
        supported, allowed = self.ctx.model_config.matryoshka_dimensions()
        if not supported:
            raise ValueError(f"model '{self.ctx.model_config.served_name}' does not declare matryoshka dimensions")
        dims = request.dimensions or allowed
        if not dims:
            raise ValueError("give dimensions: the model accepts any size and lists none")
        bad = [d for d in dims if d < 1 or (allowed is not None and d not in allowed)]
        if bad:
            raise ValueError(f"dimensions {bad} are not among the model's matryoshka_dimensions {allowed}")
        return request.model_copy(update={"dimensions": sorted(set(dims), reverse=True)})

    def merge_pooling_params(self, params: PoolingParams | None = None) -> PoolingParams:
        return super().merge_pooling_params(params).model_copy(update={"normalize": False, "dimensions": None})

    def pre_process(self, data: MatryoshkaRequest, params: PoolingParams) -> str:
        return data.text

    def post_process(self, outputs, request: MatryoshkaRequest) -> MatryoshkaVectors:
        import torch.nn.functional as F

        full = outputs[0].outputs.data  # (C,) unnormalized
        if request.dimensions[0] > full.shape[-1]:
            raise ValueError(f"dimensions={request.dimensions[0]} is more than the model's {full.shape[-1]}")
        return MatryoshkaVectors(vectors={d: F.normalize(full[:d], dim=-1).tolist() for d in request.dimensions})
