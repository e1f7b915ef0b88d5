"""Loop-iteration views in a real Chromium: probes (curve + heatmap, progress, permalink), logit lens,
and two iterations of one head side by side with their difference."""

import pytest

from .test_browser import LOOPED, analysis_posts, api, cell_point, open_page, url_state, wait_js, wait_pattern

pytestmark = pytest.mark.e2e


def test_probes_chart_and_heatmap_with_a_permalink(new_page, loupe_url):
    page = open_page(new_page)
    page.select_option("#model-select", LOOPED)
    page.fill("#probe-n", "40")
    page.fill("#probe-folds", "2")
    page.click("#run-probes")
    page.wait_for_selector("#view-probes:not([hidden])")
    wait_js(page, "document.getElementById('probe-grid').data !== undefined")
    state = url_state(page.url)
    result = api(loupe_url, f"/api/analyses/{state['analysis']}")["result"]
    assert state["view"] == "probes" and result["n_iterations"] == 3
    curve = page.evaluate("document.getElementById('probe-curve').data.map((t) => ({ name: t.name, y: t.y }))")
    assert [t["name"] for t in curve] == ["probe, layer 1", "self-verification", "task accuracy"]
    assert curve[0]["y"] == [row[1] for row in result["probe_accuracy"]]  # the readout layer by default
    assert curve[1]["y"] == result["self_verification_accuracy"]
    grid = page.evaluate("document.getElementById('probe-grid').data[0].z")
    assert grid == [[row[layer] for row in result["probe_accuracy"]] for layer in range(2)]  # [layer][iteration]

    page.mouse.click(*cell_point(page, "probe-grid", 2, 0))  # layer 0
    wait_js(page, "new URLSearchParams(location.search).get('probe_layer') === '0'")
    assert page.evaluate("document.getElementById('probe-curve').data[0].y") == [row[0] for row in result["probe_accuracy"]]

    fresh = new_page()
    fresh.goto(page.url)
    wait_js(fresh, "document.getElementById('probe-curve')?.data?.[0]?.name === 'probe, layer 0'")
    assert fresh.input_value("#probe-n") == "40" and fresh.input_value("#model-select") == LOOPED
    assert analysis_posts(fresh) == []


def test_logit_lens_table_has_a_cell_per_iteration_and_layer(new_page, loupe_url):
    page = open_page(new_page)
    page.select_option("#model-select", LOOPED)
    page.fill("#prompt", "12+34=<b>")  # characters outside the vocabulary become `<unk>` tokens: text, not tags
    page.click("#run-logit-lens")
    page.wait_for_selector("#view-logit-lens:not([hidden]) table.lens")
    result = api(loupe_url, f"/api/analyses/{url_state(page.url)['analysis']}")["result"]
    cells = page.locator("#lens-table td.lens-cell")
    assert cells.count() == 3 * 2
    first = page.locator("#lens-table td[data-iteration='2'][data-layer='1'] .token").text_content()
    assert first == result["top_tokens"][2][1][0]
    assert page.locator("#lens-table b").count() == 0
    assert result["tokens"][7] == "<unk>" and page.locator("[data-testid=lens-tokens] .token").nth(7).text_content() == "<unk>"


def test_compare_two_iterations_of_one_head(new_page, loupe_url):
    page = open_page(new_page)
    page.select_option("#model-select", LOOPED)
    page.fill("#prompt", "ABCABCABC")
    page.click("#run-attention")
    page.click("[data-testid=thumb-L1H0]")
    wait_pattern(page, 1, 0)
    page.check("#compare-on")
    page.fill("#compare-iteration", "2")
    page.wait_for_selector("#compare[data-ready=true][data-b='2']")
    state = url_state(page.url)
    assert (state["iteration"], state["compare"]) == ("0", "2")
    base = f"/api/analyses/{state['analysis']}/attention?layer=1&head=0"
    a, b = (api(loupe_url, f"{base}&iteration={i}")["pattern"] for i in (0, 2))
    diff = page.evaluate("document.getElementById('compare-diff').data[0].z")
    assert max(abs(d - (y - x)) for dr, ar, br in zip(diff, a, b) for d, x, y in zip(dr, ar, br)) < 1e-3
    assert max(abs(d) for row in diff for d in row) > 1e-3

    fresh = new_page()
    fresh.goto(page.url)
    fresh.wait_for_selector("#compare[data-ready=true][data-b='2']")
    assert fresh.is_checked("#compare-on")
    fresh.uncheck("#compare-on")
    wait_js(fresh, "!new URLSearchParams(location.search).has('compare')")
    assert fresh.locator("#compare").is_hidden()
