"""An encoder in a real Chromium: the head view draws the whole matrix (keys after the query too),
equal to the stored pattern, and no generation card is offered."""

import pytest

from .test_browser import api, open_page, url_state, wait_js, wait_pattern

pytestmark = pytest.mark.e2e

ENCODER = "local/bert_mlm"


def test_an_encoder_head_shows_its_whole_attention_matrix(new_page, loupe_url):
    page = open_page(new_page)
    page.select_option("#model-select", ENCODER)
    assert not page.locator("[data-testid=card-hallucination]").is_visible()
    page.fill("#prompt", "The cat sat on the mat.")
    page.click("#run-attention")
    page.wait_for_selector("#view-attention:not([hidden])")
    wait_js(page, "document.querySelectorAll('#thumbnails .thumb').length === 8")
    page.click("[data-testid=thumb-L1H0]")
    drawn = wait_pattern(page, 1, 0)["z"]
    analysis_id = url_state(page.url)["analysis"]
    stored = api(loupe_url, f"/api/analyses/{analysis_id}/attention?layer=1&head=0")["pattern"]
    assert len(drawn) == len(stored) and all(abs(a - b) < 1e-4 for row_d, row_s in zip(drawn, stored) for a, b in zip(row_d, row_s))
    above = [drawn[q][k] for q in range(len(drawn)) for k in range(q + 1, len(drawn))]
    assert max(above) > 0.01  # the query attends to later tokens: nothing was cut to a triangle
