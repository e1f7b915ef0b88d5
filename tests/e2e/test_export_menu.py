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
    assert set(kinds) == {"csv,json,html,png,svg"}
