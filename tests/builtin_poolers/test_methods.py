"""Pooling methods on packed tokens vs plain-torch reference math on the padded batch."""

from __future__ import annotations

import pytest
import torch

from poolkit.batch import PackedBatch
from poolkit.builtin_poolers import activations
from poolkit.builtin_poolers.methods import AllPool, CLSPool, LastPool, MaxPool, StepPool
from poolkit.pooling import MeanPool
from poolkit.config import PoolerConfig

LENGTHS = [3, 1, 6, 4]


@pytest.fixture
def data():
    g = torch.Generator().manual_seed(0)
    ids = [torch.randint(5, 50, (n,), generator=g).tolist() for n in LENGTHS]
    ids[2][3] = 7  # a step tag
    ids[0][1] = 7
    batch = PackedBatch.from_token_lists(ids)
    hidden = torch.randn(sum(LENGTHS), 8, generator=g)
    padded = torch.zeros(len(LENGTHS), max(LENGTHS), 8)
    mask = torch.zeros(len(LENGTHS), max(LENGTHS))
    for b, part in enumerate(hidden.split(LENGTHS)):
        padded[b, : len(part)], mask[b, : len(part)] = part, 1
    return batch, hidden, padded, mask, ids


def test_cls_last_mean_max(data):
    batch, hidden, padded, mask, _ = data
    lens = torch.tensor(LENGTHS)
    assert torch.equal(CLSPool()(hidden, batch), padded[:, 0])
    assert torch.equal(LastPool()(hidden, batch), padded[torch.arange(4), lens - 1])
    mean = (padded * mask[..., None]).sum(1) / mask.sum(1, keepdim=True)  # Sentence Transformers' formula
    assert torch.allclose(MeanPool()(hidden, batch), mean, atol=1e-6)
    mx = padded.masked_fill(mask[..., None] == 0, -1e9).max(1).values
    assert torch.equal(MaxPool()(hidden, batch), mx)


def test_mean_skips_prompt_tokens(data):
    batch, hidden, padded, mask, _ = data
    batch.skip = [1, 0, 2, 0]
    mask = mask.clone()
    mask[0, :1] = 0
    mask[2, :2] = 0
    want = (padded * mask[..., None]).sum(1) / mask.sum(1, keepdim=True)
    assert torch.allclose(MeanPool()(hidden, batch), want, atol=1e-6)


def test_all_and_step(data):
    batch, hidden, _, _, ids = data
    for got, want in zip(AllPool()(hidden, batch), hidden.split(LENGTHS)):
        assert torch.equal(got, want)
    steps = StepPool(PoolerConfig(step_tag_id=7))(hidden, batch)
    for got, part, seq in zip(steps, hidden.split(LENGTHS), ids):
        assert torch.equal(got, part[torch.tensor(seq) == 7])
    assert [len(s) for s in steps] == [1, 0, 1, 0]


def test_methods_declare_tasks():
    assert "embed" in MeanPool.supported_tasks and "embed" not in AllPool.supported_tasks
    assert StepPool.supported_tasks == {"token_classify"}


def test_activations():
    x = torch.tensor([[3.0, 4.0]])
    assert torch.allclose(activations.normalize(x), torch.tensor([[0.6, 0.8]]))
    assert torch.allclose(activations.softmax(x).sum(-1), torch.ones(1))
    assert torch.allclose(activations.sigmoid(torch.zeros(1)), torch.tensor([0.5]))
    assert torch.equal(activations.identity(x), x)
