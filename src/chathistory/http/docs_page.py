"""The interactive API documentation, ``/docs`` (Swagger UI) and ``/redoc`` (ReDoc), with
nothing fetched from a CDN.

Swagger UI's script, styles and icon and ReDoc's script are the files the ``fastapi-offline``
wheel installs (a Swagger UI 5 build, a ReDoc 2 build); the pages and the script that starts
Swagger UI are written here. They are served under ``/docs/assets/`` (a fixed list of files, each
URL carrying a digest of its content so it can be cached for a year), so the pages work on a
private network and on an air-gapped host. The pages have no inline script or style and are
served with a ``Content-Security-Policy``: for ``/docs`` a strict one (everything from the
service itself, plus the ``data:`` images of Swagger UI's stylesheet); ReDoc also needs the
``<style>`` elements it adds and a search worker made from a blob.
"""

from __future__ import annotations

import gzip
import hashlib
import html
import importlib.resources
from dataclasses import dataclass
from typing import Final

from fastapi import APIRouter, Request, Response
from fastapi.responses import HTMLResponse
from starlette.concurrency import run_in_threadpool

from chathistory.http.problems import HTTPProblem

DOCS_PATH: Final = "/docs"
REDOC_PATH: Final = "/redoc"
ASSETS_PATH: Final = "/docs/assets"
CONTENT_SECURITY_POLICY: Final = (
    "default-src 'self'; img-src 'self' data:; object-src 'none'; base-uri 'none'; "
    "form-action 'none'; frame-ancestors 'none'"
)
REDOC_CONTENT_SECURITY_POLICY: Final = (
    "default-src 'self'; img-src 'self' data:; style-src 'self' 'unsafe-inline'; "
    "worker-src 'self' blob:; object-src 'none'; base-uri 'none'; form-action 'none'; "
    "frame-ancestors 'none'"
)

# Starts Swagger UI on the page's #swagger-ui element, with the OpenAPI document its
# data-openapi-url names: a file, not an inline script, so `script-src 'self'` allows it.
# validatorUrl null: Swagger UI would otherwise send the document to validator.swagger.io.
INIT_SCRIPT: Final = """\
"use strict";
(function () {
  var root = document.getElementById("swagger-ui");
  window.ui = SwaggerUIBundle({
    url: root.dataset.openapiUrl,
    dom_id: "#swagger-ui",
    layout: "BaseLayout",
    deepLinking: true,
    showExtensions: true,
    showCommonExtensions: true,
    validatorUrl: null,
    presets: [SwaggerUIBundle.presets.apis, SwaggerUIBundle.SwaggerUIStandalonePreset],
  });
})();
"""

_JS: Final = "text/javascript; charset=utf-8"
# name served under ASSETS_PATH -> (file of fastapi-offline's static/, or None for INIT_SCRIPT;
# media type)
_ASSETS: Final[dict[str, tuple[str | None, str]]] = {
    "swagger-ui-bundle.js": ("swagger-ui-bundle.js", _JS),
    "swagger-ui.css": ("swagger-ui.css", "text/css; charset=utf-8"),
    "favicon.png": ("favicon.png", "image/png"),
    "swagger-init.js": (None, _JS),
    "redoc.standalone.js": ("redoc.standalone.js", _JS),
}
_COMPRESSIBLE: Final = frozenset(
    name for name, (_, media) in _ASSETS.items() if media.startswith("text/")
)


@dataclass(frozen=True, slots=True)
class _Asset:
    body: bytes
    gzipped: bytes | None
    media_type: str
    digest: str


_LOADED: dict[str, _Asset] = {}


def _asset(name: str) -> _Asset:
    """One asset, read (and gzipped) once per process."""
    asset = _LOADED.get(name)
    if asset is None:
        packaged, media_type = _ASSETS[name]
        if packaged is None:
            body = INIT_SCRIPT.encode()
        else:
            static = importlib.resources.files("fastapi_offline") / "static"
            body = (static / packaged).read_bytes()
        gzipped = gzip.compress(body, mtime=0) if name in _COMPRESSIBLE else None
        digest = hashlib.sha256(body).hexdigest()[:16]
        asset = _LOADED[name] = _Asset(body, gzipped, media_type, digest)
    return asset


async def _load(*names: str) -> None:
    """Read these assets in a worker thread the first time (some 100 ms for all of them),
    not on the event loop."""
    missing = [name for name in names if name not in _LOADED]
    if missing:
        await run_in_threadpool(lambda: [_asset(name) for name in missing])


def _accepts_gzip(accept_encoding: str) -> bool:
    """Whether an ``Accept-Encoding`` names gzip, with no ``q=0``."""
    for item in accept_encoding.lower().split(","):
        coding, *params = (part.strip() for part in item.split(";"))
        if coding == "gzip":
            for param in params:
                name, _, value = param.partition("=")
                if name.strip() == "q":
                    try:
                        return float(value) > 0
                    except ValueError:
                        return False
            return True
    return False


def asset_url(root_path: str, name: str) -> str:
    """Where a page loads asset ``name`` from; the digest changes whenever its content does."""
    return f"{root_path}{ASSETS_PATH}/{name}?v={_asset(name).digest}"


def _page(root_path: str, *, title: str, body: str, styles: tuple[str, ...] = ()) -> str:
    """A page with no inline script or style: ``body`` loads what runs."""
    links = "".join(
        f'<link rel="stylesheet" href="{html.escape(asset_url(root_path, name))}">\n'
        for name in styles
    )
    icon = html.escape(asset_url(root_path, "favicon.png"))
    return f"""<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{html.escape(title)}</title>
<link rel="icon" type="image/png" href="{icon}">
{links}</head>
<body>
{body}
</body>
</html>
"""


def docs_html(root_path: str, *, title: str, openapi_url: str) -> str:
    """Swagger UI's page, its files under ``root_path`` (the app's mount point, if any)."""
    spec = html.escape(root_path + openapi_url)
    bundle = html.escape(asset_url(root_path, "swagger-ui-bundle.js"))
    init = html.escape(asset_url(root_path, "swagger-init.js"))
    body = (
        f'<div id="swagger-ui" data-openapi-url="{spec}"></div>\n'
        f'<script src="{bundle}"></script>\n<script src="{init}"></script>'
    )
    return _page(root_path, title=title, body=body, styles=("swagger-ui.css",))


def redoc_html(root_path: str, *, title: str, openapi_url: str) -> str:
    """ReDoc's page, its files under ``root_path``."""
    spec = html.escape(root_path + openapi_url)
    script = html.escape(asset_url(root_path, "redoc.standalone.js"))
    body = f'<redoc spec-url="{spec}"></redoc>\n<script src="{script}"></script>'
    return _page(root_path, title=title, body=body)


def _page_response(page: str, policy: str) -> HTMLResponse:
    return HTMLResponse(
        page,
        headers={
            "Content-Security-Policy": policy,
            "Cache-Control": "no-cache",
            "X-Content-Type-Options": "nosniff",
            "Referrer-Policy": "no-referrer",
        },
    )


def _root_path(request: Request) -> str:
    return str(request.scope.get("root_path", "")).rstrip("/")


def build_docs_router(*, title: str, openapi_url: str) -> APIRouter:
    """``/docs`` (Swagger UI), ``/redoc`` (ReDoc) and their files under ``/docs/assets/``;
    no authentication, like the OpenAPI document they show."""
    router = APIRouter(include_in_schema=False)

    @router.get(DOCS_PATH)
    async def docs(request: Request) -> HTMLResponse:
        await _load("favicon.png", "swagger-ui.css", "swagger-ui-bundle.js", "swagger-init.js")
        page = docs_html(
            _root_path(request), title=f"{title} - Swagger UI", openapi_url=openapi_url
        )
        return _page_response(page, CONTENT_SECURITY_POLICY)

    @router.get(REDOC_PATH)
    async def redoc(request: Request) -> HTMLResponse:
        await _load("favicon.png", "redoc.standalone.js")
        page = redoc_html(_root_path(request), title=f"{title} - ReDoc", openapi_url=openapi_url)
        return _page_response(page, REDOC_CONTENT_SECURITY_POLICY)

    @router.get(ASSETS_PATH + "/{name}")
    async def docs_asset(name: str, request: Request) -> Response:
        if name not in _ASSETS:
            raise HTTPProblem(404, f"no documentation asset is named {name!r}")
        await _load(name)
        asset = _asset(name)
        headers = {
            "Cache-Control": "public, max-age=31536000, immutable",
            "X-Content-Type-Options": "nosniff",
        }
        body = asset.body
        if asset.gzipped is not None:
            headers["Vary"] = "Accept-Encoding"
            if _accepts_gzip(request.headers.get("accept-encoding", "")):
                body = asset.gzipped
                headers["Content-Encoding"] = "gzip"
        return Response(body, media_type=asset.media_type, headers=headers)

    return router


__all__ = [
    "ASSETS_PATH",
    "CONTENT_SECURITY_POLICY",
    "DOCS_PATH",
    "REDOC_CONTENT_SECURITY_POLICY",
    "REDOC_PATH",
    "build_docs_router",
    "docs_html",
    "redoc_html",
]
