"""Every view's export menu downloads its files: CSV, JSON and HTML from the API, PNG and SVG of the
view's chart, named after the view and holding what the API serves for it."""

import csv
import io
import json
import re
from pathlib import Path

import pytest

from .test_browser import PROMPT, api, open_page, url_state, wait_js, wait_pattern

pytestmark = pytest.mark.e2e


def download(page, menu: str, kind: str) -> tuple[str, bytes]:
    """Open the menu `menu` (its data-testid), click its `kind` item; the file's suggested name and bytes."""
    page.click(f"[data-testid={menu}] summary")
    with page.expect_download() as info:
        page.click(f"[data-testid={menu}] [data-export={kind}]")
    got = info.value
    return got.suggested_filename, Path(got.path()).read_bytes()


def rows(content: bytes) -> list[dict]:
    return list(csv.DictReader(io.StringIO(content.decode("utf-8"))))


def test_the_export_menu_downloads_every_format(new_page, loupe_url):
    page = open_page(new_page)
    page.fill("#prompt", PROMPT)
    page.click("#run-attention")
    page.wait_for_selector("#view-attention:not([hidden]) [data-testid=thumb-L1H2]")
    wait_js(page, "document.getElementById('stat-grid')._fullLayout")
    analysis_id = url_state(page.url)["analysis"]
    result = api(loupe_url, f"/api/analyses/{analysis_id}")["result"]
    stem = f"loupe-local_gpt2tiny-attention-{analysis_id[:8]}"

    name, content = download(page, "export-attention", "csv")
    assert name == f"{stem}.csv"
    stats = {(r["field"], int(r["layer"]), int(r["head"])): float(r["value"]) for r in rows(content) if r["field"].startswith("head_stats.")}
    assert stats == {(f"head_stats.{s}", layer, head): v for s, grid in result["head_stats"].items()
                     for layer, heads in enumerate(grid[0]) for head, v in enumerate(heads)}

    name, content = download(page, "export-attention", "json")
    assert name == f"{stem}.json" and json.loads(content)["result"] == result

    name, content = download(page, "export-attention", "html")
    assert name == f"{stem}.html" and b'id="loupe-data"' in content and b"plotly.js" in content

    # Images of the view's chart: named as the modebar names it, titled for the file only.
    name, content = download(page, "export-attention", "png")
    assert name == "loupe-local_gpt2tiny-attention-bos.png" and content.startswith(b"\x89PNG\r\n\x1a\n")
    name, content = download(page, "export-attention", "svg")
    svg = content.decode("utf-8")
    assert name == "loupe-local_gpt2tiny-attention-bos.svg" and svg.startswith("<svg")
    assert re.search(r'class="gtitle"[^>]*>local/gpt2tiny · attention · bos<', svg), svg[:2000]
    assert page.evaluate("document.getElementById('stat-grid').layout.title") is None  # the page's chart keeps no title

    # The head panel: its pattern as CSV and JSON, its heatmap as SVG titled with the head.
    page.click("[data-testid=thumb-L1H2]")
    wait_pattern(page, 1, 2)
    head = api(loupe_url, f"/api/analyses/{analysis_id}/attention?layer=1&head=2&iteration=0")
    name, content = download(page, "export-head", "csv")
    assert name == f"loupe-local_gpt2tiny-attention-L1H2-it0-{analysis_id[:8]}.csv"
    cells = {(int(r["query_pos"]), int(r["key_pos"])): (r["query_token"], r["key_token"], float(r["weight"])) for r in rows(content)}
    assert cells == {(q, k): (head["tokens"][q], head["tokens"][k], w) for q, row in enumerate(head["pattern"]) for k, w in enumerate(row)}
    name, content = download(page, "export-head", "json")
    assert name == "loupe-local_gpt2tiny-attention-L1H2.json" and json.loads(content)["pattern"] == head["pattern"]
    name, content = download(page, "export-head", "svg")
    assert name == "loupe-local_gpt2tiny-attention-L1H2.svg"
    assert re.search(r'class="gtitle"[^>]*>local/gpt2tiny · attention · L1H2<', content.decode("utf-8"))


def test_every_view_has_the_same_menu(new_page, loupe_url):
    page = open_page(new_page)
    page.fill("#seq-len", "8")
    page.click("#run-head-scores")
    page.wait_for_selector("#view-head-scores:not([hidden])")
    wait_js(page, "document.getElementById('score-grid')._fullLayout")
    analysis_id = url_state(page.url)["analysis"]
    result = api(loupe_url, f"/api/analyses/{analysis_id}")["result"]
    name, content = download(page, "export-head_scores", "csv")
    assert name == f"loupe-local_gpt2tiny-head_scores-{analysis_id[:8]}.csv"
    induction = {(int(r["layer"]), int(r["head"])): float(r["value"]) for r in rows(content) if r["field"] == "scores.induction"}
    assert induction == {(layer, head): v for layer, heads in enumerate(result["scores"]["induction"][0]) for head, v in enumerate(heads)}
    items = page.evaluate("[...document.querySelectorAll('.export-menu')].map((m) => m.dataset.testid)")
    assert set(items) >= {"export-attention", "export-head_scores", "export-head"}
    kinds = page.evaluate("[...document.querySelectorAll('.export-menu')].map((m) => [...m.querySelectorAll('[data-export]')].map((i) => i.dataset.export).join())")
    assert set(kinds) == {"csv,json,html,view,png,svg"}


def _open_offline(browser, path):
    """The saved file in a fresh page; (page, requests made, page errors, CSP refusals)."""
    context = browser.new_context(viewport={"width": 1300, "height": 1000})
    page = context.new_page()
    requests, errors, console = [], [], []
    page.on("request", lambda request: requests.append(request.url))
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.on("console", lambda message: console.append(message.text))
    page.goto(path.as_uri())
    return context, page, requests, errors, console


# The text of an element without its charts and controls, whitespace folded.
TEXT = """(selector) => {{
    const clone = document.querySelector(selector).cloneNode(true);
    clone.querySelectorAll('.js-plotly-plot, [data-figure], .export-menu, button, input, select, h1, script').forEach((el) => el.remove());
    return clone.textContent.replace(/\\s+/g, ' ').trim();
}}"""
FIGURES = "[...document.querySelectorAll('{}')].filter((el) => el._fullLayout).map((el) => el.data.map((t) => t.z ?? t.y ?? null))"


@pytest.mark.parametrize("analysis", ["probes", "logit_lens"])
def test_the_view_saved_as_html_shows_the_same_charts_and_text_offline(new_page, browser, tmp_path, analysis):
    """Views that are not layer x head grids (curves, a token table) saved from the page: the file
    opens from disk, fetches nothing, and draws every chart from the same figure the page drew."""
    page = open_page(new_page)
    if analysis == "probes":
        page.select_option("#model-select", "local/loopedtiny")
        page.fill("#probe-n", "40")
        page.fill("#probe-folds", "2")
    else:
        page.fill("#prompt", "The cat sat on the mat <b>x</b>")
    page.click(f"#run-{analysis.replace('_', '-')}")
    view = f"#view-{analysis.replace('_', '-')}"
    page.wait_for_selector(f"{view}:not([hidden])")
    wait_js(page, f"document.querySelector('{view}').querySelectorAll('.js-plotly-plot, .lens-cell').length > 0", timeout=60)
    shown = page.evaluate(FIGURES.format(f"{view} .js-plotly-plot"))
    text = page.evaluate(TEXT.format(), view)
    name, content = download(page, f"export-{analysis}", "view")
    assert name.endswith("-view.html")
    path = tmp_path / name
    path.write_bytes(content)
    context, saved, requests, errors, console = _open_offline(browser, path)
    try:
        wait_js(saved, f"document.querySelectorAll('[data-figure]').length === {len(shown)} && "
                       "[...document.querySelectorAll('[data-figure]')].every((el) => el._fullLayout)")
        assert saved.evaluate(FIGURES.format("[data-figure]")) == shown
        assert saved.evaluate(TEXT.format(), "body") == text and len(text) > 40
        assert saved.locator("b").count() == 0  # token strings stayed text
        assert requests == [path.as_uri()] and not errors
        assert not [m for m in console if "Content Security Policy" in m], console
    finally:
        context.close()
