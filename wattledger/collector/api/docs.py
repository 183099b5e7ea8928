"""The API's documentation pages (/docs: Swagger UI, /redoc: ReDoc) served with their scripts,
styles and icon from this installation, never from a public CDN: a collector on an air-gapped
site (most GPU data centres' management networks) would otherwise show a blank page.

The assets come from the ``fastapi-offline`` package, which ships current Swagger UI and ReDoc
builds for exactly this; the pages are FastAPI's own ``get_swagger_ui_html`` /
``get_redoc_html`` pointed at local URLs.
"""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html, get_swagger_ui_oauth2_redirect_html
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles

#: where the assets are served (under /docs, so one proxy rule covers the pages and their assets)
ASSETS = "/docs/assets"
#: the files the pages load, as fastapi-offline ships them
SWAGGER_JS, SWAGGER_CSS, REDOC_JS, FAVICON = (
    "swagger-ui-bundle.js", "swagger-ui.css", "redoc.standalone.js", "favicon.png")


def asset_folder() -> Path:
    return Path(str(files("fastapi_offline").joinpath("static")))


def install_docs(app: FastAPI, openapi_url: str = "/openapi.json") -> None:
    """/docs, /docs/oauth2-redirect and /redoc with their assets under /docs/assets. The app must
    be made with ``docs_url=None, redoc_url=None`` (FastAPI's own pages load a CDN)."""
    app.mount(ASSETS, StaticFiles(directory=asset_folder()), name="docs-assets")

    def asset(request: Request, name: str) -> str:
        return f"{request.scope.get('root_path', '')}{ASSETS}/{name}"

    @app.get("/docs", include_in_schema=False)
    async def swagger_ui(request: Request) -> HTMLResponse:
        return get_swagger_ui_html(
            openapi_url=f"{request.scope.get('root_path', '')}{openapi_url}",
            title=f"{app.title} - Swagger UI", oauth2_redirect_url="/docs/oauth2-redirect",
            swagger_js_url=asset(request, SWAGGER_JS), swagger_css_url=asset(request, SWAGGER_CSS),
            swagger_favicon_url=asset(request, FAVICON))

    @app.get("/docs/oauth2-redirect", include_in_schema=False)
    async def swagger_ui_redirect() -> HTMLResponse:
        return get_swagger_ui_oauth2_redirect_html()

    @app.get("/redoc", include_in_schema=False)
    async def redoc(request: Request) -> HTMLResponse:
        return get_redoc_html(
            openapi_url=f"{request.scope.get('root_path', '')}{openapi_url}",
            title=f"{app.title} - ReDoc", redoc_js_url=asset(request, REDOC_JS),
            redoc_favicon_url=asset(request, FAVICON), with_google_fonts=False)
