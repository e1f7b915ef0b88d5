"""The emergence view in a real Chromium: one line per head of the stored scores across checkpoints,
the checkpoint selector in the URL, and clicking a point opens that head's attention at that checkpoint."""

import pytest

from .test_browser import api, cell_point, open_page, url_state, wait_js, wait_pattern

pytestmark = pytest.mark.e2e

MODEL = "local/gpt2ckpt"
HEADS = "document.getElementById('em-heads')"


def test_trajectories_per_head_and_a_point_opens_its_head_at_that_checkpoint(new_page, loupe_url):
    page = open_page(new_page)
    page.select_option("#model-select", MODEL)
    assert page.locator("#checkpoint-select").is_visible()
    for field, value in {"seq-len": 8, "batch": 2, "n-texts": 2, "icl-early": 4, "icl-late": 40}.items():
        page.fill(f"#em-{field}", str(value))
    page.click("#run-emergence")
    wait_js(page, f"{HEADS}?.data !== undefined && location.search.includes('view=emergence')", timeout=90)
    result = api(loupe_url, f"/api/analyses/{url_state(page.url)['analysis']}")["result"]
    assert result["points"] == [f"{MODEL}@0", f"{MODEL}@100", f"{MODEL}@1000", MODEL]
    drawn = page.evaluate(f"{HEADS}.data.map((t) => ({{name: t.name, x: t.x, y: t.y}}))")
    heads = [(layer, head) for layer in range(2) for head in range(4)]
    assert [t["name"] for t in drawn] == [f"L{l}H{h}" for l, h in heads]  # one line per head
    for trace, (layer, head) in zip(drawn, heads):
        assert trace["x"] == ["0", "100", "1000", "final"]
        assert trace["y"] == [point[0][layer][head] for point in result["scores"]["induction"]]
    shapes = page.evaluate(f"{HEADS}.layout.shapes.map((s) => s.x0)")
    assert ["0", "100", "1000", "final"][result["phase_change"]["index"]] in shapes  # the phase change is marked

    page.select_option("#em-score", "bos")  # the score follows its selector and the URL
    wait_js(page, f"location.search.includes('emergence_score=bos') && {HEADS}.data[0].y[0] === {result['scores']['bos'][0][0][0][0]}")

    # L1H2 at checkpoint 100, clicked where it is drawn
    layer, head, index = 1, 2, 1
    y = result["scores"]["bos"][index][0][layer][head]
    page.evaluate(f"Plotly.restyle({HEADS}, {{visible: false}}, [...Array(8).keys()].filter((k) => k !== {layer * 4 + head}))")
    page.mouse.click(*cell_point(page, "em-heads", index, y))
    wait_pattern(page, layer, head)
    state = url_state(page.url)
    assert state["view"] == "attention" and (state["layer"], state["head"]) == (str(layer), str(head))
    opened = api(loupe_url, f"/api/analyses/{state['analysis']}")
    assert opened["model"] == f"{MODEL}@100" and opened["text"] == result["probe_text"]
    assert page.locator("#checkpoint-select").input_value() == "100"  # the page shows the checkpoint it runs on
    assert page.locator("#model-select").input_value() == MODEL
