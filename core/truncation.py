"""Long inputs cost what is kept: tokenize a bounded prefix of a text that will be truncated anyway.

Cutting a text just before a whitespace character that follows a non-whitespace one splits it
between two pre-tokens of every tokenizer family served here (BERT's WordPiece, byte-level BPE,
SentencePiece's Metaspace all split words at whitespace), so the prefix's tokens are the first
tokens of the whole text's. Once a prefix yields more tokens than the limit, truncating it gives
exactly the ids truncating the whole text gives, and a text that may not be truncated is over the
limit without being tokenized whole; until then the prefix grows (4x each time), and a text with no
such cut point (one endless "word") is tokenized whole. Only right-side truncation and refusal of
texts much longer than the limit take this path (a suffix cut has no such guarantee).
"""

from __future__ import annotations

import re
from typing import Any

CUT = re.compile(r"(?<=\S)[ \t\n\r]")  # a whitespace character after a non-whitespace one
CHARS_PER_TOKEN = 8  # a first prefix of 8 characters per kept token: rarely too short, never long


def truncation_prefix(tokenizer: Any, text: str, limit: int, add_special_tokens: bool = True) -> str:
    """``text`` itself, or a prefix of it whose tokens truncated to ``limit`` equal the whole text's."""
    return _prefix(tokenizer, text, limit, add_special_tokens)[0]


def tokens_over(tokenizer: Any, text: str, limit: int, add_special_tokens: bool = True) -> int | None:
    """The token count of a prefix of ``text`` that already exceeds ``limit`` (so the whole text does too: its
    tokens begin with the prefix's), or None when no prefix proves it. An input refused for its length is
    refused from a bounded prefix, never tokenized whole."""
    prefix, n = _prefix(tokenizer, text, limit, add_special_tokens)
    return n if len(prefix) < len(text) else None


def _prefix(tokenizer: Any, text: str, limit: int, add_special_tokens: bool) -> tuple[str, int]:
    """(a prefix with more than ``limit`` tokens, its token count), or (``text``, -1) if none was found."""
    size = max(256, CHARS_PER_TOKEN * limit)
    while size < len(text):
        match = CUT.search(text, size)
        if match is None:
            return text, -1
        prefix = text[:match.start()]
        n = len(tokenizer(prefix, add_special_tokens=add_special_tokens, verbose=False)["input_ids"])
        if n > limit:
            return prefix, n
        size = 4 * match.start()
    return text, -1
