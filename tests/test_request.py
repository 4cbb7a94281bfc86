"""The request seam: every path prepares a :class:`poolkit.request.Prepared` and runs it through one executor."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
import torch

from poolkit import Engine, PoolingParams, testing
from poolkit.request import Prepared
from poolkit.scoring import ScorePlan

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def engine(tiny_bert_dir):
    return Engine(str(tiny_bert_dir), max_batch_tokens=64)


def test_prepare_returns_one_named_request_and_execute_runs_several_together(engine):
    embed = engine.prepare(["a first text", "second"], "embed", PoolingParams(normalize=False))
    tokens = engine.prepare("every token", "token_embed")
    plan = engine.prepare_score("a query", ["one document", "another document"])
    assert isinstance(embed, Prepared) and isinstance(tokens, Prepared) and isinstance(plan, ScorePlan)
    assert embed.num_tokens == sum(len(t.ids) for t in embed.tokens)
    got_embed, got_tokens, got_scores = engine.execute([embed, tokens, plan])  # three adapters, one call
    want_embed = engine.embed(["a first text", "second"], PoolingParams(normalize=False))
    assert [o.prompt_token_ids for o in got_embed] == [o.prompt_token_ids for o in want_embed]
    assert testing.max_abs_diff(torch.stack([o.outputs.data for o in got_embed]),
                                torch.stack([o.outputs.data for o in want_embed])) <= 1e-6
    assert testing.max_abs_diff(got_tokens[0].outputs.data,
                                engine.encode("every token", task="token_embed")[0].outputs.data) <= 1e-6
    want_scores = [o.outputs.score for o in engine.score("a query", ["one document", "another document"])]
    assert [o.outputs.score for o in got_scores] == pytest.approx(want_scores, abs=1e-6)


def test_pool_returns_each_requests_tensors_in_prompt_order(engine):
    requests = [engine.prepare(["x " * n for n in (9, 1, 5)], "embed"), engine.prepare("alone", "embed")]
    pooled = engine.pool(requests)
    assert [len(p) for p in pooled] == [3, 1]
    for request, mine in zip(requests, pooled):
        assert all(testing.max_abs_diff(v, o.outputs.data) <= 1e-6 for v, o in zip(mine, request.finish(mine)))
    alone = engine.embed("x " * 5)[0].outputs.data
    assert testing.max_abs_diff(pooled[0][2], alone) <= 1e-6


def _calls_to_run(path: Path) -> list[tuple[int, str]]:
    """(line, what) for each ``<...>worker.run(...)`` call whose arguments carry a lambda."""
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "run" \
                and "worker" in ast.unparse(node.func.value):
            if any(isinstance(a, ast.Lambda) for a in [*node.args, *(k.value for k in node.keywords)]):
                found.append((node.lineno, ast.unparse(node)[:80]))
    return found


def test_no_lambda_carries_a_request_to_the_queue():
    """The server's queue is handed a named prepare call (``Engine.prepare``...), never a lambda or a split
    callable, so a reader (or a tool) follows a request from its route into the engine."""
    found = {str(p.relative_to(ROOT)): calls for p in sorted((ROOT / "core").rglob("*.py"))
             if (calls := _calls_to_run(p))}
    assert found == {}
