"""``POST /pooling``: any task by its ``task`` field, nested-list ``data``; the ``plugin`` task's IO
processor parses ``data`` and shapes the response."""

from fastapi import APIRouter, Request

from poolkit.params import PoolingParams
from poolkit.server.errors import APIError
from poolkit.server.protocol import PoolingData, PoolingRequest, PoolingResponse
from poolkit.server.routes.common import encode_vector, get_state, run_prompts, usage

router = APIRouter(tags=["pooling"])


@router.post("/pooling")
async def pooling(body: PoolingRequest, request: Request):
    state = get_state(request)
    if body.task == "plugin":
        served = state.model(body.model)
        run = getattr(served.engine, "serve_plugin_request", None)
        if run is None:
            raise APIError(400, "This poolkit build has no IO processor support")
        return await served.worker.run_in_tokenizer(run, body.data if body.data is not None else body.input)
    if body.input is None:
        raise APIError(400, "input is required (data is only for task 'plugin')", "input")
    params = PoolingParams(dimensions=body.dimensions, normalize=body.normalize, use_activation=body.use_activation,
                           truncate_prompt_tokens=body.truncate_prompt_tokens)
    served, tokens, pooled = await run_prompts(state, body.model, body.input, body.task, params)
    data = [PoolingData(index=i, data=encode_vector(v, body.encoding_format)) for i, v in enumerate(pooled)]
    return PoolingResponse(model=served.name, data=data, usage=usage(tokens))
