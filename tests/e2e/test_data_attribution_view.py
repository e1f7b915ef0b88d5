"""The data_attribution view in a real Chromium: tokens are text (never HTML) shaded by their share, the
histogram has one trace per data kind, and the card is offered only where a model declares training data."""

import json

import pytest

from .test_browser import api, open_page, wait_js

pytestmark = pytest.mark.e2e

EVIL = '<img src=x data-evil="1">'
RESULT = {
    "layer": 1, "head": 1, "n_head_params": 4144, "until_step": 2925, "checkpoints": [0, 2900], "steps": [5, 9],
    "formulas": {"influence": "f_influence", "contribution": "f_contribution"},
    "examples": [[5, 2, "repeat", 2e-3], [9, 0, "english", 1e-4], [9, 3, "repeat", -1e-3]],
    "top": [{"step": 5, "row": 2, "kind": "repeat", "influence": 2e-3, "tokens": ["<|endoftext|>", EVIL, " a"],
             "contributions": [0, 1.5e-3, 5e-4]}],
    "bottom": [{"step": 9, "row": 3, "kind": "repeat", "influence": -1e-3, "tokens": ["<|endoftext|>", "b", "\\n"],
                "contributions": [0, -1e-3, 0]}],
    "by_kind": [{"kind": "english", "count": 1, "sum": 1e-4, "mean": 1e-4, "positive": 1},
                {"kind": "repeat", "count": 2, "sum": 1e-3, "mean": 5e-4, "positive": 1}],
}


def test_rows_shaded_as_text_and_a_histogram_per_kind(new_page, loupe_url):
    page = open_page(new_page)
    page.evaluate(
        f"""async () => {{
          const plot = await import("/js/plots/data_attribution.js");
          const el = document.createElement("div");
          el.id = "da-test";
          el.innerHTML = plot.view;
          document.body.append(el);
          plot.render(el, {json.dumps(RESULT)}, {{}});
        }}"""
    )
    wait_js(page, "document.querySelector('#da-test #da-kinds')?.data?.length === 2")
    chips = page.locator("#da-test [data-role=da-top] .token")
    assert chips.nth(1).text_content() == EVIL.replace(" ", "␣") and page.locator("[data-evil]").count() == 0  # text, never HTML
    backgrounds = [chips.nth(i).evaluate("(c) => c.style.background") for i in range(3)]
    assert "rgba(29, 78, 216, 0.6)" in backgrounds[1] and "0.2" in backgrounds[2]  # blue raises, by |c| / max
    assert "185, 28, 28" in page.locator("#da-test [data-role=da-bottom] .token").nth(1).evaluate("(c) => c.style.background")
    kinds = page.evaluate("document.querySelector('#da-test #da-kinds').data.map((t) => [t.name, t.x])")
    assert kinds == [["english", [1e-4]], ["repeat", [2e-3, -1e-3]]]
    assert "step 5, row 2 (repeat)" in page.locator("#da-test [data-role=da-top]").inner_text()
    # no model of this server declares training data: the card is not offered
    models = api(loupe_url, "/api/models")
    assert not any("training_data" in m["capabilities"] for m in models)
    button = page.locator("#run-data-attribution")
    assert button.count() == 1 and not button.is_visible()
