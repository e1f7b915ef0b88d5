"""A hybrid stack in a real Chromium: its attention layer shows under its real index, its Mamba layer
shows no numbers and cannot be opened."""

import pytest

from .test_browser import api, open_page, url_state, wait_js

pytestmark = pytest.mark.e2e

HYBRID = "local/jamba"  # layer 0: Mamba; layer 1: attention


def test_a_hybrid_stack_shows_its_attention_layer_and_blanks_the_other(new_page, loupe_url):
    page = open_page(new_page)
    page.select_option("#model-select", HYBRID)
    page.fill("#prompt", "The cat sat on the mat. The cat sat on the mat.")
    page.click("#run-attention")
    page.wait_for_selector("#view-attention:not([hidden])")
    wait_js(page, "document.querySelectorAll('#thumbnails .thumb').length === 8")
    result = api(loupe_url, f"/api/analyses/{url_state(page.url)['analysis']}")["result"]
    assert result["attention_layers"] == [1]
    grid = page.evaluate("document.getElementById('stat-grid').data[0].z")
    assert grid[0] == [None] * 4 and grid[1] == result["head_stats"]["bos"][0][1]
    assert "Layer 0 has no attention" in page.text_content("[data-role=stat-note]")  # the blank row is explained
    assert page.evaluate("[...document.querySelectorAll('#thumbnails .thumb')].map((b) => b.disabled)") == [True] * 4 + [False] * 4
    page.click("[data-testid=thumb-L1H2]")
    wait_js(page, "document.getElementById('pattern-plot').dataset.ready === 'true'")
    assert url_state(page.url)["layer"] == "1"
    fresh = new_page()  # a hand-made link to the Mamba layer opens the view without a head, and no error
    fresh.goto(page.url.replace("layer=1", "layer=0"))
    wait_js(fresh, "document.getElementById('stat-grid')?.data !== undefined")
    assert fresh.locator("#head-detail").is_hidden() and fresh.locator("[data-testid=error]").is_hidden()
