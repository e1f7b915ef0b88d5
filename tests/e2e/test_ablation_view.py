"""The ablation view in a real Chromium: the grid shows the stored numbers, a cell opens that head's
clean attention, a set shows its summary, and the link reopens the view from the cache."""

import pytest

from .test_browser import analysis_posts, api, cell_point, open_page, url_state, wait_js, wait_pattern

pytestmark = pytest.mark.e2e


def test_ablation_grid_equals_the_result_and_reopens_from_its_link(new_page, loupe_url):
    page = open_page(new_page)
    page.fill("#prompt", "The cat sat on the mat. The cat sat on the mat.")
    page.click("#run-ablation")
    page.wait_for_selector("#view-ablation:not([hidden])")
    wait_js(page, "document.getElementById('ablation-grid').data !== undefined")
    state = url_state(page.url)
    result = api(loupe_url, f"/api/analyses/{state['analysis']}")["result"]
    assert state["view"] == "ablation" and result["heads"] is None and result["metric"] == "loss"
    assert page.evaluate("document.getElementById('ablation-grid').data[0].z") == result["delta"][0]
    assert f"{result['clean']:.4f}" in page.inner_text("[data-testid=ablation-summary]")

    page.mouse.click(*cell_point(page, "ablation-grid", 2, 1))  # head 2 of layer 1: its clean pattern
    drawn = wait_pattern(page, 1, 2)
    stored = api(loupe_url, f"/api/analyses/{state['analysis']}/attention?layer=1&head=2")["pattern"]
    assert len(drawn["z"]) == len(result["tokens"])
    assert max(abs(a - b) for got, want in zip(drawn["z"], stored) for a, b in zip(got, want)) < 1e-4

    fresh = new_page()
    fresh.goto(page.url)
    wait_js(fresh, "document.getElementById('ablation-grid')?.data !== undefined")
    assert fresh.evaluate("document.getElementById('ablation-grid').data[0].z") == result["delta"][0]
    wait_pattern(fresh, 1, 2)
    assert analysis_posts(fresh) == []


def test_a_set_of_heads_shows_clean_and_knocked_out(new_page, loupe_url):
    page = open_page(new_page)
    page.fill("#prompt", "The cat sat on the mat. The cat sat on the mat.")
    page.fill("#ablation-heads", "L1H0, L0H3")
    page.select_option("#ablation-mode", "mean")
    page.click("#run-ablation")
    wait_js(page, "document.getElementById('ablation-grid')?.data !== undefined && location.search.includes('view=ablation')")
    analysis = api(loupe_url, f"/api/analyses/{url_state(page.url)['analysis']}")
    result = analysis["result"]
    assert analysis["params"]["heads"] == ["L1H0", "L0H3"] and result["mode"] == "mean"
    summary = page.inner_text("[data-testid=ablation-summary]")
    assert "L1H0, L0H3" in summary and f"{result['clean']:.4f}" in summary and f"{result['ablated']:.4f}" in summary
    assert page.evaluate("document.getElementById('ablation-grid').data[0].z") == result["delta"][0]
