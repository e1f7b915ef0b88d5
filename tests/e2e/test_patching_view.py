"""The patching view in a real Chromium: both heatmaps show the stored numbers with the prompts'
tokens on the residual's axis, the iteration slider switches a looped model's grids, and the link
reopens the view from the cache."""

import json

import pytest

from .test_browser import LOOPED, analysis_posts, api, open_page, url_state, wait_js

pytestmark = pytest.mark.e2e

CLEAN = " cat dog road sun book door cat dog"
CORRUPTED = " cat dog man sun book door cat dog"
DRAWN = "document.getElementById('{}')?.data?.[0]?.z"


def patch(page, base: str, model: str, clean: str, corrupted: str, correct: str, wrong: str) -> dict:
    """Run the card; the stored result once both grids are drawn."""
    page.select_option("#model-select", model)
    page.fill("#prompt", clean)
    page.fill("#patch-corrupted", corrupted)
    page.fill("#patch-correct", correct)
    page.fill("#patch-wrong", wrong)
    before = page.url
    page.click("#run-patching")
    page.wait_for_selector("#view-patching:not([hidden])")
    wait_js(page, f"location.href !== {before!r} && new URLSearchParams(location.search).get('view') === 'patching'")
    wait_js(page, f"{DRAWN.format('patch-resid')} !== undefined && {DRAWN.format('patch-heads')} !== undefined")
    return api(base, f"/api/analyses/{url_state(page.url)['analysis']}")["result"]


def test_patching_heatmaps_equal_the_result_and_reopen_from_their_link(new_page, loupe_url):
    page = open_page(new_page)
    result = patch(page, loupe_url, "induction-2l", CLEAN, CORRUPTED, " road", " man")
    assert page.evaluate(DRAWN.format("patch-resid")) == result["resid"][0]
    assert page.evaluate(DRAWN.format("patch-heads")) == result["heads"][0]
    assert result["heads"][0][1][0] > 0.8  # the induction head restores the clean answer
    summary = page.inner_text("[data-testid=patch-summary]")
    assert f"{result['logit_diff_clean']:.4f}" in summary and f"{result['logit_diff_corrupted']:.4f}" in summary
    ticks = page.evaluate("document.getElementById('patch-resid').layout.xaxis.ticktext")
    assert ticks[3] == "␣road / ␣man<sub>3</sub>" and ticks[1] == "␣cat<sub>1</sub>"  # both prompts where they differ
    assert page.locator("#iteration-control").is_hidden()  # one iteration

    fresh = new_page()
    fresh.goto(page.url)
    wait_js(fresh, f"{DRAWN.format('patch-heads')} !== undefined")
    assert fresh.evaluate(DRAWN.format("patch-resid")) == result["resid"][0]
    assert fresh.evaluate(DRAWN.format("patch-heads")) == result["heads"][0]
    assert fresh.input_value("#patch-corrupted") == CORRUPTED and fresh.input_value("#patch-correct") == " road"
    assert analysis_posts(fresh) == []


def test_the_iteration_slider_switches_a_looped_models_grids(new_page, loupe_url):
    page = open_page(new_page)
    result = patch(page, loupe_url, LOOPED, "12+34=", "15+34=", "4", "9")
    assert result["n_iterations"] == 3
    assert page.locator("#iteration-control").is_visible() and page.get_attribute("#iteration", "max") == "2"
    page.fill("#iteration", "1")
    wait_js(page, "new URLSearchParams(location.search).get('iteration') === '1'")
    expected = json.dumps(result["heads"][1])
    wait_js(page, f"JSON.stringify({DRAWN.format('patch-heads')}) === JSON.stringify(JSON.parse({expected!r}))")
    assert page.evaluate(DRAWN.format("patch-resid")) == result["resid"][1]
    assert result["heads"][1] != result["heads"][0]

    fresh = new_page()
    fresh.goto(page.url)
    wait_js(fresh, f"{DRAWN.format('patch-heads')} !== undefined")
    assert fresh.evaluate(DRAWN.format("patch-heads")) == result["heads"][1]
