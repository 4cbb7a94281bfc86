"""``POST /classify``: class probabilities (or raw logits with ``use_activation: false``)."""

from fastapi import APIRouter, Request

from poolkit.params import PoolingParams
from poolkit.server.protocol import ClassificationData, ClassificationRequest, ClassificationResponse
from poolkit.server.routes.common import get_state, run_prompts, usage

router = APIRouter(tags=["classify"])


@router.post("/classify", response_model=ClassificationResponse)
async def classify(body: ClassificationRequest, request: Request) -> ClassificationResponse:
    params = PoolingParams(use_activation=body.use_activation, truncate_prompt_tokens=body.truncate_prompt_tokens,
                           truncation_side=body.truncation_side)
    state = get_state(request)
    served = state.model(body.model)
    prepared, outputs = await run_prompts(state, served, body.input, "classify", params, body.priority)
    labels = served.engine.id2label
    pooled = [o.outputs.data for o in outputs]
    data = [ClassificationData(index=i, label=labels.get(int(v.argmax())), probs=v.tolist(), num_classes=v.shape[-1])
            for i, v in enumerate(pooled)]
    return ClassificationResponse(model=served.name, data=data, usage=usage(prepared))
