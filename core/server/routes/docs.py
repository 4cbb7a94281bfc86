"""``GET /docs``: Swagger UI for ``/openapi.json``, served from the ``fastapi-swagger`` package.

FastAPI's default page loads Swagger UI from a CDN, which is blank on a machine without internet.
``fastapi-swagger`` ships the official Swagger UI 5 distribution (it follows Swagger UI's releases) as
package data, so the page and its assets come from this server. Swagger UI 4 cannot read the
``openapi: 3.1.0`` schema FastAPI writes ("Unable to render this definition"): 5 or later is needed.
"""

import functools
from importlib import resources

from fastapi import APIRouter, HTTPException
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import HTMLResponse, Response

router = APIRouter(include_in_schema=False)
_ASSETS = {"swagger-ui-bundle.js": "text/javascript", "swagger-ui.css": "text/css", "favicon-32x32.png": "image/png"}


@router.get("/docs")
async def docs() -> HTMLResponse:
    return get_swagger_ui_html(openapi_url="/openapi.json", title="poolkit - Swagger UI",
                               swagger_js_url="/docs/assets/swagger-ui-bundle.js",
                               swagger_css_url="/docs/assets/swagger-ui.css",
                               swagger_favicon_url="/docs/assets/favicon-32x32.png")


@router.get("/docs/assets/{name}")
async def asset(name: str) -> Response:
    if name not in _ASSETS:  # only the files the page names: never a path from the request
        raise HTTPException(404, f"No such asset: {name}")
    return Response(_asset_bytes(name), media_type=_ASSETS[name], headers={"Cache-Control": "public, max-age=86400"})


@functools.cache
def _asset_bytes(name: str) -> bytes:
    """An asset's bytes, read once (the bundle is 1.7 MB: not read again on the event loop per request)."""
    return resources.files("fastapi_swagger").joinpath("resources", name).read_bytes()
