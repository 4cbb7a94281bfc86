"""``GET /docs``: Swagger UI for ``/openapi.json``, served from the ``swagger-ui-bundle`` package.

FastAPI's default page loads Swagger UI from a CDN, which is blank on a machine without internet.
``swagger-ui-bundle`` (spec-first, the maintainers of connexion, which uses it) ships the official
Swagger UI distribution as package data, so the page and its assets come from this server.
"""

from pathlib import Path

from fastapi import APIRouter, HTTPException
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import FileResponse, HTMLResponse

router = APIRouter(include_in_schema=False)
_ASSETS = ("swagger-ui-bundle.js", "swagger-ui.css", "favicon-32x32.png")


def _dist() -> Path:
    import swagger_ui_bundle

    return Path(swagger_ui_bundle.swagger_ui_path)


@router.get("/docs")
async def docs() -> HTMLResponse:
    return get_swagger_ui_html(openapi_url="/openapi.json", title="poolkit - Swagger UI",
                               swagger_js_url="/docs/assets/swagger-ui-bundle.js",
                               swagger_css_url="/docs/assets/swagger-ui.css",
                               swagger_favicon_url="/docs/assets/favicon-32x32.png")


@router.get("/docs/assets/{name}")
async def asset(name: str) -> FileResponse:
    if name not in _ASSETS:  # only the files the page names: never a path from the request
        raise HTTPException(404, f"No such asset: {name}")
    return FileResponse(_dist() / name)
