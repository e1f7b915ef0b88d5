"""The polish a new user asked for, in a real Chromium: a model's card and example prompt, a live
token count with its limit and Truncate, token labels on a zoomed pattern, legible newline and
punctuation chips, and the prompt kept across a reload of a view that takes no text."""

import json
from pathlib import Path

import httpx
import pytest
from transformers import AutoTokenizer

from .test_browser import display, open_page, url_state, wait_js

pytestmark = pytest.mark.e2e

SHIPPED = Path(__file__).resolve().parents[2] / "models"
LONG = "local/gpt2long"


def test_model_card_and_example_prompt(new_page):
    page = open_page(new_page)
    assert page.locator("[data-testid=show-card]").is_hidden()  # the tiny model has no card
    assert page.locator("[data-testid=prompt-hint]").is_hidden()
    page.select_option("#model-select", "looped-add")
    page.wait_for_selector("[data-testid=show-card]:not([hidden])")
    hint = json.loads((SHIPPED / "looped-add" / "loupe.json").read_text())["prompt_hint"]
    assert hint == "23+45=860?" and page.text_content("[data-testid=prompt-hint-text]") == hint

    page.click("[data-testid=show-card]")
    page.wait_for_selector("[data-testid=model-card]:not([hidden])")
    card = page.locator("[data-testid=model-card-text]")
    assert card.text_content() == (SHIPPED / "looped-add" / "README.md").read_text()
    assert card.evaluate("(el) => el.children.length") == 0  # the markdown is text, never HTML
    page.keyboard.press("Escape")
    wait_js(page, "document.getElementById('model-card').hidden")

    page.click("[data-testid=use-hint]")
    assert page.input_value("#prompt") == hint
    tokenizer = AutoTokenizer.from_pretrained(SHIPPED / "looped-add")
    n_ctx = json.loads((SHIPPED / "looped-add" / "config.json").read_text())["max_position_embeddings"]
    n = 1 + len(tokenizer(hint, add_special_tokens=False)["input_ids"])  # BOS prepended
    wait_js(page, f"document.getElementById('token-count').dataset.nTokens === '{n}'")
    assert page.text_content("[data-testid=token-count]").startswith(f"{n} / {min(1024, n_ctx)} tokens")


def test_token_count_warns_past_the_limit_and_truncate_runs_exactly_the_first_tokens(new_page, loupe_url, model_dir):
    page = open_page(new_page)
    text = "The cat sat on the mat. " * 30
    tokenizer = AutoTokenizer.from_pretrained(model_dir / "gpt2tiny")
    whole = [0] + tokenizer(text)["input_ids"]  # BOS = id 0
    assert len(whole) > 128
    page.fill("#prompt", text)
    wait_js(page, f"document.getElementById('token-count').dataset.nTokens === '{len(whole)}'")
    count = page.locator("[data-testid=token-count]")
    assert count.get_attribute("data-over") == "true" and "warning" in count.get_attribute("class")
    assert count.text_content().startswith(f"{len(whole)} / 128 tokens: past")  # the tiny model's context
    page.check("[data-testid=truncate]")
    page.click("#run-attention")
    wait_js(page, "new URLSearchParams(location.search).has('analysis')")
    analysis = httpx.get(f"{loupe_url}/api/analyses/{url_state(page.url)['analysis']}", timeout=30).json()
    ran = [0] + tokenizer(analysis["text"])["input_ids"]
    assert len(ran) == len(analysis["result"]["tokens"]) and 127 <= len(ran) <= 128
    assert ran == whole[: len(ran)]  # exactly the first tokens of the text typed
    assert page.input_value("#prompt") == analysis["text"] and text.startswith(analysis["text"])
    wait_js(page, f"document.getElementById('token-count').dataset.nTokens === '{len(ran)}'")
    assert count.get_attribute("data-over") == "false"


def test_zooming_a_long_pattern_labels_every_visible_token(new_page, loupe_url):
    page = new_page()
    page.goto("/")
    page.wait_for_selector(f"#model-select option[value='{LONG}']", state="attached")
    page.select_option("#model-select", LONG)
    page.fill("#prompt", " ".join(f"word{i % 37} <i>{i}</i>" for i in range(24)))
    page.click("#run-attention")
    page.click("[data-testid=thumb-L0H1]")
    page.wait_for_selector("#pattern-plot[data-ready=true][data-layer='0'][data-head='1']")
    analysis_id = url_state(page.url)["analysis"]
    tokens = httpx.get(f"{loupe_url}/api/analyses/{analysis_id}", timeout=30).json()["result"]["tokens"]
    short = [display(t) if len(display(t)) <= 12 else display(t)[:11] + "…" for t in tokens]
    ticks = """() => [...document.querySelectorAll("#pattern-plot .xtick text")]
                     .map((t) => t.textContent.replace(/\\u200b/g, ""))"""
    assert len(page.evaluate(ticks)) < 40  # thinned over ~340 tokens
    page.evaluate("Plotly.relayout(document.getElementById('pattern-plot'), {'xaxis.range': [99.5, 119.5]})")
    want = [f"{short[pos]}{pos}" for pos in range(100, 120)]
    wait_js(page, f"({ticks})().length === {len(want)}")
    assert page.evaluate(ticks) == want  # every visible token, labelled as the full axis labels it
    page.evaluate("Plotly.relayout(document.getElementById('pattern-plot'), {'xaxis.autorange': true})")
    wait_js(page, f"({ticks})().length < 40")  # zoomed out: thinned again


def test_newline_and_punctuation_chips_never_overlap(new_page):
    page = open_page(new_page)
    boxes = page.evaluate(
        """async () => {
          const { renderText } = await import("/js/plots/hallucination.js");
          const el = Object.assign(document.createElement("div"), { className: "hal-text" });
          document.querySelector(".content").prepend(el);
          const tokens = ["\\n\\n\\n", ".", ",", "!", "\\n", ";", ":"];
          const n = tokens.length;
          renderText(el, { prompt_tokens: ["<bos>", "Hi"], tokens, flagged: Array(n).fill(false),
                           signal: Array(n).fill(0.5), bos_by_head: tokens.map(() => [0.1]), heads: ["L0H0"],
                           bos_all: Array(n).fill(0.2), lookback_ratio: Array(n).fill(0.3) });
          const natural = Object.assign(document.createElement("span"), { textContent: "↵" });
          el.append(natural);
          const rect = (node) => { const r = node.getBoundingClientRect(); return [r.left, r.right, r.top]; };
          return { chips: [...el.querySelectorAll(".hal-token")].map(rect), natural: rect(natural),
                   glyphs: [...el.querySelectorAll(".hal-token")].map((chip) => [...chip.querySelectorAll(".glyph")].map(rect)),
                   texts: [...el.querySelectorAll(".hal-token")].map((chip) => chip.textContent) };
        }"""
    )
    assert boxes["texts"] == ["↵↵↵", ".", ",", "!", "↵", ";", ":"]
    assert [len(g) for g in boxes["glyphs"]] == [3, 0, 0, 0, 1, 0, 0]  # one glyph box per newline
    advance = boxes["natural"][1] - boxes["natural"][0]
    for left, right, _ in boxes["glyphs"][0] + boxes["glyphs"][4]:
        assert right - left >= advance + 2  # room around each arrow
    for (_, right, _), (left, _, _) in zip(boxes["glyphs"][0], boxes["glyphs"][0][1:]):
        assert right <= left + 0.5  # the three arrows side by side
    for (l1, r1, top1), (l2, r2, top2) in zip(boxes["chips"], boxes["chips"][1:]):
        assert r1 - l1 >= 6 and (top1 != top2 or r1 <= l2 + 0.5)  # a box each, never on top of the next


def test_reloading_head_scores_keeps_the_prompt(new_page):
    page = open_page(new_page)
    prompt = "A prompt typed before head scores & kept <b>as text</b>."
    page.fill("#prompt", prompt)
    page.fill("#seq-len", "8")
    page.fill("#batch", "1")
    page.click("#run-head-scores")
    wait_js(page, "new URLSearchParams(location.search).get('view') === 'head_scores'")
    assert url_state(page.url)["prompt"] == prompt  # in the URL: a shared link carries it too
    page.fill("#prompt", prompt + " Edited.")
    wait_js(page, "new URLSearchParams(location.search).get('prompt').endsWith('Edited.')")
    page.reload()
    wait_js(page, "document.getElementById('score-grid').data !== undefined")
    assert page.input_value("#prompt") == prompt + " Edited."
