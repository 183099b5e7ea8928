"""/docs and /redoc work on an air-gapped site: the pages name no host but the collector's own,
and every script, style sheet and icon they load is served by the collector itself."""

from __future__ import annotations

import re

import pytest
from httpkit import client, make_app

pytestmark = pytest.mark.anyio

ABSOLUTE = re.compile(r"""(?:https?:)?//[A-Za-z0-9.-]+""")
LOADED = re.compile(r"""(?:src|href)\s*=\s*["']([^"']+)["']|url:\s*["']([^"']+)["']""")


@pytest.mark.parametrize(("page", "kinds"), [
    ("/docs", {"javascript", "css", "png"}),
    ("/redoc", {"javascript", "png"}),
])
async def test_the_documentation_pages_load_nothing_from_elsewhere(page: str, kinds: set[str]) -> None:
    app, _ = make_app()
    async with client(app) as c:
        html = await c.get(page)
        assert html.status_code == 200 and html.headers["content-type"].startswith("text/html")
        assert not ABSOLUTE.findall(html.text), f"{page} names another host: {ABSOLUTE.findall(html.text)}"
        urls = {a or b for a, b in LOADED.findall(html.text)}
        assets = {u for u in urls if u.startswith("/docs/assets/")}
        assert "/openapi.json" in html.text
        seen = set()
        for url in sorted(assets):
            r = await c.get(url)
            assert r.status_code == 200 and len(r.content) > 100, url
            seen |= {k for k in kinds if k in r.headers["content-type"]}
        assert seen == kinds, f"{page} loads {sorted(assets)}"
        openapi = await c.get("/openapi.json")
        assert openapi.status_code == 200 and openapi.json()["info"]["title"] == "wattledger collector"


async def test_the_swagger_bundle_is_swagger_ui_and_a_missing_asset_is_a_json_404() -> None:
    app, _ = make_app()
    async with client(app) as c:
        bundle = await c.get("/docs/assets/swagger-ui-bundle.js")
        missing = await c.get("/docs/assets/nope.js")
    assert "SwaggerUIBundle" in bundle.text
    assert missing.status_code == 404 and missing.headers["content-type"].startswith("application/json")
    assert missing.json()["error"]
