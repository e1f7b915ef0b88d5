"""The page in a real Chromium: run, open a head, share the link, reopen it from the cache; head
scores; errors; the URL state round trip."""

import re
import time
from urllib.parse import parse_qs, urlparse

import httpx
import pytest

pytestmark = pytest.mark.e2e

MODEL = "local/gpt2tiny"
LOOPED = "local/loopedtiny"  # 2 layers x 2 heads, run 3 times
# Tags and an ampersand: token strings must reach the page as text, never as markup.
PROMPT = "The cat sat on the mat. <b>The</b> cat & the mat."


def api(base: str, path: str) -> dict:
    response = httpx.get(base + path, timeout=30)
    response.raise_for_status()
    return response.json()


def url_state(url: str) -> dict[str, str]:
    return {key: values[0] for key, values in parse_qs(urlparse(url).query).items()}


def analysis_posts(page) -> list[str]:
    """The POSTs a page made that compute something: every one but the prompt's token count."""
    return [url for method, url in page.requests if method == "POST" and not url.endswith("/tokenize")]


def display(token: str) -> str:
    """plotting.js displayToken() for the tokens this prompt makes: every space shown as ␣."""
    return token.replace(" ", "␣")


def wait_js(page, expression: str, timeout: float = 20.0):
    """Poll a JS expression until it is truthy; return its value. Not page.wait_for_function: that
    compiles its predicate with eval in the page, which the server's CSP (script-src 'self') refuses."""
    deadline = time.monotonic() + timeout
    while True:
        value = page.evaluate(expression)
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {expression}")
        time.sleep(0.05)


def open_page(new_page):
    page = new_page()
    page.goto("/")
    page.wait_for_selector(f"#model-select option[value='{MODEL}']", state="attached")
    return page


def wait_pattern(page, layer: int, head: int) -> dict:
    """The drawn head heatmap: z rows, the tick labels (zero-width spaces dropped), the image count."""
    page.wait_for_selector(f"#pattern-plot[data-ready=true][data-layer='{layer}'][data-head='{head}']")
    return page.evaluate(
        """() => {
          const gd = document.getElementById("pattern-plot");
          const ticks = (axis) => [...gd.querySelectorAll(`.${axis}tick text`)].map((t) => t.textContent.replace(/\\u200b/g, ""));
          return { z: gd.data[0].z.map((row) => Array.from(row)), x: ticks("x"), y: ticks("y"),
                   images: gd.querySelectorAll(".heatmaplayer image").length };
        }"""
    )


def cell_point(page, plot_id: str, x: float, y: float) -> tuple[float, float]:
    """Viewport coordinates of data point (x, y) in a Plotly plot."""
    return tuple(
        page.evaluate(
            """([id, x, y]) => {
              const gd = document.getElementById(id);
              const box = gd.querySelector(".nsewdrag").getBoundingClientRect();
              return [box.left + gd._fullLayout.xaxis.l2p(x), box.top + gd._fullLayout.yaxis.l2p(y)];
            }""",
            [plot_id, x, y],
        )
    )


def test_attention_head_link_reopens_the_same_view_from_the_cache(new_page, loupe_url):
    page = open_page(new_page)
    assert page.input_value("#model-select") == MODEL  # the default model is preselected
    page.fill("#prompt", PROMPT)
    page.click("#run-attention")
    page.wait_for_selector("[data-testid=thumb-L1H2]")
    assert page.locator("#thumbnails .thumb").count() == 2 * 4
    assert page.locator("#iteration-control").is_hidden()  # one iteration: no selector

    page.click("[data-testid=thumb-L1H2]")
    drawn = wait_pattern(page, 1, 2)
    state = url_state(page.url)
    assert len(state.pop("analysis")) == 64
    assert state == {"view": "attention", "layer": "1", "head": "2", "iteration": "0", "stat": "bos"}
    state["analysis"] = url_state(page.url)["analysis"]
    analysis = api(loupe_url, f"/api/analyses/{state['analysis']}")
    tokens = analysis["result"]["tokens"]
    assert tokens[0] == "<|endoftext|>" and "".join(tokens[1:]) == PROMPT
    # One heatmap image, a row per query token, labelled with the token strings as written.
    assert drawn["images"] == 1
    assert len(drawn["z"]) == len(tokens) and {len(row) for row in drawn["z"]} == {len(tokens)}
    labels = sorted(f"{display(token)}{pos}" for pos, token in enumerate(tokens))
    assert sorted(drawn["y"]) == labels and sorted(drawn["x"]) == labels
    assert any(label.startswith("<") for label in drawn["y"])  # "<" tokens: escaped, shown as written
    # The data is the head's stored pattern (u16 on the wire: within 1e-4 of the JSON one).
    stored = api(loupe_url, f"/api/analyses/{state['analysis']}/attention?layer=1&head=2")["pattern"]
    assert max(abs(a - b) for got, want in zip(drawn["z"], stored) for a, b in zip(got, want)) < 1e-4
    # Hover names the query and key tokens and the weight.
    page.mouse.move(*cell_point(page, "pattern-plot", 3, 5))
    hover = page.text_content("#pattern-plot .hovertext").replace("\u200b", "")
    assert hover == f"{display(tokens[5])}5 → {display(tokens[3])}3: {drawn['z'][5][3]:.3f}"

    page.click("#copy-link")
    wait_js(page, "document.getElementById('copy-link').textContent === 'Copied'")
    link = page.evaluate("navigator.clipboard.readText()")
    assert link == page.url

    fresh = new_page()  # a new context: no state shared with the first page
    fresh.goto(link)
    again = wait_pattern(fresh, 1, 2)
    assert again["z"] == drawn["z"] and sorted(again["y"]) == labels
    assert fresh.input_value("#prompt") == PROMPT and fresh.input_value("#model-select") == MODEL
    assert url_state(fresh.url) == state
    posts = analysis_posts(fresh)
    assert posts == [], f"reopening a link must not recompute: {posts}"
    assert ("GET", f"{loupe_url}/api/analyses/{state['analysis']}") in fresh.requests


def test_head_scores_cell_opens_that_heads_pattern_on_the_test_sequence(new_page, loupe_url):
    page = open_page(new_page)
    page.fill("#seq-len", "12")
    page.fill("#batch", "2")
    page.click("#run-head-scores")
    page.wait_for_selector("#view-head-scores:not([hidden])")
    wait_js(page, "document.getElementById('score-grid').data !== undefined")
    analysis_id = url_state(page.url)["analysis"]
    result = api(loupe_url, f"/api/analyses/{analysis_id}")["result"]
    assert page.evaluate("document.getElementById('score-grid').data[0].z") == result["scores"]["induction"][0]
    assert page.text_content("[data-testid=formula]") == result["formulas"]["induction"]

    page.mouse.click(*cell_point(page, "score-grid", 3, 1))  # head 3 of layer 1
    drawn = wait_pattern(page, 1, 3)
    assert len(drawn["z"]) == 1 + 2 * 12 == len(result["tokens"])
    assert url_state(page.url) == {
        "analysis": analysis_id, "view": "head_scores", "layer": "1", "head": "3", "iteration": "0", "score": "induction",
        "prompt": page.input_value("#prompt"),  # head scores take no text: the URL keeps the prompt box
    }
    assert page.text_content("#head-title") == "Layer 1, head 3"
    stored = api(loupe_url, f"/api/analyses/{analysis_id}/attention?layer=1&head=3")["pattern"]
    assert max(abs(a - b) for got, want in zip(drawn["z"], stored) for a, b in zip(got, want)) < 1e-4

    page.click("[data-testid=score-previous_token]")
    assert page.text_content("[data-testid=formula]") == result["formulas"]["previous_token"]
    assert url_state(page.url)["score"] == "previous_token"
    assert page.evaluate("document.getElementById('score-grid').data[0].z") == result["scores"]["previous_token"][0]


def test_errors_are_shown_and_the_page_keeps_working(new_page):
    page = open_page(new_page)
    page.fill("#prompt", "fox " * 200)  # past the tiny model's 128-token context
    page.click("#run-attention")
    page.wait_for_selector("#error:not([hidden])")
    assert re.search(r"accepts at most 128", page.text_content("#error-message"))
    assert page.get_attribute("#error", "data-code") == "too_long"
    assert page.locator("#progress-box").is_hidden() and page.locator("#run-attention").is_enabled()

    page.fill("#prompt", "The cat sat.")
    page.click("#run-attention")
    page.wait_for_selector("[data-testid=thumb-L0H0]")
    assert page.locator("#error").is_hidden()

    page.goto("/?analysis=no-such-analysis&view=attention")
    page.wait_for_selector("#error:not([hidden])")
    assert "No analysis" in page.text_content("#error-message")
    assert page.locator("#empty").is_visible()


def test_iteration_selector_switches_the_loop_iteration(new_page, loupe_url):
    page = open_page(new_page)
    page.select_option("#model-select", LOOPED)
    page.fill("#prompt", "ABCABCABC")
    page.click("#run-attention")
    page.click("[data-testid=thumb-L1H1]")
    wait_pattern(page, 1, 1)
    assert page.locator("#iteration-control").is_visible() and page.get_attribute("#iteration", "max") == "2"

    page.fill("#iteration", "2")
    drawn = wait_pattern(page, 1, 1)
    state = url_state(page.url)
    assert (state["iteration"], page.get_attribute("#pattern-plot", "data-iteration")) == ("2", "2")
    base = f"/api/analyses/{state['analysis']}"
    stats = api(loupe_url, base)["result"]["head_stats"]["bos"]
    assert page.evaluate("document.getElementById('stat-grid').data[0].z") == stats[2]
    last, first = (api(loupe_url, f"{base}/attention?layer=1&head=1&iteration={i}")["pattern"] for i in (2, 0))
    assert max(abs(a - b) for got, want in zip(drawn["z"], last) for a, b in zip(got, want)) < 1e-4
    assert max(abs(a - b) for got, want in zip(last, first) for a, b in zip(got, want)) > 1e-3  # iterations differ
    assert any(url.endswith(f"{base}/thumbnails?iteration=2") for _, url in page.requests)

    fresh = new_page()
    fresh.goto(page.url)
    assert wait_pattern(fresh, 1, 1)["z"] == drawn["z"]
    assert fresh.input_value("#iteration") == "2" and fresh.input_value("#model-select") == LOOPED


def test_token_strings_reach_plotly_as_text(new_page):
    page = open_page(new_page)
    labels = page.evaluate(
        """async () => {
          const { patternHeatmap } = await import("/js/heatmaps.js");
          const el = document.createElement("div");
          el.style.width = "600px";
          document.body.append(el);
          await patternHeatmap(el, ["<b>x</b>", "&lt;", "a<br>b", "\\n"], [[1, 0, 0, 0], [0.5, 0.5, 0, 0], [0.3, 0.3, 0.4, 0], [0.25, 0.25, 0.25, 0.25]]);
          return { y: [...el.querySelectorAll(".ytick text")].map((t) => t.textContent.replace(/\u200b/g, "")),
                   markup: el.querySelectorAll(".ytick tspan[style*=bold], .ytick a").length };
        }"""
    )
    assert sorted(labels["y"]) == sorted(["<b>x</b>0", "&lt;1", "a<br>b2", "↵3"])
    assert labels["markup"] == 0


def test_url_state_round_trips(new_page):
    page = new_page()
    page.goto("/api/health")  # any page of the origin can import the module; this one skips Plotly
    results = page.evaluate(
        """async () => {
          const { parseQuery, toQuery, initialState } = await import("/js/state.js");
          const states = [
            { ...initialState(), analysis: "abc", view: "attention", layer: 1, head: 3, iteration: 2, stat: "entropy" },
            { ...initialState(), analysis: "abc", view: "head_scores", score: "duplicate_token" },
            { ...initialState(), analysis: "abc", view: "head_scores", prompt: "a <b>prompt</b> & ?x=1#y\\nz" },
            { ...initialState(), analysis: "abc", view: "attention", layer: 0, head: 1, iteration: 1, compare: 3 },
            { ...initialState(), analysis: "abc", view: "probes", probe_layer: 2 },
            { ...initialState(), analysis: "abc", view: "logit_lens", iteration: 1 },
            { ...initialState(), analysis: "abc", view: "attention", layer: 1, head: 0, token: 7, direction: "from",
              pins: [{ layer: 0, head: 3 }, { layer: 1, head: 1 }] },
            { ...initialState(), analysis: "abc", other: "def", view: "attention", stat: "self" },
            { ...initialState(), analysis: "abc", view: "attention", layer: 1, head: 2, zoom: [100, 164, 0, 40], color: "log" },
            initialState(),
          ];
          return states.map((s) => [s, parseQuery(toQuery(s))]);
        }"""
    )
    for state, parsed in results:
        assert parsed == state
    assert page.evaluate("import('/js/state.js').then((m) => m.parseQuery('?analysis=a&layer=-1&head=x&stat=<b>'))") == {
        "analysis": "a", "other": None, "view": None, "layer": None, "head": None, "iteration": 0, "compare": None,
        "token": None, "direction": "to", "pins": [], "zoom": None, "color": "linear", "score": "induction", "stat": "bos", "probe_layer": None, "model": None,
        "prompt": None, "metric_x": "previous_token", "metric_y": "induction", "examples_of": "induction",
        "metric_layer": None, "metric_head": None, "metric_iteration": None, "emergence_score": "induction",
    }
    # the token view's keys: malformed values fall back, pins repeat or overflow only once
    parsed = page.evaluate(
        "import('/js/state.js').then((m) => m.parseQuery('?analysis=a&other=a&layer=1&head=0&token=x&direction=<b>"
        "&pins=1.2,1.2,x,0.0,0.1,0.2,0.3,1.0'))"
    )
    assert parsed["token"] is None and parsed["direction"] == "to" and parsed["other"] is None  # itself: no pair
    assert parsed["pins"] == [{"layer": 1, "head": 2}] + [{"layer": 0, "head": h} for h in range(4)]
    # the long map's keys: a zoom is four positions with non-empty ranges, a colour scale one of three
    for bad in ("1,2,3", "5,5,0,4", "0,4,9,2", "a,b,c,d", "-1,4,0,4"):
        assert page.evaluate(f"import('/js/state.js').then((m) => m.parseQuery('?analysis=a&layer=0&head=0&zoom={bad}').zoom)") is None
    parsed = page.evaluate("import('/js/state.js').then((m) => m.parseQuery('?analysis=a&layer=0&head=0&zoom=0,8,2,6&color=<b>'))")
    assert (parsed["zoom"], parsed["color"]) == ([0, 8, 2, 6], "linear")
    closed = page.evaluate("import('/js/state.js').then((m) => m.parseQuery('?analysis=a&zoom=0,8,2,6&color=row'))")
    assert (closed["zoom"], closed["color"]) == (None, "linear")  # they belong to an open head
