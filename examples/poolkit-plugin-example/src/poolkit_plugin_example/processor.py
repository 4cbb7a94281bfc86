"""``keywords``: the ``top_k`` tokens of a text that the model weighs most, by the ``token_norms`` task.

An IO processor with its own request and response types: it validates ``{"text", "top_k"}``, runs
the plugin's own ``token_norms`` task, and returns ranked ``{token, score}`` pairs (special tokens
left out, a repeated token scored by its highest occurrence).
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from poolkit import IOProcessor


class KeywordsRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    text: str = Field(min_length=1)
    top_k: int = Field(default=5, ge=1)


class Keyword(BaseModel):
    token: str
    score: float


class Keywords(BaseModel):
    keywords: list[Keyword]


class KeywordsProcessor(IOProcessor[KeywordsRequest, Keywords]):
    task = "token_norms"
    request_type = KeywordsRequest

    def parse_request(self, raw: Any) -> KeywordsRequest:
        return KeywordsRequest(text=raw) if isinstance(raw, str) else super().parse_request(raw)

    def pre_process(self, data: KeywordsRequest, params) -> str:
        return data.text

    def post_process(self, outputs, request: KeywordsRequest) -> Keywords:
        [out] = outputs
        special = set(self.ctx.tokenizer.all_special_ids)
        best: dict[int, float] = {}
        for token_id, score in zip(out.prompt_token_ids, out.outputs.norms):
            if token_id not in special:
                best[token_id] = max(score, best.get(token_id, float("-inf")))
        ranked = sorted(best.items(), key=lambda kv: (-kv[1], kv[0]))[: request.top_k]
        tokens = self.ctx.tokenizer.convert_ids_to_tokens([i for i, _ in ranked])
        return Keywords(keywords=[Keyword(token=t, score=s) for t, (_, s) in zip(tokens, ranked)])
