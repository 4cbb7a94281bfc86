"""The input processor: prompts in any accepted shape -> token ids, with prompts and truncation applied.

Accepted prompts (vLLM's forms): a string, a list of strings, one list of token ids, a list of
token-id lists, ``{"prompt_token_ids": [...]}`` or ``{"prompt": "..."}``, or a list mixing them; images
as ``{"multi_modal_data": {"image": ...}}`` (:class:`ImagePrompt`, loaded by :mod:`poolkit.media`).
Texts are tokenized in one call per truncation length; nothing else touches the tokenizer.
"""

from __future__ import annotations

import copy
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from poolkit.config import SentenceTransformersConfig
from poolkit.errors import InputTooLongError, InvalidInputTypeError, InvalidRequestError, unencodable
from poolkit.params import PoolingParams
from poolkit.truncation import tokens_over, truncation_prefix

LONG_TEXT_CHARS = 16  # characters per kept token beyond which a text to truncate is tokenized as a prefix
EXACT_COUNT_CHARS = 65_536  # a text refused for length up to this size is tokenized whole, for its exact count


@dataclass
class TokenizedPrompt:
    """One request's tokens. ``skip`` leading tokens are the prompt, left out of pooling if configured.

    ``attend`` and ``keep`` are set by a model's ``prepare_prompts`` (see :class:`poolkit.batch.PackedBatch`):
    the leading tokens attention may read (None: all), the positions ``token_embed`` returns (None: all).
    """

    ids: list[int]
    token_types: list[int] | None = None
    skip: int = 0
    attend: int | None = None
    keep: list[int] | None = None
    pixel_values: Any = None
    """An image prompt's ``(3, H, W)`` pixels (its ``ids`` are then placeholders, one per vision token)."""


@dataclass(eq=False)  # hashed by identity: score plans key their embeddings by prompt
class ImagePrompt:
    """An image to embed: a PIL image, ``bytes``, a path or a URL (``data:``, ``http(s)://``, ``file://``).

    ``from_client``: it came from a server client, so a local path obeys ``allowed_local_media_path``.
    """

    image: Any
    from_client: bool = False


def text_error(text: str, at: int, what: str) -> str:
    """The message for a text that cannot be encoded: what it is, where the bad character is, what to do."""
    return (f"{what} is not valid Unicode text: it holds a lone UTF-16 surrogate (U+{ord(text[at]):04X}) at "
            f"character {at}, which UTF-8 cannot encode; send valid text (a surrogate only as half of a pair)")


def check_text(text: str, what: str, param: str | None = "input") -> None:
    """Refuse a text the tokenizer cannot read (it would raise a TypeError: our 500) as the request's fault."""
    at = unencodable(text)
    if at is not None:
        raise InvalidRequestError(text_error(text, at, what), param)


def image_prompt(prompt: dict, i: int) -> ImagePrompt:
    """vLLM's ``{"multi_modal_data": {"image": X}}`` (a ``"prompt"`` beside it must be empty) as an ImagePrompt."""
    data = prompt["multi_modal_data"]
    if not isinstance(data, dict) or set(data) != {"image"}:
        keys = sorted(data) if isinstance(data, dict) else type(data).__name__
        raise InvalidInputTypeError(f"prompt {i}: multi_modal_data must be {{'image': ...}}, got {keys}")
    if prompt.get("prompt") or prompt.get("prompt_token_ids"):
        raise InvalidRequestError(f"prompt {i} has both text and an image; embed them as separate prompts", "input")
    if isinstance(data["image"], (list, tuple)):
        raise InvalidRequestError(f"prompt {i} has {len(data['image'])} images; give one image per prompt", "input")
    return ImagePrompt(data["image"])


def score_items(value: Any) -> list[Any]:
    """One side of a score request as a list: texts as they are, image prompts as :class:`ImagePrompt`."""
    items = [value] if isinstance(value, (str, dict, ImagePrompt)) else list(value)
    return [image_prompt(v, i) if isinstance(v, dict) and "multi_modal_data" in v else v for i, v in enumerate(items)]


class Prompts(list):
    """What :func:`normalize_prompts` returns: texts, token-id lists and image prompts, already checked, so a
    caller that normalized a request (the server, to count it) hands it on and it is not normalized again."""


def normalize_prompts(prompts: Any) -> Prompts:
    """Flatten the accepted prompt shapes into a list of texts, token-id lists and image prompts."""
    if isinstance(prompts, Prompts):
        return prompts
    if isinstance(prompts, (str, dict, ImagePrompt)):
        prompts = [prompts]
    if not isinstance(prompts, (list, tuple)):
        raise InvalidInputTypeError(f"prompts must be a string, a list of strings or token ids, got {type(prompts).__name__}")
    if prompts and all(isinstance(t, int) and not isinstance(t, bool) for t in prompts):
        return Prompts([list(prompts)])  # one prompt given as token ids
    out = Prompts()
    for i, p in enumerate(prompts):
        if isinstance(p, dict) and "multi_modal_data" in p:
            p = image_prompt(p, i)
        if isinstance(p, ImagePrompt):
            out.append(p)
            continue
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
        self._tokenizer = tokenizer
        self._local = threading.local()  # a thread given a tokenizer of its own (use_tokenizer)
        self.vocab_size = vocab_size
        self.max_model_len = max_model_len
        self.st = st
        self.include_prompt = include_prompt
        self.auto_truncate = auto_truncate

    @property
    def tokenizer(self) -> Any:
        """The tokenizer of the calling thread: the model's, or the copy :meth:`use_tokenizer` gave it."""
        return getattr(self._local, "tokenizer", self._tokenizer)

    @tokenizer.setter
    def tokenizer(self, value: Any) -> None:
        self._tokenizer = value

    def copy_tokenizer(self) -> Any:
        """A copy of the model's tokenizer for a thread of its own (:meth:`use_tokenizer`). An HF fast tokenizer
        is reconfigured by each call (truncation, side), so two threads may share one only under a lock;
        with a copy, a thread tokenizing a huge request runs beside the one serving small requests (the
        Rust tokenizer releases the GIL). Make it while no other thread tokenizes (the server's lock)."""
        return copy.deepcopy(self._tokenizer)

    def use_tokenizer(self, tokenizer: Any) -> None:
        """From now on the calling thread tokenizes with ``tokenizer`` (a :meth:`copy_tokenizer`)."""
        self._local.tokenizer = tokenizer

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

    def prompt_role(self, prompt_name: str | None) -> str | None:
        """The prompt name a request runs under (``query``, ``document``...): given, else the model's default."""
        if prompt_name is not None:
            return prompt_name
        return self.st.default_prompt_name if self.st else None

    def _truncation(self, params: PoolingParams) -> int | None:
        """The length this request's prompts are cut to, or None (then longer prompts are errors)."""
        k = params.truncate_prompt_tokens
        if k is not None and (k == 0 or k < -1):  # set past PoolingParams' validation (model_copy)
            raise InvalidRequestError(f"truncate_prompt_tokens must be -1 (the model's max_model_len) or at least 1, "
                                      f"got {k}", "truncate_prompt_tokens")
        auto = self.auto_truncate if params.auto_truncate is None else params.auto_truncate
        if k is None and auto:
            k = self.max_model_len
        if k == -1:
            k = self.max_model_len
        if k is not None and k > self.max_model_len:
            raise InvalidRequestError(f"truncate_prompt_tokens={k} is larger than the model's "
                                      f"max_model_len={self.max_model_len}", "truncate_prompt_tokens")
        return k

    @contextmanager
    def _truncating_from(self, side: str | None) -> Iterator[None]:
        """The tokenizer truncating from ``side`` for one call: HF tokenizers read ``truncation_side`` off the
        instance when called (calls are serialized already: the server's tokenizer lock)."""
        before = getattr(self.tokenizer, "truncation_side", None)
        if side is None or before is None or side == before:
            yield
            return
        self.tokenizer.truncation_side = side
        try:
            yield
        finally:
            self.tokenizer.truncation_side = before

    def __call__(self, prompts: list[str | list[int]], params: list[PoolingParams],
                 instruction: str | None = None, add_special_tokens: bool = True) -> list[TokenizedPrompt]:
        out: list[TokenizedPrompt | None] = [None] * len(prompts)
        groups: dict[tuple[int | None, str | None], list[int]] = {}
        for i, (p, par) in enumerate(zip(prompts, params)):
            k = self._truncation(par)
            if isinstance(p, list):
                ids = p if k is None else (p[max(len(p) - k, 0):] if par.truncation_side == "left" else p[:k])
                bad = [t for t in ids if t < 0 or (self.vocab_size is not None and t >= self.vocab_size)]
                if bad:
                    raise InvalidRequestError(f"Prompt {i} has token ids outside the vocabulary [0, {self.vocab_size}): {bad[:5]}")
                out[i] = TokenizedPrompt(self._checked(ids, i))
            else:
                check_text(p, f"input {i}")
                groups.setdefault((k, par.truncation_side), []).append(i)
        if instruction:
            check_text(instruction, "the instruction prompt", "prompt")
        skip = 0
        if instruction and not self.include_prompt:
            skip = len(self.tokenizer(instruction)["input_ids"]) - 1  # as ST: the prompt without its last token
        for (k, side), idx in groups.items():
            texts = [(instruction or "") + prompts[i] for i in idx]
            if self.st is not None and self.st.do_lower_case:
                texts = [t.lower() for t in texts]
            if k is not None and side != "left":  # a long text is cut to a prefix with the same first k tokens
                texts = [truncation_prefix(self.tokenizer, t, k, add_special_tokens)
                         if len(t) > LONG_TEXT_CHARS * k else t for t in texts]
            elif k is None:  # a long text that may not be truncated is refused from a prefix
                for i, t in zip(idx, texts):
                    self._refuse_long(t, i, add_special_tokens)
            with self._truncating_from(side):
                enc = self.tokenizer(texts, truncation=k is not None, max_length=k, return_attention_mask=False,
                                     add_special_tokens=add_special_tokens, verbose=False)
            types = enc.get("token_type_ids")
            for j, i in enumerate(idx):
                out[i] = TokenizedPrompt(self._checked(enc["input_ids"][j], i), types[j] if types else None, skip)
        return out  # type: ignore[return-value]

    def pairs(self, first: list[str], second: list[str], params: list[PoolingParams]) -> list[TokenizedPrompt]:
        """Cross-encoder inputs: the (first, second) pairs tokenized together in one call per truncation
        length, with token type ids, as Sentence Transformers' ``CrossEncoder.predict`` does (a pair with an
        empty document is ``[CLS] q [SEP] [SEP]`` that way; tokenizing it alone would drop the second part)."""
        groups: dict[tuple[int | None, str | None], list[int]] = {}
        for i, (a, b, par) in enumerate(zip(first, second, params)):
            if not isinstance(a, str) or not isinstance(b, str):
                raise InvalidInputTypeError(f"score pair {i} must be two strings, got {type(a).__name__} and {type(b).__name__}")
            check_text(a, f"pair {i} (its first text)", "text_1")
            check_text(b, f"pair {i} (its second text)", "text_2")
            groups.setdefault((self._truncation(par), par.truncation_side), []).append(i)
        out: list[TokenizedPrompt | None] = [None] * len(first)
        for (k, side), idx in groups.items():
            firsts, seconds = [first[i] for i in idx], [second[i] for i in idx]
            if k is None:  # refused from a prefix (a pair's tokens hold each text's own)
                for i, a, b in zip(idx, firsts, seconds):
                    self._refuse_long(a, i, False)
                    self._refuse_long(b, i, False)
            elif side != "left":
                seconds = [self._pair_prefix(a, b, k) for a, b in zip(firsts, seconds)]
            with self._truncating_from(side):
                enc = self.tokenizer(firsts, seconds,
                                     truncation="longest_first" if k is not None else False, max_length=k,
                                     return_attention_mask=False, verbose=False)
            types = enc.get("token_type_ids")
            for j, i in enumerate(idx):
                out[i] = TokenizedPrompt(self._checked(enc["input_ids"][j], i), types[j] if types else None)
        return out  # type: ignore[return-value]

    def _pair_prefix(self, first: str, second: str, k: int) -> str:
        """A long second text cut to a prefix with more than ``k`` tokens of its own: ``longest_first`` then
        keeps exactly the tokens it keeps of the whole text, as long as the first text is shorter than the
        prefix (which of the two is longer decides what is cut), so only beside a first text of at most k."""
        if len(second) <= LONG_TEXT_CHARS * k:
            return second
        if len(self.tokenizer(first, add_special_tokens=False, verbose=False)["input_ids"]) > k:
            return second
        return truncation_prefix(self.tokenizer, second, k, False)

    def _refuse_long(self, text: str, i: int, add_special_tokens: bool) -> None:
        """An InputTooLongError for a text far over the limit, told from a bounded prefix of it (milliseconds
        for megabytes), without tokenizing it whole."""
        if len(text) <= max(LONG_TEXT_CHARS * self.max_model_len, EXACT_COUNT_CHARS):
            return  # cheap enough to count exactly (vLLM's message gives the count)
        n = tokens_over(self.tokenizer, text, self.max_model_len, add_special_tokens)
        if n is not None:
            raise InputTooLongError(
                f"This model's maximum context length is {self.max_model_len} tokens. However, you requested "
                f"at least {n} tokens in the input (prompt {i}, {len(text)} characters; counted on a prefix). Please reduce the length "
                f"of the input, or pass truncate_prompt_tokens (-1 truncates to the maximum).", "input")

    def _checked(self, ids: list[int], i: int) -> list[int]:
        if len(ids) > self.max_model_len:
            raise InputTooLongError(
                f"This model's maximum context length is {self.max_model_len} tokens. However, you requested "
                f"{len(ids)} tokens in the input (prompt {i}). Please reduce the length of the input, or pass "
                f"truncate_prompt_tokens (-1 truncates to the maximum).", "input")
        if not ids:
            raise InvalidRequestError(f"Prompt {i} has no tokens", "input")
        return ids
