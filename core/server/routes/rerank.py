"""``POST /rerank``, ``/v1/rerank``, ``/v2/rerank``: Jina / Cohere rerank shapes; ``/rerank`` with TEI's
``texts`` body instead of ``documents`` is TEI's rerank (routes/tei.py), answered in TEI's shape."""

from typing import Annotated, Any

from fastapi import APIRouter, Body, Request

from poolkit.params import PoolingParams
from poolkit.server.errors import APIError
from poolkit.server.protocol import RerankDocument, RerankRequest, RerankResponse, RerankResult, RerankUsage
from poolkit.scoring import rerank_order
from poolkit.server.protocol_tei import TEIRerankRequest
from poolkit.server.routes import tei
from poolkit.server.routes.common import get_state, texts_checked
from poolkit.server.routes.score import run_score

router = APIRouter(tags=["rerank"])


@router.post("/rerank", response_model=RerankResponse, summary="Rerank (Jina/Cohere documents, or TEI texts)",
             openapi_extra=tei.body_schema(RerankRequest, TEIRerankRequest))
async def rerank_or_tei(data: Annotated[dict[str, Any], Body()], request: Request) -> Any:
    if "texts" in data and "documents" not in data:
        return await tei.answer(texts_checked(tei.rerank), TEIRerankRequest, data, request)
    return await rerank(tei.validate_body(RerankRequest, data), request)


@router.post("/v1/rerank", response_model=RerankResponse)
@router.post("/v2/rerank", response_model=RerankResponse)
async def rerank(body: RerankRequest, request: Request) -> RerankResponse:
    state = get_state(request)
    docs = [d if isinstance(d, str) else d.text for d in body.documents]
    if not docs:
        raise APIError(400, "documents is empty: at least one document is needed to rerank", "documents")
    params = PoolingParams(truncate_prompt_tokens=body.truncate_prompt_tokens,
                           truncation_side=body.truncation_side)
    served = state.model(body.model)
    plan, scores = await run_score(state, served, [body.query], docs, params, body.priority)
    order = rerank_order(scores, body.top_n)
    results = [RerankResult(index=i, relevance_score=scores[i],
                            document=RerankDocument(text=docs[i]) if body.return_documents else None) for i in order]
    return RerankResponse(model=served.name, usage=RerankUsage(total_tokens=plan.num_tokens), results=results)
