"""``token_norms``: the L2 norm of every token's last hidden state, ``(L,)`` per sequence.

A rough, model-agnostic token salience (a token the model moves far from the origin stands out).
A task adapter pools packed hidden states ``(N, C)`` into one tensor per sequence and names the
output class the Engine wraps it in; ``check`` rejects parameters it cannot honour before any work.
"""

from __future__ import annotations

from poolkit import PoolingOutput, TaskAdapter


class TokenNormsOutput(PoolingOutput):
    """``token_norms``: one float per token."""

    @property
    def norms(self) -> list[float]:
        return self.data.tolist()


class TokenNormsTask(TaskAdapter):
    name, output_cls = "token_norms", TokenNormsOutput

    def check(self, params):
        if params.dimensions is not None or params.normalize is not None or params.use_activation is not None:
            raise ValueError("token_norms takes no dimensions, normalize or use_activation")

    def pool(self, hidden, batch, params):
        return list(hidden.norm(dim=-1).split(batch.lengths))  # (L_i,) each
