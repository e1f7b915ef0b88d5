"""The open head's token view in a real Chromium: the prompt as text, each token shaded by the stored
pattern's row (attends to) or column (attended by) of the hovered, clicked or keyed token; pinned
heads in their own hue; 1,000 tokens; markup in a prompt stays text."""

import httpx
import pytest

from .test_browser import analysis_posts, open_page, url_state, wait_js

pytestmark = pytest.mark.e2e

PROMPT = "The cat sat on the mat. The cat sat on the mat."
SHADE = 0.8  # tokenview.js: the alpha a weight of 1 gets


def stored(base: str, analysis_id: str, layer: int, head: int) -> list[list[float]]:
    response = httpx.get(f"{base}/api/analyses/{analysis_id}/attention?layer={layer}&head={head}", timeout=30)
    response.raise_for_status()
    return response.json()["pattern"]  # [query_pos][key_pos]


def shading(page) -> dict:
    """What the token view shows now: the position it shades from, its direction, and every token's
    text, weight (data-w) and background alpha."""
    return page.evaluate(
        """() => {
          const text = document.querySelector("[data-testid=token-text]");
          const alpha = (color) => { const m = color.match(/rgba?\\(([^)]+)\\)/); const p = m[1].split(","); return p.length > 3 ? Number(p[3]) : (color === "rgba(0, 0, 0, 0)" ? 0 : 1); };
          const nodes = [...text.children];
          return { from: text.dataset.from, direction: text.dataset.direction,
                   text: nodes.map((n) => n.textContent), w: nodes.map((n) => n.dataset.w === "" ? null : Number(n.dataset.w)),
                   alpha: nodes.map((n) => alpha(getComputedStyle(n).backgroundColor)) };
        }"""
    )


def wait_from(page, pos: int, direction: str) -> dict:
    wait_js(page, f"(() => {{ const t = document.querySelector('[data-testid=token-text]'); return t && t.dataset.from === '{pos}' && t.dataset.direction === '{direction}'; }})()")
    return shading(page)


def expected(pattern, pos: int, direction: str) -> list[float]:
    return pattern[pos] if direction == "to" else [row[pos] for row in pattern]


def assert_shaded(shown: dict, want: list[float]):
    assert len(shown["w"]) == len(want)
    assert max(abs(a - b) for a, b in zip(shown["w"], want)) < 2e-4  # u16 on the wire, 4 decimals in data-w
    assert max(abs(a - SHADE * b) for a, b in zip(shown["alpha"], want)) < 0.01  # what the eye sees


def open_head(page, layer: int, head: int):
    page.click(f"[data-testid=thumb-L{layer}H{head}]")
    page.wait_for_selector(f"#token-view[data-ready^='{url_state(page.url)['analysis']}/{layer}/{head}/']")


def test_token_view_shades_by_the_stored_row_or_column_and_keeps_its_state_in_the_url(new_page, loupe_url):
    page = open_page(new_page)
    page.fill("#prompt", PROMPT)
    page.click("#run-attention")
    open_head(page, 1, 2)
    analysis_id = url_state(page.url)["analysis"]
    tokens = httpx.get(f"{loupe_url}/api/analyses/{analysis_id}", timeout=30).json()["result"]["tokens"]
    pattern = stored(loupe_url, analysis_id, 1, 2)
    assert shading(page)["text"] == tokens  # the prompt as text: every token, as the tokenizer cut it

    # hover: the row of the hovered token (what it attends to)
    page.hover("[data-testid=token-text] [data-pos='5']")
    assert_shaded(wait_from(page, 5, "to"), expected(pattern, 5, "to"))
    # click selects; the toggle flips to its column (what attends to it)
    page.click("[data-testid=token-text] [data-pos='3']")
    page.mouse.move(5, 5)  # off the text: the selected token shades
    assert_shaded(wait_from(page, 3, "to"), expected(pattern, 3, "to"))
    page.check("[data-testid=direction-from]")
    shown = wait_from(page, 3, "from")
    assert_shaded(shown, expected(pattern, 3, "from"))
    assert shown["w"][:3] == [0, 0, 0]  # causal: earlier queries never attend to position 3
    assert url_state(page.url)["token"] == "3" and url_state(page.url)["direction"] == "from"

    # keyboard: the selected token is the one tab stop; arrows move it, Enter keeps it
    page.focus("[data-testid=token-text] [data-pos='3']")
    page.keyboard.press("ArrowRight")
    page.keyboard.press("ArrowRight")
    assert_shaded(wait_from(page, 5, "from"), expected(pattern, 5, "from"))
    assert page.evaluate("document.activeElement.dataset.pos") == "5"
    assert page.evaluate("[...document.querySelectorAll('[data-testid=token-text] [tabindex=\"0\"]')].map((n) => n.dataset.pos)") == ["5"]
    page.keyboard.press("ArrowLeft")
    page.keyboard.press("Enter")
    wait_from(page, 4, "from")
    assert page.get_attribute("[data-testid=token-text] [data-pos='4']", "aria-selected") == "true"
    assert "Token 4" in page.text_content("#token-view [data-role=announce]")
    wait_js(page, "new URLSearchParams(location.search).get('token') === '4'")

    # a pinned head shades beside the open one: each token's weight is the strongest of the two
    page.click("[data-testid=pin-head]")
    open_head(page, 0, 1)
    wait_js(page, "document.querySelector('[data-testid=token-head-L1H2]') !== null")
    other = stored(loupe_url, analysis_id, 0, 1)
    both = [max(a, b) for a, b in zip(expected(pattern, 4, "from"), expected(other, 4, "from"))]
    shown = wait_from(page, 4, "from")
    assert max(abs(a - b) for a, b in zip(shown["w"], both)) < 2e-4
    assert url_state(page.url)["pins"] == "1.2"
    shadows = page.evaluate("getComputedStyle(document.querySelector('[data-testid=token-text] [data-pos=\"6\"]')).boxShadow")
    assert shadows.count("inset") == 2  # one underline per head

    # the link reopens the same shading with no recomputation
    fresh = new_page()
    fresh.goto(page.url)
    fresh.wait_for_selector(f"#token-view[data-ready='{analysis_id}/0/1/0/1']")
    again = wait_from(fresh, 4, "from")
    assert again["w"] == shown["w"] and fresh.is_checked("[data-testid=direction-from]")
    assert analysis_posts(fresh) == []


def test_markup_in_a_prompt_is_text_in_the_token_view(new_page):
    page = open_page(new_page)
    dialogs = []
    page.on("dialog", lambda dialog: (dialogs.append(dialog.message), dialog.dismiss()))
    payload = "<img src=x onerror=alert(1)> and <b>bold</b>"
    page.fill("#prompt", payload)
    page.click("#run-attention")
    open_head(page, 0, 0)
    page.hover("[data-testid=token-text] [data-pos='2']")
    page.wait_for_timeout(300)  # time for any injected handler to run
    assert "".join(shading(page)["text"][1:]) == payload
    assert page.locator("#token-view img, #token-view b").count() == 0 and dialogs == []


def test_a_thousand_tokens_shade_by_style_changes_only(new_page, loupe_url):
    page = new_page()
    page.goto("/")
    page.wait_for_selector("#model-select option[value='local/gpt2k']", state="attached")
    page.select_option("#model-select", "local/gpt2k")
    page.fill("#prompt", " ".join(f"word{i % 37} <i>{i}</i>" for i in range(69)))
    page.click("#run-attention")
    open_head(page, 1, 3)
    analysis_id = url_state(page.url)["analysis"]
    pattern = stored(loupe_url, analysis_id, 1, 3)
    assert len(pattern) >= 1000
    # count node insertions from here on: hovering must restyle, never rebuild, the token nodes
    page.evaluate(
        """() => { window.added = 0; new MutationObserver((records) => { for (const r of records) window.added += r.addedNodes.length; })
                   .observe(document.querySelector("[data-testid=token-text]"), { childList: true, subtree: true }); }"""
    )
    for pos in (999, 10, 500):
        page.hover(f"[data-testid=token-text] [data-pos='{pos}']")
        assert_shaded(wait_from(page, pos, "to"), expected(pattern, pos, "to"))
    page.click("[data-testid=token-text] [data-pos='500']")
    page.check("[data-testid=direction-from]")
    page.mouse.move(5, 5)
    took = page.evaluate(
        """() => { const t0 = performance.now(); const n = document.querySelector("[data-testid=token-text] [data-pos='501']");
                   n.focus(); n.dispatchEvent(new KeyboardEvent("keydown", { key: "ArrowRight", bubbles: true }));
                   return performance.now() - t0; }"""
    )
    assert_shaded(wait_from(page, 502, "from"), expected(pattern, 502, "from"))
    assert took < 200, f"one key press took {took:.0f} ms at {len(pattern)} tokens"
    assert page.evaluate("window.added") == 0
