"""The API reference pages render offline: Swagger UI and ReDoc from Loupe's own assets, under its CSP."""

import time

import pytest

pytestmark = pytest.mark.e2e


def _until(page, script: str, timeout: float = 20) -> None:
    """Poll `script` in the page (wait_for_function evaluates strings, which the CSP refuses)."""
    deadline = time.monotonic() + timeout
    while not page.evaluate(script):
        assert time.monotonic() < deadline, f"not true within {timeout} s: {script}"
        time.sleep(0.1)


def test_swagger_ui_renders_every_operation_offline(new_page, loupe_url):
    page = new_page()
    page.goto("/docs")
    _until(page, "() => document.querySelectorAll('.opblock').length >= 8")
    paths = page.evaluate("() => [...document.querySelectorAll('.opblock-summary-path')].map(e => e.textContent)")
    assert "/api/analyses" in paths and "/api/analyses/{analysis_id}/attention" in paths
    assert page.title() == "Loupe API · Swagger UI"
    # the fixture fails the test on any request outside the server, a CSP refusal or a page error
    assert any(url.endswith("/docs-assets/vendor/swagger-ui-bundle.js") for _, url in page.requests)


def test_redoc_renders_offline(browser, loupe_url):
    """ReDoc's sidebar always asks for its maker's logo from a CDN: the CSP refuses it, so no
    request leaves the server, and that refusal is the only one."""
    context = browser.new_context(base_url=loupe_url)
    page = context.new_page()
    requests, blocked, refused, errors = [], {}, [], []
    page.on("request", lambda request: requests.append(request.url))
    page.on("requestfailed", lambda request: blocked.setdefault(request.url, request.failure))
    page.on("console", lambda message: "Content Security Policy" in message.text and refused.append(message.text))
    page.on("pageerror", lambda error: errors.append(str(error)))
    try:
        page.goto("/redoc")
        _until(page, "() => document.body.innerText.includes('/api/analyses/{analysis_id}/attention')")
        assert "Loupe" in page.inner_text("body")
    finally:
        context.close()
    assert not errors
    outside = [url for url in requests if not url.startswith((loupe_url + "/", "data:", "blob:"))]
    assert all(blocked.get(url) == "csp" for url in outside), (outside, blocked)  # refused in the browser, never sent
    assert all("cdn.redoc.ly/redoc/logo-mini.svg" in message for message in refused), refused
