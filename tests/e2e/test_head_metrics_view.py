"""The head-metrics view in a real Chromium: the scatter's points are the stored metrics, clicking a
head lists its stored examples, and clicking an example opens that head's attention map on its text."""

import json

import pytest

from .test_browser import api, cell_point, open_page, url_state, wait_js, wait_pattern

pytestmark = pytest.mark.e2e

SCATTER = "document.getElementById('hm-scatter')"


def _run(page, base: str, model: str, **fields):
    page.select_option("#model-select", model)
    for field, value in fields.items():
        page.fill(f"#hm-{field}", str(value))
    page.click("#run-head-metrics")
    wait_js(page, f"{SCATTER}?.data !== undefined && location.search.includes('view=head_metrics')", timeout=60)
    return api(base, f"/api/analyses/{url_state(page.url)['analysis']}")


def test_scatter_examples_and_an_example_opens_its_head(new_page, loupe_url):
    page = open_page(new_page)
    result = _run(page, loupe_url, "induction-2l", **{"n-texts": 20, "max-tokens": 48, "top-k": 3})["result"]
    assert result["corpus"] == "english" and len(result["texts"]) == 20
    drawn = page.evaluate(f"(() => {{ const t = {SCATTER}.data[0]; return {{x: t.x, y: t.y, text: t.text, ids: t.customdata}}; }})()")
    heads = [(i, l, h) for i in range(result["n_iterations"]) for l in range(result["n_layers"]) for h in range(result["n_heads"])]
    assert [tuple(ids) for ids in drawn["ids"]] == [(l, h, i) for i, l, h in heads]
    assert drawn["x"] == [result["metrics"]["previous_token"][i][l][h] for i, l, h in heads]
    assert drawn["y"] == [result["metrics"]["induction"][i][l][h] for i, l, h in heads]
    assert drawn["text"] == [f"L{l}H{h}" for _, l, h in heads]

    page.select_option("#hm-x", "bos")  # the axis follows its selector and the URL
    wait_js(page, f"location.search.includes('metric_x=bos') && {SCATTER}.data[0].x[0] === {result['metrics']['bos'][0][0][0]}")

    # the strongest induction head, clicked where it is drawn
    best = max(range(len(heads)), key=lambda k: drawn["y"][k])
    _, layer, head = heads[best]
    x = page.evaluate(f"{SCATTER}.data[0].x[{best}]")
    page.mouse.click(*cell_point(page, "hm-scatter", x, drawn["y"][best]))
    wait_js(page, f"document.querySelector('[data-testid=hm-examples]')?.dataset.head === '{layer}.{head}.0.induction'")
    state = url_state(page.url)
    assert (state["metric_layer"], state["metric_head"]) == (str(layer), str(head))
    examples = result["examples"]["induction"][0][layer][head]
    items = page.locator("[data-testid=hm-examples] li")
    assert items.count() == len(examples) == 3
    for rank, example in enumerate(examples):
        chips = items.nth(rank).locator(".token")
        assert chips.count() == len(example["tokens"])
        marked = items.nth(rank).locator(".token.selected")
        assert marked.count() == 1 and marked.get_attribute("title") == f"position {example['position'] - example['offset']}"
        assert f"{example['value']:.4f}" in items.nth(rank).inner_text()

    first = examples[0]
    page.click("[data-testid=hm-example-0]")
    drawn_pattern = wait_pattern(page, layer, head)
    state = url_state(page.url)
    assert state["view"] == "attention" and state["token"] == str(first["position"])
    opened = api(loupe_url, f"/api/analyses/{state['analysis']}")
    assert opened["analysis"] == "attention" and opened["model"] == "induction-2l"
    assert opened["text"] == result["texts"][first["text"]]
    row = drawn_pattern["z"][first["position"]]
    # the example's induction value is the attention of that row to the tokens after earlier occurrences
    ids = opened["result"]["token_ids"]
    q = first["position"]
    after = {j + 1 for j in range(1, q - 1) if ids[j] == ids[q]}
    assert sum(row[k] for k in after) == pytest.approx(first["value"], abs=2e-3)


def test_an_uploaded_jsonl_is_the_corpus(new_page, loupe_url, tmp_path):
    texts = ["The cat sat on the mat. The cat sat.", "abc abc abc", "to be or not to be"]
    upload = tmp_path / "texts.jsonl"
    upload.write_text("\n".join(json.dumps({"text": text}) for text in texts) + "\n")
    page = open_page(new_page)
    page.set_input_files("#hm-file", str(upload))
    wait_js(page, "document.getElementById('hm-corpus').value === 'texts'")
    assert "3 texts" in page.inner_text("#hm-file-info")
    analysis = _run(page, loupe_url, "local/gpt2tiny", **{"top-k": 2})
    assert analysis["params"]["texts"] == texts and analysis["result"]["texts"] == texts
    assert analysis["result"]["corpus"] == "texts"

    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": "fine"}\n{"label": 1}\n')
    page.set_input_files("#hm-file", str(bad))
    wait_js(page, "!document.getElementById('error').hidden")
    assert "Line 2" in page.inner_text("#error-message")


def test_a_looped_model_has_a_point_per_head_and_iteration(new_page, loupe_url):
    page = open_page(new_page)
    result = _run(page, loupe_url, "local/loopedtiny", **{"n-texts": 4, "max-tokens": 16, "top-k": 1})["result"]
    assert result["n_iterations"] == 3
    drawn = page.evaluate(f"(() => {{ const t = {SCATTER}.data[0]; return {{y: t.y, text: t.text}}; }})()")
    heads = [(i, l, h) for i in range(3) for l in range(result["n_layers"]) for h in range(result["n_heads"])]
    assert drawn["text"] == [f"L{l}H{h} it{i}" for i, l, h in heads]
    assert drawn["y"] == [result["metrics"]["induction"][i][l][h] for i, l, h in heads]
