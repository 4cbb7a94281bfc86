"""``GET /v1/models``: the served models, their limits and tasks."""

from fastapi import APIRouter, Request

from poolkit.server.protocol import ModelCard, ModelList
from poolkit.server.routes.common import get_state

router = APIRouter(tags=["models"])


@router.get("/v1/models", response_model=ModelList)
async def list_models(request: Request) -> ModelList:
    state = get_state(request)
    state.model(None)  # 503 while loading
    return ModelList(data=[ModelCard(id=name, root=str(m.engine.model_config.name), max_model_len=m.engine.max_model_len,
                                     tasks=list(m.engine.supported_tasks)) for name, m in state.models.items()])
