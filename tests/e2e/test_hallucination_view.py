"""Hallucination views in a real Chromium: generated tokens shaded by the signal (as text), the signal
chart and head x token heatmap, the evaluation's ROC curves, and permalinks that reopen without a POST."""

import json

import pytest

from .test_browser import analysis_posts, api, open_page, url_state, wait_js

pytestmark = pytest.mark.e2e


def test_generated_tokens_signal_chart_heatmap_and_permalink(new_page, loupe_url):
    page = open_page(new_page)
    page.fill("#prompt", "The cat <b>sat</b> on the mat & the")
    page.fill("#hal-max-new", "5")
    page.fill("#hal-threshold", "0.1")
    page.fill("#hal-min-induction", "0")  # the random tiny model has no head over the default bar
    page.click("#run-hallucination")
    page.wait_for_selector("#view-hallucination:not([hidden]) .hal-token")
    state = url_state(page.url)
    result = api(loupe_url, f"/api/analyses/{state['analysis']}")["result"]
    assert state["view"] == "hallucination"
    chips = page.locator("[data-testid=hal-text] .hal-token")
    assert chips.count() == len(result["tokens"]) == 5
    assert page.locator("[data-testid=hal-text] b").count() == 0  # the prompt's tags stay text
    assert "<b>sat</b>" in page.locator("[data-testid=hal-text] .hal-prompt").text_content()
    assert page.locator("[data-testid=hal-text] .hal-token.flagged").count() == sum(result["flagged"])
    assert f"signal {result['signal'][0]:.3f}" in chips.first.get_attribute("title")
    signal = page.evaluate("document.getElementById('hal-signal').data[0].y")
    assert signal == result["signal"]
    assert page.text_content("[data-role=hal-formula-lookback]") == result["formulas"]["lookback_ratio"]
    assert page.text_content("[data-role=hal-formula-bos]") == result["formulas"]["bos_all"]
    heatmap = page.evaluate("document.getElementById('hal-heads').data[0].z")  # [head][token]
    assert heatmap == [[row[h] for row in result["bos_by_head"]] for h in range(len(result["heads"]))]

    fresh = new_page()
    fresh.goto(page.url)
    fresh.wait_for_selector("#view-hallucination:not([hidden]) .hal-token")
    assert fresh.input_value("#prompt") == "The cat <b>sat</b> on the mat & the" and fresh.input_value("#hal-max-new") == "5"
    assert analysis_posts(fresh) == []
    assert fresh.locator("[data-testid=hal-warning]").is_hidden()


def test_without_retrieval_heads_the_view_warns_and_shades_nothing(new_page, loupe_url):
    page = open_page(new_page)
    page.fill("#prompt", "The cat sat on the mat and the")
    page.fill("#hal-min-induction", "1")  # no head reaches it
    page.click("#run-hallucination")
    page.wait_for_selector("#view-hallucination:not([hidden]) .hal-token")
    result = api(loupe_url, f"/api/analyses/{url_state(page.url)['analysis']}")["result"]
    warning = page.locator("[data-testid=hal-warning]")
    assert warning.is_visible() and warning.text_content() == result["warning"] and "no retrieval heads" in result["warning"]
    assert page.locator("[data-testid=hal-text] .hal-token.flagged").count() == 0
    assert page.evaluate("[...document.querySelectorAll('.hal-token')].every((chip) => chip.style.background === '')")
    names = page.evaluate("document.getElementById('hal-signal').data.map((trace) => trace.name)")
    assert not any("retrieval" in name or name == "flagged" for name in names)


def test_evaluation_of_an_uploaded_jsonl_shows_roc_curves_and_rows(new_page, loupe_url, tmp_path):
    rows = [{"context": f"cat {i} sat . dog {i + 1} ran .", "question": "<i>cat</i>", "label": i % 2} for i in range(10)]
    upload = tmp_path / "rows.jsonl"
    upload.write_text("\n".join(json.dumps(row) for row in rows))
    page = open_page(new_page)
    page.set_input_files("#eval-file", str(upload))
    page.fill("#eval-min-induction", "0")  # the random tiny model has no head over the default bar
    wait_js(page, "document.getElementById('eval-file-info').textContent.startsWith('10 rows')")
    page.click("#run-hallucination-eval")
    page.wait_for_selector("#view-hallucination-eval:not([hidden]) table.hal-rows")
    request = api(loupe_url, f"/api/analyses/{url_state(page.url)['analysis']}")
    result = request["result"]
    assert request["params"]["source"] == "jsonl"
    assert page.locator("table.hal-rows i").count() == 0 and page.locator("table.hal-rows td").first.text_content() == "<i>cat</i>"
    curves = page.evaluate("document.getElementById('eval-roc').data.map((t) => ({ name: t.name, x: t.x, y: t.y }))")
    assert curves[0]["name"] == "chance" and len(curves) == 1 + len(result["signals"])
    by_name = {curve["name"].split(" (AUROC")[0]: curve for curve in curves[1:]}
    assert by_name["BOS, retrieval heads"]["x"] == result["signals"]["bos_retrieval"]["roc"]["fpr"]
    assert page.locator("table.hal-rows tr").count() == 1 + 10  # header + rows
    assert "10 rows, 5 made up" in page.locator("[data-testid=eval-summary]").text_content()
