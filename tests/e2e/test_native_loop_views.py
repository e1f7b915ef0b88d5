"""Ouro and Huginn in a real Chromium: the exit gate's view shows the stored numbers; the Loop card
offers a natively looped model only its loop count, and a model that draws random numbers a seed."""

import pytest

from .test_browser import analysis_posts, api, open_page, url_state, wait_js

pytestmark = pytest.mark.e2e

TEXT = "abc abd abc abd"


def test_exit_gate_view_shows_the_gate_and_reopens_from_its_link(new_page, loupe_url):
    page = open_page(new_page)
    page.select_option("#model-select", "local/ouro")
    assert page.locator("#loop-start").is_hidden() and page.locator("#loop-times").is_visible()
    assert page.locator("#loop-seed").is_hidden()  # Ouro draws nothing at random
    page.fill("#prompt", TEXT)
    page.fill("#loop-times", "4")
    page.click("#run-exit-gate")
    page.wait_for_selector("#view-exit-gate:not([hidden])")
    wait_js(page, "document.getElementById('gate-pdf').data !== undefined")
    analysis = api(loupe_url, f"/api/analyses/{url_state(page.url)['analysis']}")
    result = analysis["result"]
    assert analysis["params"]["loop"]["times"] == 4 and result["n_iterations"] == 4
    traces = page.evaluate("document.getElementById('gate-pdf').data.map((t) => ({name: t.name, z: t.z, y: t.y}))")
    assert traces[0]["z"] == result["exit_pdf"]
    assert {t["name"]: t["y"] for t in traces[1:]} == {
        "expected exit step": result["expected_exit_step"], "answer settles": result["settled_step"], "output step": result["output_step"],
    }
    assert "Expected exit step" in page.inner_text("[data-testid=gate-summary]")

    fresh = new_page()
    fresh.goto(page.url)
    wait_js(fresh, "document.getElementById('gate-pdf')?.data !== undefined")
    assert fresh.evaluate("document.getElementById('gate-pdf').data[0].z") == result["exit_pdf"]
    assert fresh.input_value("#loop-times") == "4"
    assert analysis_posts(fresh) == []


def test_a_seeded_model_takes_its_seed_from_the_loop_card(new_page, loupe_url):
    page = open_page(new_page)
    page.select_option("#model-select", "local/huginn")
    assert page.locator("#loop-seed").is_visible() and page.locator("#loop-end").is_hidden()
    assert "Seed fixes them" in page.inner_text("[data-role=loop-hint]")
    page.fill("#prompt", TEXT)
    page.fill("#loop-seed", "7")
    page.click("#run-attention")
    page.wait_for_selector("#view-attention:not([hidden])")
    wait_js(page, "document.getElementById('stat-grid')?.data !== undefined")
    analysis = api(loupe_url, f"/api/analyses/{url_state(page.url)['analysis']}")
    assert analysis["params"]["loop"]["seed"] == 7 and analysis["result"]["n_iterations"] == 4
    assert page.locator("#run-exit-gate").is_hidden()  # no exit gate: no card


def test_the_probes_card_offers_its_own_model_where_probes_do_not_apply(new_page):
    page = open_page(new_page)
    page.select_option("#model-select", "induction-2l")
    assert page.locator("#run-probes").is_hidden()
    page.click("[data-testid=use-model-probes]")
    wait_js(page, "document.getElementById('model-select').value === 'looped-lag'")
    assert page.locator("#run-probes").is_visible() and page.locator("[data-testid=use-model-probes]").count() == 0
