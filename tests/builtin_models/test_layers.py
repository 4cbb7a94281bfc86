"""poolkit.layers: one packed attention for full, causal and local masks (built once per plan), the old names."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from poolkit.layers import AttentionPlan, packed_attention
from tests.builtin_models.helpers import PARITY_TOL

LENGTHS = [1, 2, 9, 10, 17, 30, 33, 60, 61, 45, 5]  # several chunks, padded and not, some longer than the window


def _reference(qkv, lengths, heads, causal, window):
    """Each sequence alone, with its mask written out in full."""
    out, start = [], 0
    for n in lengths:
        q, k, v = qkv[start:start + n].view(n, 3, heads, -1).permute(1, 2, 0, 3)  # (H, n, D) each
        i = torch.arange(n)
        allowed = torch.ones(n, n, dtype=torch.bool)
        if causal:
            allowed &= i[None, :] <= i[:, None]
        if window is not None:
            allowed &= (i[:, None] - i[None, :]).abs() <= window
        out.append(F.scaled_dot_product_attention(q, k, v, attn_mask=allowed).transpose(0, 1).reshape(n, -1))
        start += n
    return torch.cat(out)


@pytest.mark.parametrize("causal,window", [(False, None), (True, None), (False, 4), (True, 8)])
@pytest.mark.parametrize("lengths", [LENGTHS, [61]], ids=["mixed", "one"])
def test_packed_attention_matches_per_sequence_masks(causal, window, lengths):
    heads, C = 4, 32
    qkv = torch.randn(sum(lengths), 3 * C, generator=torch.Generator().manual_seed(0))
    plan = AttentionPlan(lengths)
    got = packed_attention(qkv, plan, heads, causal=causal, window=window)
    assert float((got - _reference(qkv, lengths, heads, causal, window)).abs().max()) <= PARITY_TOL


def test_masks_are_built_once_per_plan():
    plan = AttentionPlan(LENGTHS)
    assert plan.masks(causal=True) is plan.masks(causal=True)
    assert plan.masks(window=4) is plan.masks(window=4)
    assert plan.masks(window=1000) is plan.masks()  # a window covering every sequence is full attention
    assert all(mask is None and is_causal for mask, is_causal in AttentionPlan([60, 60]).masks(causal=True))


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("window", [None, 3])
@pytest.mark.parametrize("with_attend", [False, True])
def test_shared_attention_rows_match_one_row_per_sequence(monkeypatch, causal, window, with_attend):
    """Short sequences laid end to end in shared rows (block-diagonal mask, the bf16 layout) give each sequence
    its own attention: the same as one row per sequence (PACK_MAX_LEN = 0)."""
    import poolkit.layers.attention as attention

    g = torch.Generator().manual_seed(0)
    lengths = [100, 47, 48, 49, 3, 3, 3, 1, 1, 60, 20, 14, 13, 5, 30, 2]
    attend = [max(1, n - 2) for n in lengths] if with_attend else None
    qkv = torch.randn(sum(lengths), 3 * 2 * 4, generator=g)  # fp32, so the comparison is exact to fp32 rounding
    shared = attention.AttentionPlan(lengths, attend=attend)
    assert any(c.segments is not None for c in shared.layout(shared=True))
    got = attention.packed_attention(qkv, shared, 2, causal=causal, window=window, shared_rows=True)
    monkeypatch.setattr(attention, "PACK_MAX_LEN", 0)
    alone = attention.AttentionPlan(lengths, attend=attend)
    assert all(c.segments is None for c in alone.layout(shared=True))
    want = attention.packed_attention(qkv, alone, 2, causal=causal, window=window, shared_rows=True)
    assert (got - want).abs().max().item() <= 1e-6


def test_fp32_keeps_one_row_per_sequence_and_bf16_shares():
    plan = AttentionPlan([40, 30, 12, 5])
    assert all(c.segments is None for c in plan.layout(shared=False)) and plan.chunks is plan.layout(shared=False)
    assert any(c.segments is not None for c in plan.layout(shared=True))


def test_pack_rows_fills_rows_up_to_capacity():
    from poolkit.layers.attention import pack_rows

    rows = pack_rows([40, 30, 30, 20, 10, 5], 64)
    assert sorted(i for r in rows for i in r) == list(range(6))
    assert all(sum([40, 30, 30, 20, 10, 5][i] for i in r) <= 64 for r in rows)
    assert len(rows) == 3
