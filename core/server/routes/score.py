"""``POST /score``: pair scores, ``text_1``/``text_2`` or ``queries``/``documents``, 1:1, 1:N or N:N."""

from typing import Any

from fastapi import APIRouter, Request

from poolkit.params import PoolingParams
from poolkit.scoring import ScorePlan
from poolkit.server.errors import APIError
from poolkit.server.protocol import ScoreData, ScoreRequest, ScoreResponse, Usage
from poolkit.server.routes.common import get_state, require_text_list
from poolkit.server.state import ServedModel, ServerState

router = APIRouter(tags=["score"])


async def run_score(state: ServerState, served: ServedModel, first: Any, second: Any, params: PoolingParams,
                    priority: int = 0) -> tuple[ScorePlan, list[float]]:
    """Score pairs (``Engine.prepare_score`` on the tokenizer thread, the engine loop, ``ScorePlan.finish``):
    the plan and one score per pair."""
    state.check_batch_size(max(len(first), len(second)))
    plan, pooled = await served.worker.run(served.engine.prepare_score, first, second, params, priority=priority)
    return plan, [o.outputs.score for o in plan.finish(pooled)]


@router.post("/score", response_model=ScoreResponse)
@router.post("/v1/score", response_model=ScoreResponse, include_in_schema=False)
async def score(body: ScoreRequest, request: Request) -> ScoreResponse:
    first = body.text_1 if body.text_1 is not None else body.queries
    second = body.text_2 if body.text_2 is not None else body.documents
    if first is None or second is None:
        raise APIError(400, "Give text_1 and text_2 (or queries and documents)", "text_1")
    name_1, name_2 = ("text_1", "text_2") if body.text_1 is not None else ("queries", "documents")
    first, second = require_text_list(first, name_1), require_text_list(second, name_2)
    for values, name in ((first, name_1), (second, name_2)):
        if not values:
            raise APIError(400, f"{name} is empty: at least one {'document' if name in ('text_2', 'documents') else 'query'} "
                                f"is needed to score", name)
    params = PoolingParams(use_activation=body.use_activation, truncate_prompt_tokens=body.truncate_prompt_tokens,
                           truncation_side=body.truncation_side)
    state = get_state(request)
    served = state.model(body.model)
    plan, scores = await run_score(state, served, first, second, params, body.priority)
    n = plan.num_tokens
    return ScoreResponse(model=served.name, data=[ScoreData(index=i, score=s) for i, s in enumerate(scores)],
                         usage=Usage(prompt_tokens=n, total_tokens=n))
