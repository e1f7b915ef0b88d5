"""A long prompt in a real Chromium: positions on the axes, tokens in the hover readout, and the
drawn values equal to the stored pattern (sent compressed, inflated by the page)."""

import re

import httpx
import pytest

from .test_browser import display, wait_js

pytestmark = pytest.mark.e2e

LONG = "local/gpt2long"  # the tiny GPT-2 with a 512-token context
PROMPT = " ".join(f"word{i % 37} <i>{i}</i>" for i in range(24))  # ~340 tokens


def test_long_prompt_heatmap_uses_positions_and_names_tokens_on_hover(new_page, loupe_url):
    page = new_page()
    page.goto("/")
    page.wait_for_selector(f"#model-select option[value='{LONG}']", state="attached")
    page.select_option("#model-select", LONG)
    page.fill("#prompt", PROMPT)
    page.click("#run-attention")
    page.click("[data-testid=thumb-L0H1]")
    page.wait_for_selector("#pattern-plot[data-ready=true][data-layer='0'][data-head='1']")
    analysis_id = page.evaluate("new URLSearchParams(location.search).get('analysis')")
    tokens = httpx.get(f"{loupe_url}/api/analyses/{analysis_id}", timeout=30).json()["result"]["tokens"]
    assert len(tokens) > 256  # past the categorical-axis limit
    drawn = page.evaluate(
        """() => {
          const gd = document.getElementById("pattern-plot");
          return { z: gd.data[0].z.map((row) => Array.from(row)), type: gd._fullLayout.xaxis.type,
                   ticks: [...gd.querySelectorAll(".xtick text")].map((t) => t.textContent.replace(/\\u200b/g, "")) };
        }"""
    )
    assert drawn["type"] == "linear" and 8 <= len(drawn["ticks"]) <= 40  # thinned token labels, not T of them
    short = {pos: display(token) if len(display(token)) <= 12 else display(token)[:11] + "…" for pos, token in enumerate(tokens)}
    assert set(drawn["ticks"]) <= {f"{short[pos]}{pos}" for pos in short}  # token labels, long ones cut
    stored = httpx.get(f"{loupe_url}/api/analyses/{analysis_id}/attention?layer=0&head=1", timeout=30).json()["pattern"]
    assert len(drawn["z"]) == len(tokens)
    assert max(abs(a - b) for got, want in zip(drawn["z"], stored) for a, b in zip(got, want)) < 1e-4

    q, k = 200, 17
    point = page.evaluate(
        """([x, y]) => {
          const gd = document.getElementById("pattern-plot");
          const box = gd.querySelector(".nsewdrag").getBoundingClientRect();
          return [box.left + gd._fullLayout.xaxis.l2p(x), box.top + gd._fullLayout.yaxis.l2p(y)];
        }""",
        [k, q],
    )
    page.mouse.move(*point)
    wait_js(page, "document.querySelector('[data-testid=hover-readout]').textContent.startsWith('query')")
    text = page.text_content("[data-testid=hover-readout]")
    # cells are ~2 px wide here: the hovered cell is the aimed one or a neighbour; its readout must
    # name that cell's own tokens and weight
    match = re.fullmatch(r"query (\d+) (.*) → key (\d+) (.*): (\d\.\d{3})", text)
    assert match, text
    hovered_q, hovered_k = int(match[1]), int(match[3])
    assert abs(hovered_q - q) <= 1 and abs(hovered_k - k) <= 1
    assert match[2] == display(tokens[hovered_q]) and match[4] == display(tokens[hovered_k])
    assert match[5] == f"{drawn['z'][hovered_q][hovered_k]:.3f}"
