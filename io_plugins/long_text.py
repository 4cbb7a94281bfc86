"""``long-text``: embed a text longer than the model's limit by chunks (vLLM's chunked processing).

The text is tokenized without special tokens; its content tokens are cut into chunks that fit the
limit once the model's special tokens are added back around each (``[CLS] ... [SEP]`` for BERT,
``<s> ... </s>`` for RoBERTa, a trailing EOS for decoders: whatever the tokenizer adds to a single
text). Each chunk is pooled with task ``embed`` and ``normalize=False``; the chunk vectors are
averaged weighted by each chunk's number of content tokens, and the mean is L2-normalized (unless
the request says ``normalize: false``). A text that fits in one chunk gives exactly the plain
``embed`` result.

Options (``config.json`` ``io_processor_options``, e.g. through ``hf_overrides``):
``max_chunks`` (default 64: a longer text is a ``ValueError``, found from a bounded prefix of it,
:func:`poolkit.truncation.truncation_prefix`, so a huge text costs no more than the cap) and ``chunk_tokens`` (default the
engine's limit, ``IOProcessorContext.max_input_tokens``).
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from poolkit.io_processor import IOProcessor
from poolkit.params import PoolingParams
from poolkit.truncation import truncation_prefix

DEFAULT_MAX_CHUNKS = 64


class LongTextRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    text: str = Field(min_length=1)
    normalize: bool = True


class LongTextEmbedding(BaseModel):
    model_config = ConfigDict(arbitrary_types_allowed=True)

    embedding: Any  # torch float32 tensor (dims,)
    num_chunks: int
    num_tokens: int  # content tokens, special tokens not counted


def special_token_frame(tokenizer: Any) -> tuple[list[int], list[int]]:
    """The ids the tokenizer puts before and after a single text's tokens: ``([CLS], [SEP])`` for BERT."""
    probe = "hello world"
    content = tokenizer(probe, add_special_tokens=False)["input_ids"]
    full = tokenizer(probe)["input_ids"]
    for start in range(len(full) - len(content) + 1):
        if full[start:start + len(content)] == content:
            return full[:start], full[start + len(content):]
    raise ValueError("cannot tell the tokenizer's special tokens apart from a text's own tokens")


class LongTextProcessor(IOProcessor[LongTextRequest, LongTextEmbedding]):
    task = "embed"
    request_type = LongTextRequest

    def __init__(self, ctx) -> None:
        super().__init__(ctx)
        self.prefix, self.suffix = special_token_frame(ctx.tokenizer)
        self.max_chunks = int(ctx.options.get("max_chunks", DEFAULT_MAX_CHUNKS))
        total = int(ctx.options.get("chunk_tokens", ctx.max_input_tokens))
        if total > ctx.max_input_tokens:
            raise ValueError(f"chunk_tokens={total} is more than the engine accepts ({ctx.max_input_tokens})")
        self.chunk_content = total - len(self.prefix) - len(self.suffix)  # content tokens per chunk
        if self.chunk_content < 1 or self.max_chunks < 1:
            raise ValueError(f"chunks of {total} tokens leave no room for text, or max_chunks < 1")

    def parse_request(self, raw: Any) -> LongTextRequest:
        return LongTextRequest(text=raw) if isinstance(raw, str) else super().parse_request(raw)

    def merge_pooling_params(self, params: PoolingParams | None = None) -> PoolingParams:
        # chunks are combined raw and normalized at the end; chunking replaces truncation
        return super().merge_pooling_params(params).model_copy(update={"normalize": False,
                                                                       "truncate_prompt_tokens": None})

    def pre_process(self, data: LongTextRequest, params: PoolingParams) -> list[dict[str, list[int]]]:
        n = self.chunk_content
        limit = n * self.max_chunks
        # a text far over the cap is refused after tokenizing a bounded prefix, not the whole of it
        text = truncation_prefix(self.ctx.tokenizer, data.text, limit, add_special_tokens=False)
        ids = self.ctx.tokenizer(text, add_special_tokens=False, verbose=False)["input_ids"]
        chunks = [ids[i:i + n] for i in range(0, len(ids), n)] or [[]]
        if len(chunks) > self.max_chunks:
            count = f"{len(ids)}" if text is data.text else f"more than {limit}"
            raise ValueError(f"the text has {count} tokens: more than max_chunks={self.max_chunks} chunks of {n} "
                             "(io_processor_options in config.json)")
        return [{"prompt_token_ids": self.prefix + c + self.suffix} for c in chunks]

    def post_process(self, outputs, request: LongTextRequest) -> LongTextEmbedding:
        import torch

        vectors = torch.stack([o.outputs.data for o in outputs])  # (chunks, dims)
        counts = [len(o.prompt_token_ids) - len(self.prefix) - len(self.suffix) for o in outputs]
        weights = torch.tensor(counts, dtype=vectors.dtype).clamp(min=1)  # an empty text is one empty chunk
        mean = (vectors * weights[:, None]).sum(0) / weights.sum()
        if request.normalize:
            mean = torch.nn.functional.normalize(mean, dim=-1)
        return LongTextEmbedding(embedding=mean, num_chunks=len(outputs), num_tokens=sum(counts))

    def output_to_response(self, output: LongTextEmbedding) -> dict[str, Any]:
        return {"embedding": output.embedding.tolist(), "num_chunks": output.num_chunks,
                "num_tokens": output.num_tokens}
