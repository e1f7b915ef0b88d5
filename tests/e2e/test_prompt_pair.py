"""Two prompts side by side in a real Chromium: run a second prompt from the attention view, see both
head grids, their difference and one head's two maps; the permalink reopens both from the cache;
analyses of different models, or not of attention, are refused in the page."""

import httpx
import pytest

from .test_browser import MODEL, analysis_posts, api, open_page, url_state, wait_js

pytestmark = pytest.mark.e2e

A = "When Mary and John went to the store, John gave a drink to Mary."
B = "When Mary and John went to the park, Mary gave a book to John."  # as many tokens as A
SHORT = "A cat sat."


def grid(page, plot_id: str):
    return page.evaluate(f"document.getElementById('{plot_id}').data[0].z")


def z(page, plot_id: str):
    return page.evaluate(f"document.getElementById('{plot_id}').data[0].z.map((row) => Array.from(row))")


def run(page, text: str) -> str:
    page.fill("#prompt", text)
    page.click("#run-attention")
    page.wait_for_selector("[data-testid=thumb-L0H0]")
    return url_state(page.url)["analysis"]


def test_two_prompts_side_by_side_and_their_permalink(new_page, loupe_url):
    page = open_page(new_page)
    first = run(page, A)
    assert page.locator("[data-testid=pair]").is_hidden()
    page.fill("[data-testid=other-prompt]", SHORT)
    page.click("[data-testid=run-other]")
    page.wait_for_selector("[data-testid=pair][data-ready=true]")
    state = url_state(page.url)
    second = state["other"]
    assert state["analysis"] == first and second != first
    a, b = (api(loupe_url, f"/api/analyses/{i}") for i in (first, second))
    assert b["text"] == SHORT and b["model"] == MODEL and b["analysis"] == "attention"
    assert page.text_content("[data-testid=pair-text-a]") == A and page.text_content("[data-testid=pair-text-b]") == SHORT
    # the grids are the two analyses' stats, and the third their difference
    stat = state["stat"]
    grid_a, grid_b = a["result"]["head_stats"][stat][0], b["result"]["head_stats"][stat][0]
    assert grid(page, "pair-grid-a") == grid_a and grid(page, "pair-grid-b") == grid_b
    diff = grid(page, "pair-grid-diff")
    assert max(abs(d - (y - x)) for dr, ar, br in zip(diff, grid_a, grid_b) for d, x, y in zip(dr, ar, br)) < 1e-9

    # a head: both maps at the same layer/head/iteration; token counts differ, so no difference map
    page.click("[data-testid=thumb-L1H0]")
    page.wait_for_selector("[data-testid=pair-maps][data-ready=true][data-layer='1'][data-head='0']")
    for plot_id, analysis_id in (("pair-map-a", first), ("pair-map-b", second)):
        stored = api(loupe_url, f"/api/analyses/{analysis_id}/attention?layer=1&head=0")["pattern"]
        drawn = z(page, plot_id)
        assert len(drawn) == len(stored)
        assert max(abs(x - y) for got, want in zip(drawn, stored) for x, y in zip(got, want)) < 1e-4
    assert page.locator("#pair-map-diff").is_hidden()
    assert "Token counts differ" in page.text_content("[data-testid=pair-maps]")

    # the permalink reopens both, from the cache
    link = page.url
    fresh = new_page()
    fresh.goto(link)
    fresh.wait_for_selector("[data-testid=pair-maps][data-ready=true][data-layer='1'][data-head='0']")
    assert grid(fresh, "pair-grid-b") == grid_b and z(fresh, "pair-map-b") == z(page, "pair-map-b")
    assert url_state(fresh.url) == url_state(link)
    assert analysis_posts(fresh) == []
    # closing the pair keeps the first analysis
    fresh.click("[data-testid=close-pair]")
    wait_js(fresh, "!new URLSearchParams(location.search).has('other')")
    assert fresh.locator("[data-testid=pair]").is_hidden() and url_state(fresh.url)["analysis"] == first


def test_prompts_of_one_length_show_a_difference_map_and_history_offers_them(new_page, loupe_url):
    page = open_page(new_page)
    first = run(page, A)
    tokens_a = api(loupe_url, f"/api/analyses/{first}")["result"]["tokens"]
    second = run(page, B)
    tokens_b = api(loupe_url, f"/api/analyses/{second}")["result"]["tokens"]
    if len(tokens_a) != len(tokens_b):
        pytest.fail(f"pick prompts of one token count: {len(tokens_a)} and {len(tokens_b)}")
    # from History: the first prompt is offered while B is open
    wait_js(page, f"[...document.querySelectorAll('#other-pick option')].some((o) => o.value === '{first}')")
    page.select_option("[data-testid=other-pick]", first)
    page.wait_for_selector("[data-testid=pair][data-ready=true]")
    assert url_state(page.url)["other"] == first
    page.click("[data-testid=thumb-L0H2]")
    page.wait_for_selector("[data-testid=pair-maps][data-ready=true][data-layer='0'][data-head='2']")
    assert page.locator("#pair-map-diff").is_visible()
    a, b, d = z(page, "pair-map-a"), z(page, "pair-map-b"), z(page, "pair-map-diff")
    assert max(abs(dv - (bv - av)) for dr, ar, br in zip(d, a, b) for dv, av, bv in zip(dr, ar, br)) < 1e-6


def test_a_pair_of_different_models_or_kinds_is_refused_in_the_page(new_page, loupe_url):
    page = open_page(new_page)
    first = run(page, A)
    page.select_option("#model-select", "local/gpt2long")
    other = run(page, A)
    page.goto(f"/?analysis={first}&other={other}&view=attention")
    page.wait_for_selector("[data-testid=pair][data-ready=refused]")
    problem = page.text_content("[data-testid=pair-problem]")
    assert "different models" in problem and "local/gpt2long" in problem
    assert page.locator("[data-testid=pair-grid-a]").is_hidden()
    # a head_scores analysis is no prompt to compare
    scores = httpx.post(f"{loupe_url}/api/analyses", json={"analysis": "head_scores", "model": MODEL, "params": {"seq_len": 8, "batch": 1}, "wait_s": 20}, timeout=60).json()
    assert scores["status"] == "done", scores
    page.goto(f"/?analysis={first}&other={scores['id']}&view=attention")
    wait_js(page, "document.querySelector('[data-testid=pair-problem]').textContent.includes('head_scores')")
    assert "attention analyses only" in page.text_content("[data-testid=pair-problem]")
    assert page.locator("[data-testid=pair-problem]").is_visible()
