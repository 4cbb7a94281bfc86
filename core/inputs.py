"""The input processor: prompts in any accepted shape -> token ids, with prompts and truncation applied.

Accepted prompts (vLLM's forms): a string, a list of strings, one list of token ids, a list of
token-id lists, ``{"prompt_token_ids": [...]}`` or ``{"prompt": "..."}``, or a list mixing them.
Texts are tokenized in one call per truncation length; nothing else touches the tokenizer.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from poolkit.config import SentenceTransformersConfig
from poolkit.errors import InputTooLongError, InvalidInputTypeError, InvalidRequestError
from poolkit.params import PoolingParams


@dataclass
class TokenizedPrompt:
    """One request's tokens. ``skip`` leading tokens are the prompt, left out of pooling if configured."""

    ids: list[int]
    token_types: list[int] | None = None
    skip: int = 0


def normalize_prompts(prompts: Any) -> list[str | list[int]]:
    """Flatten the accepted prompt shapes into a list of texts and token-id lists."""
    if isinstance(prompts, (str, dict)):
        prompts = [prompts]
    if not isinstance(prompts, (list, tuple)):
        raise InvalidInputTypeError(f"prompts must be a string, a list of strings or token ids, got {type(prompts).__name__}")
    if prompts and all(isinstance(t, int) and not isinstance(t, bool) for t in prompts):
        return [list(prompts)]  # one prompt given as token ids
    out: list[str | list[int]] = []
    for i, p in enumerate(prompts):
        if isinstance(p, dict):
            if "prompt_token_ids" in p:
                p = p["prompt_token_ids"]
            elif "prompt" in p:
                p = p["prompt"]
            else:
                raise InvalidInputTypeError(f"prompt {i} is a dict without 'prompt' or 'prompt_token_ids': keys {sorted(p)}")
        if isinstance(p, str):
            out.append(p)
        elif isinstance(p, (list, tuple)) and all(isinstance(t, int) and not isinstance(t, bool) for t in p):
            out.append(list(p))
        else:
            raise InvalidInputTypeError(f"prompt {i} must be a string or a list of token ids, got {type(p).__name__}: {p!r:.60}")
    return out


class InputProcessor:
    """Tokenizes texts the way Sentence Transformers would for this model, and enforces the length limit.

    ``max_model_len`` is the one limit applied to every prompt. A longer prompt is truncated to it
    when ``auto_truncate`` is set (the Engine sets it for models whose Sentence Transformers config
    has a ``max_seq_length``, as ``SentenceTransformer.encode`` truncates) or when the request
    passes ``truncate_prompt_tokens``; otherwise it is an :class:`InputTooLongError`.
    """

    def __init__(self, tokenizer: Any, max_model_len: int, st: SentenceTransformersConfig | None,
                 include_prompt: bool = True, vocab_size: int | None = None, auto_truncate: bool = False) -> None:
        self.tokenizer = tokenizer
        self.vocab_size = vocab_size
        self.max_model_len = max_model_len
        self.st = st
        self.include_prompt = include_prompt
        self.auto_truncate = auto_truncate

    def resolve_prompt(self, prompt_name: str | None, prompt: str | None) -> str | None:
        """The instruction text to prepend: ``prompt``, else ``prompt_name``, else the model's default."""
        if prompt is not None:
            return prompt
        prompts = self.st.prompts if self.st else {}
        name = prompt_name if prompt_name is not None else (self.st.default_prompt_name if self.st else None)
        if name is None:
            return None
        if name not in prompts:
            raise InvalidRequestError(f"Prompt name {name!r} is not in this model's prompts {sorted(prompts)}")
        return prompts[name]

    def _truncation(self, params: PoolingParams) -> int | None:
        """The length this request's prompts are cut to, or None (then longer prompts are errors)."""
        k = params.truncate_prompt_tokens
        if k is None and self.auto_truncate:
            k = self.max_model_len
        if k == -1:
            k = self.max_model_len
        if k is not None and k > self.max_model_len:
            raise InvalidRequestError(f"truncate_prompt_tokens={k} is larger than the model's "
                                      f"max_model_len={self.max_model_len}", "truncate_prompt_tokens")
        return k

    def __call__(self, prompts: list[str | list[int]], params: list[PoolingParams],
                 instruction: str | None = None, add_special_tokens: bool = True) -> list[TokenizedPrompt]:
        out: list[TokenizedPrompt | None] = [None] * len(prompts)
        groups: dict[int | None, list[int]] = {}
        for i, (p, par) in enumerate(zip(prompts, params)):
            k = self._truncation(par)
            if isinstance(p, list):
                ids = p[:k] if k is not None else p
                bad = [t for t in ids if t < 0 or (self.vocab_size is not None and t >= self.vocab_size)]
                if bad:
                    raise InvalidRequestError(f"Prompt {i} has token ids outside the vocabulary [0, {self.vocab_size}): {bad[:5]}")
                out[i] = TokenizedPrompt(self._checked(ids, i))
            else:
                groups.setdefault(k, []).append(i)
        skip = 0
        if instruction and not self.include_prompt:
            skip = len(self.tokenizer(instruction)["input_ids"]) - 1  # as ST: the prompt without its last token
        for k, idx in groups.items():
            texts = [(instruction or "") + prompts[i] for i in idx]
            if self.st is not None and self.st.do_lower_case:
                texts = [t.lower() for t in texts]
            enc = self.tokenizer(texts, truncation=k is not None, max_length=k, return_attention_mask=False,
                                 add_special_tokens=add_special_tokens, verbose=False)
            types = enc.get("token_type_ids")
            for j, i in enumerate(idx):
                out[i] = TokenizedPrompt(self._checked(enc["input_ids"][j], i), types[j] if types else None, skip)
        return out  # type: ignore[return-value]

    def pairs(self, first: list[str], second: list[str], params: list[PoolingParams]) -> list[TokenizedPrompt]:
        """Cross-encoder inputs: each (first, second) tokenized as one pair, with token type ids."""
        out: list[TokenizedPrompt] = []
        for i, (a, b, par) in enumerate(zip(first, second, params)):
            if not isinstance(a, str) or not isinstance(b, str):
                raise InvalidInputTypeError(f"score pair {i} must be two strings, got {type(a).__name__} and {type(b).__name__}")
            k = self._truncation(par)
            enc = self.tokenizer(a, b, truncation="longest_first" if k is not None else False, max_length=k,
                                 return_attention_mask=False, verbose=False)
            out.append(TokenizedPrompt(self._checked(enc["input_ids"], i), enc.get("token_type_ids")))
        return out

    def _checked(self, ids: list[int], i: int) -> list[int]:
        if len(ids) > self.max_model_len:
            raise InputTooLongError(
                f"This model's maximum context length is {self.max_model_len} tokens. However, you requested "
                f"{len(ids)} tokens in the input (prompt {i}). Please reduce the length of the input, or pass "
                f"truncate_prompt_tokens (-1 truncates to the maximum).", "input")
        if not ids:
            raise InvalidRequestError(f"Prompt {i} has no tokens", "input")
        return ids
