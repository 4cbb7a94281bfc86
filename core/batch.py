"""The packed batch every native model consumes (tokens of all sequences laid end to end), and the one
batching rule the offline Engine and the server share (:func:`batch_fits`, :func:`make_batches`)."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from poolkit.layers.attention import AttentionPlan


@dataclass
class PackedBatch:
    """``N = sum(lengths)`` tokens of ``B`` sequences, no padding.

    ``skip`` counts leading tokens per sequence that poolers ignore (a prompt when the Sentence
    Transformers config says ``include_prompt: false``). ``attend`` (None: all) counts the leading
    tokens per sequence that attention may look at: later ones (PyLate's query expansion [MASK]s) are
    computed but never attended to, as padding under an attention mask of 0. ``keep`` (None: all)
    lists, per sequence, the positions whose vectors ``token_embed`` returns.
    """

    input_ids: torch.Tensor  # (N,) int64
    lengths: list[int]  # (B,)
    token_type_ids: torch.Tensor | None = None  # (N,) int64
    skip: list[int] | None = None
    attend: list[int] | None = None
    keep: list[list[int] | None] | None = None
    _plan: AttentionPlan | None = field(default=None, repr=False)

    @classmethod
    def from_token_lists(cls, ids: list[list[int]], token_types: list[list[int]] | None = None,
                         skip: list[int] | None = None, device: str | torch.device = "cpu",
                         attend: list[int | None] | None = None,
                         keep: list[list[int] | None] | None = None) -> PackedBatch:
        flat = torch.tensor([t for seq in ids for t in seq], dtype=torch.long, device=device)
        tt = None
        if token_types is not None and any(any(seq) for seq in token_types):
            tt = torch.tensor([t for seq in token_types for t in seq], dtype=torch.long, device=device)
        lengths = [len(seq) for seq in ids]
        if attend is not None:
            attend = [len(seq) if a is None else a for seq, a in zip(ids, attend)]
            attend = None if attend == lengths else attend
        if keep is not None and all(k is None for k in keep):
            keep = None
        return cls(flat, lengths, tt, skip, attend, keep)

    @property
    def device(self) -> torch.device:
        return self.input_ids.device

    @property
    def cu_seqlens(self) -> torch.Tensor:
        """``(B+1,)`` start offsets of each sequence, then the total."""
        lengths = torch.tensor(self.lengths, device=self.device)
        return torch.nn.functional.pad(lengths.cumsum(0), (1, 0))

    @property
    def positions(self) -> torch.Tensor:
        """``(N,)`` position of each token inside its own sequence."""
        lengths = torch.tensor(self.lengths, device=self.device)
        starts = self.cu_seqlens[:-1].repeat_interleave(lengths)
        return torch.arange(self.input_ids.numel(), device=self.device) - starts

    @property
    def seq_ids(self) -> torch.Tensor:
        """``(N,)`` index of the sequence each token belongs to."""
        lengths = torch.tensor(self.lengths, device=self.device)
        return torch.arange(len(self.lengths), device=self.device).repeat_interleave(lengths)

    @property
    def attention_plan(self) -> AttentionPlan:
        if self._plan is None:
            self._plan = AttentionPlan(self.lengths, self.device, self.attend)
        return self._plan


# --- the batching rule ----------------------------------------------------------------------------


def batch_fits(n_seqs: int, longest: int, max_batch_tokens: int) -> bool:
    """The batching rule, for the offline Engine and the server alike: a batch of ``n_seqs`` sequences whose
    longest has ``longest`` tokens fits when its padded size (what attention pays for) is within budget."""
    return n_seqs * longest <= max_batch_tokens


def make_batches(lengths: list[int], max_batch_tokens: int) -> list[list[int]]:
    """Group request indices, longest first, so each batch fits the budget (:func:`batch_fits`).

    Since lengths are sorted, the padded size is close to the packed token count the linears pay
    for. A request longer than the budget runs alone.
    """
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    batches: list[list[int]] = []
    for i in order:
        if batches and batch_fits(len(batches[-1]) + 1, lengths[batches[-1][0]], max_batch_tokens):
            batches[-1].append(i)
        else:
            batches.append([i])
    return batches
