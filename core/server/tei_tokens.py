"""TEI's ``/tokenize`` answer rendered as JSON bytes on the tokenizer thread, and sent at the client's pace.

A 5 MB batch is ~1.8 M tokens: built as one dict per token and rendered on the event loop it stalled every
other request for seconds and kept hundreds of MB; rendered here, a chunk of tokens at a time into one
buffer, it costs its answer's bytes and no time on the event loop.
"""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator, Iterator
from json.encoder import encode_basestring as _json_str  # C: a str as a JSON string, non-ASCII as is (as serde)
from operator import itemgetter
from typing import Any

import numpy as np
from fastapi.responses import StreamingResponse

_ROW = '{"id":%d,"text":%s,"special":false,"start":%d,"stop":%d}'
_SPECIAL = '{"id":%d,"text":%s,"special":%s,"start":null,"stop":null}'
_CHUNK = 8192  # tokens rendered per step: no single C call holds the GIL for long, so the event loop keeps turning
_SEND = 1 << 20  # bytes of a rendered answer per send (send_json)


def tokens_json(tok: Any, texts: list[str], add_special_tokens: bool) -> bytearray:
    """TEI's ``/tokenize`` answer for ``texts``, rendered as JSON bytes where this runs (the tokenizer thread):
    a special token by its token string, any other by the text it covers, with byte offsets (TEI's tokenizer
    counts bytes; a Python fast tokenizer counts characters). Rows are formatted a chunk of tokens at a time
    into one buffer, no Python object per token kept: a 5 MB batch (~1.8 M tokens) costs its answer's bytes
    (122 MB), not 1.8 M dicts."""
    out = bytearray(b"[")
    for n, text in enumerate(texts):
        out += b"[" if n == 0 else b",["
        for k, chunk in enumerate(_token_rows(tok, text, add_special_tokens)):
            if k:
                out += b","
            out += chunk.encode()
        out += b"]"
    out += b"]"
    return out


def send_json(body: bytearray) -> StreamingResponse:
    """``body`` (JSON) handed to the server :data:`_SEND` bytes at a time, at the client's pace: what one send
    cannot write at once the server copies into its buffer, a second copy of a 122 MB answer."""

    async def pieces() -> AsyncIterator[memoryview]:
        with memoryview(body) as view:
            for at in range(0, len(view), _SEND):
                yield view[at:at + _SEND]

    return StreamingResponse(pieces(), media_type="application/json", headers={"content-length": str(len(body))})


def _token_rows(tok: Any, text: str, add_special_tokens: bool) -> Iterator[str]:
    """``text``'s tokens as JSON objects, comma-joined, :data:`_CHUNK` tokens per string."""
    enc = tok(text, add_special_tokens=add_special_tokens, return_offsets_mapping=tok.is_fast,
              return_special_tokens_mask=True, return_attention_mask=False, return_token_type_ids=False,
              verbose=False)
    ids, special, offsets = enc["input_ids"], enc["special_tokens_mask"], enc.get("offset_mapping")
    at = None if text.isascii() else _byte_offsets(text)
    for lo in range(0, len(ids), _CHUNK):
        part, marks = ids[lo:lo + _CHUNK], special[lo:lo + _CHUNK]
        if offsets is None:  # a slow tokenizer has no offsets: every token by its token string
            yield ",".join(_SPECIAL % (i, _json_str(s), "true" if m else "false")
                           for i, s, m in zip(part, tok.convert_ids_to_tokens(part), marks))
            continue
        spans = offsets[lo:lo + _CHUNK]
        starts, stops = list(map(itemgetter(0), spans)), list(map(itemgetter(1), spans))
        pieces = map(_json_str, map(text.__getitem__, map(slice, starts, stops)))
        if at is not None:
            starts, stops = at[starts].tolist(), at[stops].tolist()
        rows = list(map(_ROW.__mod__, zip(part, pieces, starts, stops)))
        for k in itertools.compress(range(len(rows)), marks):
            rows[k] = _SPECIAL % (part[k], _json_str(tok.convert_ids_to_tokens(part[k])), "true")
        yield ",".join(rows)


def _byte_offsets(text: str) -> np.ndarray:
    """The UTF-8 byte offset of each character index of ``text`` (and of its end)."""
    points = np.frombuffer(text.encode("utf-32-le"), dtype=np.uint32)
    at = np.zeros(len(points) + 1, dtype=np.int64)
    np.cumsum(1 + (points >= 0x80) + (points >= 0x800) + (points >= 0x10000), out=at[1:])
    return at
