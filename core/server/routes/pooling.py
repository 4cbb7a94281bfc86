"""``POST /pooling``: any task by its ``task`` field, nested-list ``data``; the ``plugin`` task's IO
processor parses ``data`` and shapes the response."""

from typing import Any

from fastapi import APIRouter, Request

from poolkit.inputs import ImagePrompt
from poolkit.params import PoolingParams
from poolkit.server.errors import APIError
from poolkit.server.messages import messages_prompt
from poolkit.server.protocol import PoolingRequest, PoolingResponse
from poolkit.server.routes.common import encode_vector, get_state, json_response, run_prompts, usage

router = APIRouter(tags=["pooling"])


async def run_plugin(state: Any, served: Any, data: Any, priority: int = 0) -> dict[str, Any]:
    """The ``plugin`` task: the IO processor parses and pre-processes on the tokenizer thread (``prepare_all``:
    one ``PluginRequest`` per raw request), their prompts are batched with everyone's by the engine loop, and
    each request's ``finish`` (post_process) runs on the tokenizer thread.

    ``data`` is one request, or a list of them (the response's ``data`` is then a list too).
    """
    runner = served.engine.io_processor
    if runner is None:
        from poolkit.io_runner import not_configured_error

        raise not_configured_error(served.engine)
    raws = list(data) if isinstance(data, (list, tuple)) else [data]
    state.check_batch_size(len(raws))
    # direct=False: the plugin's own code runs on the tokenizer thread, never on the shared engine loop
    requests, pooled = await served.worker.run(runner.prepare_all, raws, direct=False, priority=priority)
    return await served.worker.run_in_tokenizer(runner.respond, data, requests, pooled)


@router.post("/pooling")
async def pooling(body: PoolingRequest, request: Request):
    state = get_state(request)
    if body.task == "plugin":
        return await run_plugin(state, state.model(body.model), body.data if body.data is not None else body.input,
                                body.priority)
    if (body.input is None) == (body.messages is None):
        raise APIError(400, "Give either input or messages (data is only for task 'plugin')", "input")
    served = state.model(body.model)
    prompts = body.input
    if body.messages is not None:  # the chat template and its tokenizing on the tokenizer thread, not the event loop
        prompts = [await served.worker.run_in_tokenizer(messages_prompt, body.messages, served.engine,
                                                        body.add_generation_prompt, body.continue_final_message)]
    params = PoolingParams(dimensions=body.dimensions, normalize=body.normalize, use_activation=body.use_activation,
                           truncate_prompt_tokens=body.truncate_prompt_tokens,
                           truncation_side=body.truncation_side)
    prepared, outputs = await run_prompts(state, served, prompts, body.task, params, body.priority,
                                          direct=body.messages is None or not isinstance(prompts[0], ImagePrompt),
                                          prompt_name=body.prompt_name)
    out = PoolingResponse(model=served.name, data=[], usage=usage(prepared)).model_dump()
    out["data"] = [{"index": i, "object": "pooling",
                    "data": encode_vector(o.outputs.data, body.encoding_format, body.embed_dtype, body.endianness)}
                   for i, o in enumerate(outputs)]
    return json_response(out)  # PoolingResponse's shape, vectors written by orjson
