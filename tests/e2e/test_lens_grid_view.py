"""The logit lens's every-position grid and the logit-attribution view in a real Chromium: they show
the stored numbers, tokens as text (never markup), and the link reopens them."""

import pytest

from .test_browser import PROMPT, analysis_posts, api, open_page, url_state, wait_js

pytestmark = pytest.mark.e2e

GRID = "document.getElementById('lens-grid')"


def _escaped(text: str) -> str:
    """plotting.js plotlyText(displayToken(text))."""
    return text.replace(" ", "␣").replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def test_lens_grid_equals_the_result_and_reopens_from_its_link(new_page, loupe_url):
    page = open_page(new_page)
    page.fill("#prompt", PROMPT)
    page.select_option("#lens-all-positions", "true")
    page.click("#run-logit-lens")
    page.wait_for_selector("#view-logit-lens:not([hidden])")
    wait_js(page, f"{GRID}.data !== undefined && !{GRID}.hidden")
    result = api(loupe_url, f"/api/analyses/{url_state(page.url)['analysis']}")["result"]
    last = [[layer[pos][0] for layer in result["grid_probs"][-1]] for pos in range(len(result["tokens"]))]
    assert page.evaluate(f"{GRID}.data[0].z") == last  # [pos][layer], the last iteration
    texts = page.evaluate(f"{GRID}.data[0].text")
    assert texts == [[_escaped(result["grid_tokens"][str(layer[pos][0])]) for layer in result["grid_ids"][-1]]
                     for pos in range(len(result["tokens"]))]
    assert page.locator("#lens-grid b").count() == 0  # the prompt's <b> stays text
    assert page.locator("[data-testid=lens-table] table").count() == 0

    fresh = new_page()
    fresh.goto(page.url)
    wait_js(fresh, f"{GRID}?.data !== undefined")
    assert fresh.evaluate(f"{GRID}.data[0].z") == last
    assert fresh.evaluate("document.getElementById('lens-all-positions').value") == "true"
    assert analysis_posts(fresh) == []


def test_attribution_view_equals_the_result(new_page, loupe_url):
    page = open_page(new_page)
    page.fill("#prompt", PROMPT)
    page.click("#run-logit-attribution")
    page.wait_for_selector("#view-logit-attribution:not([hidden])")
    wait_js(page, "document.getElementById('attribution-bars').data !== undefined")
    result = api(loupe_url, f"/api/analyses/{url_state(page.url)['analysis']}")["result"]
    assert page.evaluate("document.getElementById('attribution-grid').data[0].z") == result["heads"][0]
    bars = page.evaluate("document.getElementById('attribution-bars').data[0].x")
    assert bars == [c["value"] for c in reversed(result["components"])]
    assert f"{result['target_logit']:.4f}" in page.inner_text("[data-testid=attribution-summary]")
    # a logit difference: the card's second token, the summary and the grid of the difference
    before = url_state(page.url)["analysis"]
    page.fill("#attribution-target", result["target"])
    page.fill("#attribution-other", result["tokens"][1])
    page.click("#run-logit-attribution")
    wait_js(page, f"!location.search.includes('{before}')")
    wait_js(page, "document.getElementById('attribution-bars').data !== undefined")
    diff = api(loupe_url, f"/api/analyses/{url_state(page.url)['analysis']}")
    assert diff["params"]["other"] == result["tokens"][1] and diff["result"]["other"] == result["tokens"][1]
    wait_js(page, f"document.querySelector('[data-testid=attribution-summary]').innerText.includes('{diff['result']['logit_diff']:.4f}')")
    assert page.evaluate("document.getElementById('attribution-grid').data[0].z") == diff["result"]["heads"][0]
