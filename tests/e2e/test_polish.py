"""Page polish in a real Chromium: ?model= preselects a model; Escape closes the open head."""

import pytest

from .test_browser import open_page, url_state, wait_js, wait_pattern

pytestmark = pytest.mark.e2e


def test_model_in_the_url_is_preselected(new_page):
    page = new_page()
    page.goto("/?model=looped-add")
    wait_js(page, "document.getElementById('model-select').value === 'looped-add'")
    assert page.locator("[data-testid=card-probes]").is_visible()  # the cards follow the preselected model
    assert "4 loop iterations" in page.text_content("#model-info")
    page.goto("/?model=no-such-model")  # an unknown one leaves the default
    wait_js(page, "document.getElementById('model-select').options.length > 0")
    assert page.input_value("#model-select") != "no-such-model"


def test_escape_closes_the_open_head(new_page):
    page = open_page(new_page)
    page.fill("#prompt", "Escape closes the head view. Escape closes the head view.")
    page.click("#run-attention")
    wait_js(page, "document.querySelectorAll('#thumbnails .thumb').length > 0")
    page.click("[data-testid=thumb-L1H0]")
    wait_pattern(page, 1, 0)
    page.keyboard.press("Escape")
    wait_js(page, "document.getElementById('head-detail').hidden")
    assert "layer" not in url_state(page.url)
