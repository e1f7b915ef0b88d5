"""The history panel in a real Chromium: newest first, an entry reopens its view, delete removes it."""

import httpx
import pytest

from .test_browser import api, open_page, url_state, wait_js

pytestmark = pytest.mark.e2e


def test_history_lists_reopens_and_deletes(new_page, loupe_url):
    page = open_page(new_page)
    ids = []
    for text in ("History first: the cat sat.", "History second: the dog ran."):
        page.fill("#prompt", text)
        page.click("#run-attention")
        wait_js(page, f"new URLSearchParams(location.search).get('analysis') !== {ids[-1]!r}" if ids else "new URLSearchParams(location.search).has('analysis')")
        ids.append(url_state(page.url)["analysis"])
    wait_js(page, f"document.querySelector('#history li')?.dataset.id === {ids[1]!r}")  # newest first
    listed = page.evaluate("[...document.querySelectorAll('#history li')].map((li) => li.dataset.id)")
    assert listed.index(ids[1]) < listed.index(ids[0])
    assert "History first" in page.locator(f"#history li[data-id='{ids[0]}'] small").text_content()

    page.click(f"#history li[data-id='{ids[0]}'] .history-open")
    wait_js(page, f"new URLSearchParams(location.search).get('analysis') === {ids[0]!r}")
    wait_js(page, "document.querySelector('[data-testid=tokens]')?.textContent.includes('first')")
    assert page.input_value("#prompt") == "History first: the cat sat."

    page.click(f"#history li[data-id='{ids[1]}'] button.icon")
    wait_js(page, f"!document.querySelector(\"#history li[data-id='{ids[1]}']\")")
    assert httpx.get(f"{loupe_url}/api/analyses/{ids[1]}").status_code == 404
    assert api(loupe_url, f"/api/analyses/{ids[0]}")["status"] == "done"
