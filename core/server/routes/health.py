"""``GET``/``HEAD /health`` (200 when serving, 503 while loading or shutting down), ``GET /version`` and
``GET /metrics``. Health and version need no API key (middleware.OPEN_PATHS)."""

from fastapi import APIRouter, Request, Response

from poolkit.server.errors import error_response
from poolkit.server.routes.common import get_state

router = APIRouter(tags=["health"])


@router.get("/health")
async def health(request: Request) -> Response:
    state = get_state(request)
    if state.shutting_down:
        return error_response(503, "shutting down")
    if not state.ready:
        return error_response(503, f"model failed to load: {state.load_error}" if state.load_error else "loading")
    return Response(status_code=200)


router.add_api_route("/health", health, methods=["HEAD"], include_in_schema=False)  # load balancers probe with HEAD


@router.get("/version")
async def version() -> dict[str, str]:
    """poolkit's version, as vLLM's ``GET /version`` answers it: ``{"version": "0.1.0"}``."""
    from poolkit import __version__

    return {"version": __version__}


@router.get("/metrics")
async def metrics(request: Request) -> Response:
    from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

    return Response(generate_latest(get_state(request).metrics.registry), media_type=CONTENT_TYPE_LATEST)
