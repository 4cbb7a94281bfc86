"""Attention over packed sequences: :class:`AttentionPlan` (built once per batch) and :func:`packed_attention`.

Linears run on the packed ``(N, C)`` tokens with no padding; only attention pads, and only to the
longest sequence of a run of similar lengths. One function serves every family's mask:

- full (BERT, RoBERTa, ModernBERT's global layers): padded keys masked;
- causal (Llama, Qwen2, Qwen3): ``is_causal`` on chunks without padding, else padding & lower triangle;
- local window (ModernBERT's local layers): query ``i`` sees key ``j`` iff ``|i - j| <= window``.

Grouped-query attention (``num_kv_heads``, Gemma3) takes the kv heads as they are projected.

At bf16/fp16, short sequences (up to :data:`PACK_MAX_LEN` tokens) are not padded one per row: several
are laid end to end in one row of up to :data:`PACK_ROW` slots, with a block-diagonal mask (at fp32
SDPA's masked rows cost more than the padding they save, so fp32 keeps one row each). SDPA's CPU kernel
costs about the same per row of 12 tokens as per row of 96 (its work is per head and row, not per
FLOP, at these sizes), so mixed 3-48 token texts, which dominate real traffic, run 1.2-1.5x faster there
on an AMX Xeon (about even on a Zen 5 EPYC; short sequences all of one length keep one mask-free row
each, which is faster still) (``python bench/kernels_micro.py``, its shared-rows table).

Masks are built once per plan and kind, and every layer of the forward pass reuses them.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F

_SDPA_GQA = tuple(int(p) for p in torch.__version__.split(".")[:2]) >= (2, 5)  # enable_gqa: grouped kv heads


PACK_MAX_LEN = 48  # sequences this short share attention rows (0: never)
PACK_ROW = 96  # slots of a shared row


def pack_rows(lengths: list[int], capacity: int) -> list[list[int]]:
    """First-fit over ``lengths`` sorted longest first: indices grouped so each group's lengths sum to
    at most ``capacity`` (a longer sequence gets a row of its own)."""
    rows: list[list[int]] = []
    room: list[int] = []
    for i, n in enumerate(lengths):
        for r, free in enumerate(room):
            if n <= free:
                rows[r].append(i)
                room[r] -= n
                break
        else:
            rows.append([i])
            room.append(capacity - n)
    return rows


def attention_chunks(lengths: list[int], max_waste: float = 0.15) -> list[tuple[int, int]]:
    """Split sequences (sorted longest first) into runs whose padding stays under ``max_waste``."""
    chunks, start = [], 0
    for i in range(1, len(lengths) + 1):
        if i == len(lengths) or lengths[i] < (1 - max_waste) * lengths[start]:
            chunks.append((start, i))
            start = i
    return chunks


class Chunk(NamedTuple):
    """``B`` sequences padded to ``T`` tokens: the gather that pads them and the rows that unpad them."""

    gather: torch.Tensor  # (B*T,) packed row of each padded slot; pads repeat the sequence's token 0
    rows: torch.Tensor  # (B*T,) packed row each slot's output goes to; pads go to a spare row (num_tokens)
    B: int
    T: int
    key_mask: torch.Tensor | None  # (B, 1, 1, T) bool, None when every slot is a key
    segments: tuple[torch.Tensor, torch.Tensor] | None = None  # rows shared by sequences: (B, T) sequence
    # of each slot (-1: padding) and its position in that sequence; key_mask is then (B, 1, T, T)


class AttentionPlan:
    """Gather indices that turn packed tokens into padded length-bucketed chunks, built once per batch."""

    def __init__(self, lengths: list[int], device: torch.device | str = "cpu", attend: list[int] | None = None) -> None:
        """``attend``: per sequence, how many leading tokens are keys (None: all of them); the others are
        still queries (PyLate's query expansion: [MASK]s that read the query but are not read)."""
        self.lengths = lengths
        self.num_tokens = sum(lengths)
        self.device = torch.device(device)
        self.attend = attend
        self.offsets = [0]
        for n in lengths:
            self.offsets.append(self.offsets[-1] + n)
        self._layouts: dict[bool, list[Chunk]] = {}
        self._masks: dict[tuple[bool, bool, int | None], list[tuple[torch.Tensor | None, bool]]] = {}

    @property
    def chunks(self) -> list[Chunk]:
        """The one-row-per-sequence layout (what fp32 attention runs)."""
        return self.layout(shared=False)

    def layout(self, shared: bool) -> list[Chunk]:
        """The chunks, built on first use: ``shared`` lets short sequences share rows (bf16/fp16, where it is
        faster; at fp32 SDPA's masked rows cost more than the padding they save)."""
        if shared not in self._layouts:
            self._layouts[shared] = self._build(shared)
        return self._layouts[shared]

    def _build(self, shared: bool) -> list[Chunk]:
        lengths, offsets, attend, device = self.lengths, self.offsets, self.attend, self.device
        order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
        short = [i for i in order if lengths[i] <= PACK_MAX_LEN] if shared and len(lengths) > 1 else []
        if len(short) > 1 and len({lengths[i] for i in short}) > 1:  # equal lengths: mask-free rows are faster
            order = order[:len(order) - len(short)]
        else:
            short = []
        sorted_lengths = [lengths[i] for i in order]
        chunks: list[Chunk] = []
        if short:
            chunks.append(self._shared_rows(short, offsets, attend))
        for lo, hi in attention_chunks(sorted_lengths):
            idx = order[lo:hi]
            T = sorted_lengths[lo]
            starts = torch.tensor([offsets[i] for i in idx], device=device)
            lens = torch.tensor([lengths[i] for i in idx], device=device)
            ar = torch.arange(T, device=device)
            valid = ar[None, :] < lens[:, None]  # (B, T)
            gather = torch.where(valid, starts[:, None] + ar[None, :], starts[:, None])  # pads repeat token 0
            keys = valid if attend is None else ar[None, :] < torch.tensor([attend[i] for i in idx], device=device)[:, None]
            uniform = bool(valid.all()) and bool(keys.all())
            rows = torch.where(valid, gather, self.num_tokens).reshape(-1)
            chunks.append(Chunk(gather.reshape(-1), rows, len(idx), T, None if uniform else keys[:, None, None, :]))
        return chunks

    def _shared_rows(self, seqs: list[int], offsets: list[int], attend: list[int] | None) -> Chunk:
        """One chunk of rows, each holding several short sequences end to end (block-diagonal mask)."""
        rows = pack_rows([self.lengths[i] for i in seqs], PACK_ROW)
        T = max(sum(self.lengths[seqs[j]] for j in row) for row in rows)
        gather, seg, pos, key = ([] for _ in range(4))
        for row in rows:
            g, sg, ps, ky = [], [], [], []
            for j in row:
                i = seqs[j]
                n = self.lengths[i]
                g += range(offsets[i], offsets[i] + n)
                sg += [i] * n
                ps += range(n)
                keys = n if attend is None else attend[i]
                ky += [p < keys for p in range(n)]
            pad = T - len(g)
            gather += g + [g[0]] * pad  # pads repeat the row's first token
            seg += sg + [-1] * pad
            pos += ps + [0] * pad
            key += ky + [False] * pad
        dev = self.device
        gather_t = torch.tensor(gather, device=dev)
        seg_t = torch.tensor(seg, device=dev).view(len(rows), T)
        valid = seg_t.reshape(-1) >= 0
        same = seg_t[:, :, None] == seg_t[:, None, :]  # (B, T, T)
        key_mask = (same & torch.tensor(key, device=dev).view(len(rows), 1, T))[:, None]  # (B, 1, T, T)
        return Chunk(gather_t, torch.where(valid, gather_t, self.num_tokens), len(rows), T, key_mask,
                     (seg_t, torch.tensor(pos, device=dev).view(len(rows), T)))

    def masks(self, causal: bool = False, window: int | None = None,
              shared: bool = False) -> list[tuple[torch.Tensor | None, bool]]:
        """Per chunk of :meth:`layout` (``shared``), SDPA's ``(attn_mask, is_causal)``; built on first use and
        cached for the next layers.

        ``window``: each query sees the keys within ``window`` positions of it (both sides); when no
        sequence is longer than ``window + 1`` the band covers everything and this is full attention.
        """
        if window is not None and max(self.lengths, default=0) <= window + 1:
            window = None
        key = (shared, causal, window)
        if key not in self._masks:
            self._masks[key] = [self._chunk_mask(chunk, causal, window) for chunk in self.layout(shared)]
        return self._masks[key]

    def _chunk_mask(self, chunk: Chunk, causal: bool, window: int | None) -> tuple[torch.Tensor | None, bool]:
        T, mask = chunk.T, chunk.key_mask  # (B, 1, 1, T) or None
        if chunk.segments is not None:  # shared rows: the order and distance that count are within a sequence
            pos = chunk.segments[1]
            if causal:
                mask = mask & (pos[:, None, :] <= pos[:, :, None])[:, None]
            if window is not None:
                mask = mask & ((pos[:, :, None] - pos[:, None, :]).abs() <= window)[:, None]
            return mask, False
        if window is not None and T > window + 1:
            ar = torch.arange(T, device=self.device)
            band = ((ar[:, None] - ar[None, :]).abs() <= window)[None, None]  # (1, 1, T, T)
            mask = band if mask is None else band & mask
        if causal and mask is not None:  # SDPA takes is_causal or a mask, not both
            return mask & torch.ones(T, T, dtype=torch.bool, device=self.device).tril(), False
        return mask, causal

    def __repr__(self) -> str:
        return f"AttentionPlan(seqs={len(self.lengths)}, tokens={self.num_tokens})"


def packed_attention(qkv: torch.Tensor, plan: AttentionPlan, num_heads: int, causal: bool = False,
                     window: int | None = None, num_kv_heads: int | None = None,
                     shared_rows: bool | None = None) -> torch.Tensor:
    """Full, causal or local-window (``window``) attention over packed sequences.

    :param qkv: ``(N, 3*C)``: the fused q, k, v projections of ``N`` tokens laid end to end; with
        ``num_kv_heads`` (grouped-query attention) ``(N, (H + 2*Hkv) * D)``, where q head ``j`` reads
        kv head ``j // (H / Hkv)`` (transformers' ``repeat_kv``): the kv heads are gathered once, not H / Hkv times.
    :param shared_rows: short sequences share rows (:meth:`AttentionPlan.layout`); None: at bf16/fp16 only.
    :returns: ``(N, C)``. Padded keys are masked; padded queries are computed and dropped.
    """
    H = num_heads
    Hkv = num_kv_heads or H
    if H % Hkv:
        raise ValueError(f"num_heads={H} is not a multiple of num_kv_heads={Hkv}")
    N = qkv.shape[0]
    C = H * (qkv.shape[1] // (H + 2 * Hkv))
    shared = qkv.dtype != torch.float32 if shared_rows is None else shared_rows
    chunks, masks = plan.layout(shared), plan.masks(causal, window, shared)
    if len(chunks) == 1 and chunks[0].B == 1 and chunks[0].segments is None:  # one sequence: no gather
        mask, is_causal = masks[0]
        return _sdpa(qkv.view(1, N, -1), H, Hkv, mask, is_causal).transpose(1, 2).reshape(N, C)
    out = torch.empty(N + 1, C, dtype=qkv.dtype, device=qkv.device)  # + a spare row the padded queries land in
    for chunk, (mask, is_causal) in zip(chunks, masks):
        B, T = chunk.B, chunk.T
        y = _sdpa(qkv.index_select(0, chunk.gather).view(B, T, -1), H, Hkv, mask, is_causal)  # (B, H, T, D)
        out.index_copy_(0, chunk.rows, y.transpose(1, 2).reshape(B * T, C))
    return out[:N]


def _sdpa(x: torch.Tensor, H: int, Hkv: int, mask: torch.Tensor | None, is_causal: bool) -> torch.Tensor:
    """``(B, T, (H + 2*Hkv) * D)`` fused q, k, v -> ``(B, H, T, D)``; grouped kv heads through SDPA's
    ``enable_gqa`` (torch >= 2.5, CPU), else repeated."""
    B, T = x.shape[:2]
    if Hkv == H:
        x = x.view(B, T, 3, H, -1).permute(2, 0, 3, 1, 4)  # (3, B, H, T, D)
        return F.scaled_dot_product_attention(x[0], x[1], x[2], attn_mask=mask, is_causal=is_causal)
    q, k, v = x.view(B, T, H + 2 * Hkv, -1).transpose(1, 2).split([H, Hkv, Hkv], dim=1)
    if _SDPA_GQA and x.device.type == "cpu":  # on CUDA, enable_gqa with a mask can leave the fused kernels
        return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=is_causal, enable_gqa=True)
    k, v = k.repeat_interleave(H // Hkv, dim=1), v.repeat_interleave(H // Hkv, dim=1)
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=is_causal)
