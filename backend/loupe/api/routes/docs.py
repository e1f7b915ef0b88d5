"""/docs (Swagger UI) and /redoc from assets served by Loupe itself: the API reference works offline.

The assets come from the `fastapi-offline` package (Swagger UI and ReDoc bundles); the page
markup and the start-up script are Loupe's, so no inline script is needed under the CSP.
"""

from pathlib import Path

import fastapi_offline
from fastapi import APIRouter, FastAPI
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles

router = APIRouter(include_in_schema=False)

VENDOR = Path(fastapi_offline.__file__).parent / "static"
OWN = Path(__file__).resolve().parents[1] / "docs_assets"


def _page(title: str, head: str, body: str) -> HTMLResponse:
    return HTMLResponse(
        f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Loupe API · {title}</title>
<link rel="icon" href="/docs-assets/vendor/favicon.png">{head}</head>
<body style="margin:0">{body}</body></html>"""
    )


@router.get("/docs")
def swagger_ui() -> HTMLResponse:
    return _page(
        "Swagger UI",
        '<link rel="stylesheet" href="/docs-assets/vendor/swagger-ui.css">',
        '<div id="swagger-ui"></div><script src="/docs-assets/vendor/swagger-ui-bundle.js"></script>'
        '<script src="/docs-assets/loupe/swagger-init.js"></script>',
    )


@router.get("/redoc")
def redoc() -> HTMLResponse:
    return _page(
        "ReDoc", "", '<redoc spec-url="/openapi.json"></redoc><script src="/docs-assets/vendor/redoc.standalone.js"></script>'
    )


def mount(app: FastAPI) -> None:
    app.include_router(router)
    app.mount("/docs-assets/vendor", StaticFiles(directory=VENDOR), name="docs-vendor")
    app.mount("/docs-assets/loupe", StaticFiles(directory=OWN), name="docs-loupe")
