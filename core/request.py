"""The request seam: :class:`Prepared`, one request after ``Engine.prepare``, the only thing that travels the pipeline.

Every path builds one (``Engine.prepare``, ``Engine.prepare_score``, the ``plugin`` task's runner) and
hands it, with others, to one executor: ``Engine.execute`` offline (Engine methods, ``poolkit embed``
jobs, Ray) or the server's queue (which batches the prompts of many requests through
``Engine.run_batch``). Either way the pooled tensors come back in prompt order and
:meth:`Prepared.finish` turns them into what the caller gets, so a reader follows one named object from
a route to its response. Subclasses change only ``finish``: pair scores (:class:`poolkit.scoring.ScorePlan`),
an IO processor's output (:class:`poolkit.io_runner.PluginRequest`).
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from poolkit.outputs import PoolingRequestOutput

if TYPE_CHECKING:
    from poolkit.inputs import TokenizedPrompt
    from poolkit.params import PoolingParams
    from poolkit.tasks import TaskAdapter

_request_ids = itertools.count()


def request_id() -> str:
    """A new output id (one per prompt), unique in this process."""
    return str(next(_request_ids))


@dataclass
class Prepared:
    """One request, validated and tokenized: its task adapter, one tokenized prompt and one params per prompt.

    :meth:`finish` turns the pooled tensors of its prompts (in order) into the caller's result: here one
    :class:`PoolingRequestOutput` per prompt, ``adapter.output_cls`` wrapping each tensor.
    """

    adapter: TaskAdapter
    tokens: list[TokenizedPrompt]
    params: list[PoolingParams]

    def finish(self, pooled: list[Any]) -> Any:
        return [PoolingRequestOutput(request_id(), t.ids, self.adapter.output_cls(v))
                for t, v in zip(self.tokens, pooled)]

    @property
    def num_tokens(self) -> int:
        """The tokens this request runs (what a response's usage counts)."""
        return sum(len(t.ids) for t in self.tokens)


def per_request(requests: list[Prepared], pooled: list[Any]) -> list[list[Any]]:
    """``pooled`` (every prompt of ``requests``, in order) cut back into one list per request."""
    out, start = [], 0
    for r in requests:
        out.append(pooled[start:start + len(r.tokens)])
        start += len(r.tokens)
    return out
