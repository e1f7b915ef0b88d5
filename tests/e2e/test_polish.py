"""Page polish in a real Chromium: ?model= preselects a model; Escape closes the open head."""

import pytest

from .test_browser import LOOPED, open_page, url_state, wait_js, wait_pattern

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


def test_choosing_another_model_clears_the_previous_models_view(new_page):
    page = open_page(new_page)
    page.fill("#prompt", "A view that belongs to one model.")
    page.click("#run-attention")
    wait_js(page, "new URLSearchParams(location.search).has('analysis')")
    page.select_option("#model-select", LOOPED)
    wait_js(page, "!new URLSearchParams(location.search).has('analysis')")
    assert url_state(page.url) == {"model": LOOPED}
    assert page.locator("#view-attention").is_hidden() and page.locator("#empty").is_visible()
    assert page.input_value("#prompt") == "A view that belongs to one model."  # the prompt stays


def test_comparing_from_the_last_iteration_starts_with_the_one_before(new_page):
    page = open_page(new_page)
    page.select_option("#model-select", LOOPED)
    page.fill("#prompt", "one two three one two three")
    page.click("#run-attention")
    wait_js(page, "document.querySelectorAll('#thumbnails .thumb').length > 0")
    page.fill("#iteration", "2")  # the last of 3
    page.dispatch_event("#iteration", "input")
    page.click("[data-testid=thumb-L0H1]")
    wait_pattern(page, 0, 1)
    page.check("#compare-on")
    page.wait_for_selector("#compare[data-ready=true]")
    assert (page.get_attribute("#compare", "data-a"), page.get_attribute("#compare", "data-b")) == ("2", "1")
