"""``/docs`` and ``/redoc`` in a real headless browser with the network off: they render the
operations from the files the installed package serves, under their Content-Security-Policy.

The service runs as ``chathistory serve`` (JWT authentication and CORS on, as deployed); the
browser is Debian's ``chromium``, which resolves no name but ``127.0.0.1`` and sends anything
else to a closed proxy port, so a page that needed a CDN would stay blank. Without chromium the
browser tests are skipped, except in CI (``CI=true``), where ``.ci/run`` installs it and its
absence fails them.
"""

from __future__ import annotations

import gzip
import os
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from chathistory.http.docs_page import CONTENT_SECURITY_POLICY, REDOC_CONTENT_SECURITY_POLICY
from tests.http.test_http_serve import SECRET, _free_port, serving

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")  # as conftest.py reads it

# The operations Swagger UI and ReDoc must show, from the OpenAPI document.
PATHS = (
    "/api/{user_id}/conversations",
    "/api/{user_id}/conversations/{conversation_id}/messages",
    "/api/{user_id}/search",
    "/healthz",
)
_EXTERNAL = re.compile(r"(?:https?:)?//(?!127\.0\.0\.1[:/])[A-Za-z0-9.-]+\.[A-Za-z]")


@pytest.fixture(scope="module")
def base_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    cwd = tmp_path_factory.mktemp("docs-serve")
    env = {"CHATHISTORY_JWT_SECRET": SECRET, "CHATHISTORY_CORS_ORIGINS": "https://app.example"}
    with serving(cwd, **env) as (url, _process):
        yield url


@pytest.fixture(scope="module")
def chromium() -> str:
    binary = shutil.which("chromium") or shutil.which("chromium-browser")
    if binary is None:
        if IN_CI:
            pytest.fail("chromium is not installed; .ci/run installs it with apt-get")
        pytest.skip("chromium is not installed (apt-get install chromium)")
    return binary


def _render(chromium: str, url: str, profile: Path) -> tuple[str, str]:
    """The DOM of ``url`` once its scripts have run (10 s of virtual time), and the browser's
    log (console messages included), with every host but 127.0.0.1 unreachable."""
    dead_proxy = f"127.0.0.1:{_free_port()}"  # bound a moment ago, now closed: refused
    result = subprocess.run(
        [
            chromium,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--no-first-run",
            "--disable-background-networking",
            f"--user-data-dir={profile}",
            "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
            f"--proxy-server=http://{dead_proxy}",
            "--enable-logging=stderr",
            "--log-level=0",
            "--virtual-time-budget=10000",
            "--dump-dom",
            url,
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-4000:]
    return result.stdout, result.stderr


def _console(log: str) -> list[str]:
    return [line for line in log.splitlines() if ":CONSOLE" in line]


def test_docs_page_references_only_the_service(base_url: str) -> None:
    with httpx.Client(base_url=base_url, timeout=10) as http:
        page = http.get("/docs")  # no token: the page is public, like /openapi.json
        assert page.status_code == 200
        assert page.headers["content-type"] == "text/html; charset=utf-8"
        assert page.headers["content-security-policy"] == CONTENT_SECURITY_POLICY
        assert "https://cdn" not in page.text
        assert not _EXTERNAL.search(page.text), _EXTERNAL.search(page.text)
        assert "<script>" not in page.text and "<style" not in page.text  # nothing inline
        assets = re.findall(r'(?:src|href)="([^"]+)"', page.text)
        assert {a.split("?")[0] for a in assets} == {
            "/docs/assets/favicon.png",
            "/docs/assets/swagger-ui.css",
            "/docs/assets/swagger-ui-bundle.js",
            "/docs/assets/swagger-init.js",
        }
        media = {}
        for asset in assets:
            answer = http.get(asset.replace("&amp;", "&"))
            assert answer.status_code == 200, asset
            assert answer.headers["cache-control"] == "public, max-age=31536000, immutable"
            assert answer.headers["x-content-type-options"] == "nosniff"
            media[asset.split("?")[0].rsplit("/", 1)[1]] = answer.headers["content-type"]
        assert media == {
            "favicon.png": "image/png",
            "swagger-ui.css": "text/css; charset=utf-8",
            "swagger-ui-bundle.js": "text/javascript; charset=utf-8",
            "swagger-init.js": "text/javascript; charset=utf-8",
        }
        init = http.get("/docs/assets/swagger-init.js").text
        assert "SwaggerUIBundle(" in init and not _EXTERNAL.search(init)

        redoc = http.get("/redoc")
        assert redoc.status_code == 200
        assert redoc.headers["content-security-policy"] == REDOC_CONTENT_SECURITY_POLICY
        assert not _EXTERNAL.search(redoc.text) and "<script>" not in redoc.text


def test_docs_assets_are_an_allow_list_and_compressed(base_url: str) -> None:
    with httpx.Client(base_url=base_url, timeout=10) as http:
        for name in ("nope.js", "..%2Fapp.py", "core.py", "redoc.standalone.js.map"):
            missing = http.get(f"/docs/assets/{name}")
            assert missing.status_code == 404, name
            assert missing.headers["content-type"] == "application/problem+json"
        plain = http.get("/docs/assets/swagger-ui.css", headers={"Accept-Encoding": "identity"})
        assert "content-encoding" not in plain.headers
        assert "Accept-Encoding" in plain.headers["vary"]  # (CORS adds Origin)
        raw = httpx.get(
            f"{base_url}/docs/assets/swagger-ui.css",
            headers={"Accept-Encoding": "gzip"},
            timeout=10,
        )
        assert raw.headers["content-encoding"] == "gzip"
        assert raw.content == plain.content  # httpx decoded it
        assert len(gzip.compress(plain.content)) < len(plain.content) // 3
        refused = http.get("/docs/assets/swagger-ui.css", headers={"Accept-Encoding": "gzip;q=0"})
        assert "content-encoding" not in refused.headers


def test_swagger_ui_renders_the_operations_offline(
    base_url: str, chromium: str, tmp_path: Path
) -> None:
    dom, log = _render(chromium, f"{base_url}/docs", tmp_path / "profile")
    assert 'class="swagger-ui"' in dom
    assert dom.count('class="opblock ') >= 10, dom[-3000:]  # one block per operation
    for path in PATHS:
        assert f'data-path="{path}"' in dom, path
    assert "Failed to load API definition" not in dom
    # Under the page's strict policy nothing was refused (the console would say so).
    assert not [line for line in _console(log) if "Content Security Policy" in line], log


def test_redoc_renders_the_operations_offline(base_url: str, chromium: str, tmp_path: Path) -> None:
    dom, _log = _render(chromium, f"{base_url}/redoc", tmp_path / "profile")
    for path in PATHS:
        assert path in dom, path
    assert "Something went wrong" not in dom


def test_the_browser_is_offline(chromium: str, tmp_path: Path) -> None:
    """The control: a script from a CDN does not load in this browser, so the pages above
    rendered from the service alone."""
    page = (
        '<script src="https://cdn.jsdelivr.net/npm/swagger-ui-dist@5/swagger-ui-bundle.js">'
        "</script><script>document.title = typeof SwaggerUIBundle</script>"
    )
    dom, _log = _render(chromium, f"data:text/html,{page}", tmp_path / "profile")
    assert "<title>undefined</title>" in dom
