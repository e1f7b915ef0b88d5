"""The head-ablation view in a real Chromium: the grid shows the stored numbers, and the link reopens it."""

import pytest

from .test_browser import api, open_page, url_state, wait_js

pytestmark = pytest.mark.e2e


def test_ablation_grid_equals_the_result_and_reopens_from_its_link(new_page, loupe_url):
    page = open_page(new_page)
    page.fill("#prompt", "The cat sat on the mat. The cat sat on the mat.")
    page.click("#run-head-ablation")
    page.wait_for_selector("#view-head-ablation:not([hidden])")
    wait_js(page, "document.getElementById('ablation-grid').data !== undefined")
    state = url_state(page.url)
    result = api(loupe_url, f"/api/analyses/{state['analysis']}")["result"]
    assert state["view"] == "head_ablation"
    assert page.evaluate("document.getElementById('ablation-grid').data[0].z") == result["delta_loss"][0]
    assert f"{result['loss']:.4f}" in page.inner_text("[data-testid=ablation-summary]")

    fresh = new_page()
    fresh.goto(page.url)
    wait_js(fresh, "document.getElementById('ablation-grid')?.data !== undefined")
    assert fresh.evaluate("document.getElementById('ablation-grid').data[0].z") == result["delta_loss"][0]
    assert [url for method, url in fresh.requests if method == "POST"] == []
