"""The frontend registry in a real Chromium: cards and controls that follow the model's capabilities,
one Plotly config (no cloud button, PNGs named after the view), every module's URL keys round trip,
and what the page does with an evicted result, a failed one, and a server with too many jobs."""

import json

import httpx
import pytest

from .test_browser import MODEL, analysis_posts, api, open_page, url_state, wait_js, wait_pattern

pytestmark = pytest.mark.e2e

INDUCTION = "induction-2l"  # generating LM, no loop
ADDER = "looped-add"  # natively looped (4 iterations), no generating LM
INPUT_NEEDS = {"text", "labelled_data"}


def card_shown(page, name: str) -> bool:
    return page.locator(f"[data-testid=card-{name}]").is_visible()


def test_cards_follow_the_models_capabilities(new_page, loupe_url):
    types = api(loupe_url, "/api/analysis_types")
    models = {model["id"]: model for model in api(loupe_url, "/api/models")}
    page = open_page(new_page)

    page.select_option("#model-select", INDUCTION)
    assert not card_shown(page, "probes") and card_shown(page, "hallucination")
    page.select_option("#model-select", ADDER)
    assert card_shown(page, "probes") and not card_shown(page, "hallucination")
    assert not card_shown(page, "hallucination_eval")

    # Every model against every analysis type: a card shows iff the model has every capability it needs.
    for model_id, model in models.items():
        page.select_option("#model-select", model_id)
        for analysis in types:
            applies = all(need in model["capabilities"] for need in analysis["needs"] if need not in INPUT_NEEDS)
            assert card_shown(page, analysis["name"]) == applies, (model_id, analysis["name"])
        shown = [t for t in types if card_shown(page, t["name"])]
        assert page.locator("#prompt-card").is_visible() == any(t["takes_text"] for t in shown), model_id
        assert page.locator("#loop-card").is_visible() == any(t["takes_loop"] for t in shown), model_id


def test_prompt_and_loop_cards_hide_when_no_shown_card_takes_them(new_page, loupe_url):
    """With every analysis that takes text or a loop made to need a loop (served types rewritten),
    a model without one shows neither the Prompt nor the Loop card, and a looped model shows both."""
    page = new_page()

    def rewrite(route):
        types = route.fetch().json()
        for analysis in types:
            if analysis["takes_text"] or analysis["takes_loop"]:
                analysis["needs"] = [*analysis["needs"], "loop"]
        route.fulfill(json=types)

    page.route(f"{loupe_url}/api/analysis_types", rewrite)
    page.goto("/")
    page.wait_for_selector(f"#model-select option[value='{MODEL}']", state="attached")
    assert page.input_value("#model-select") == MODEL  # no loop
    assert page.locator("#prompt-card").is_hidden() and page.locator("#loop-card").is_hidden()
    assert not card_shown(page, "attention") and card_shown(page, "hallucination_eval")
    page.select_option("#model-select", ADDER)
    assert page.locator("#prompt-card").is_visible() and page.locator("#loop-card").is_visible()


def test_a_model_without_a_tokenizer_or_attention_warns_and_hides_what_it_cannot_do(new_page, loupe_url):
    """The served model list rewritten: the default model loses `tokenizer` and `attention` and
    carries a warning. The warning shows, and only cards needing neither remain (probes need the
    tokenizer and a loop: none here)."""
    page = new_page()
    warning = "No tokenizer files (tokenizer.json, …) in its folder: analyses of a text are refused."

    def rewrite(route):
        models = route.fetch().json()
        for model in models:
            if model["id"] == MODEL:
                model["capabilities"] = [c for c in model["capabilities"] if c not in ("tokenizer", "attention")]
                model["warnings"] = [warning]
        route.fulfill(json=models)

    page.route(f"{loupe_url}/api/models", rewrite)
    page.goto("/")
    page.wait_for_selector(f"#model-select option[value='{MODEL}']", state="attached")
    wait_js(page, "!document.getElementById('model-warning').hidden")
    assert page.locator("[data-testid=model-warning]").text_content() == warning
    types = api(loupe_url, "/api/analysis_types")
    for analysis in types:
        needs = set(analysis["needs"]) - INPUT_NEEDS
        assert card_shown(page, analysis["name"]) == (not needs & {"tokenizer", "attention", "loop"}), analysis["name"]
    assert not page.locator("#prompt-card").is_visible()
    page.select_option("#model-select", INDUCTION)  # a model with both: no warning
    assert page.locator("[data-testid=model-warning]").is_hidden()


def test_iteration_slider_only_on_views_that_use_it(new_page):
    page = open_page(new_page)
    page.select_option("#model-select", ADDER)
    page.fill("#prompt", "12+34=")
    page.click("#run-logit-lens")
    page.wait_for_selector("#view-logit-lens:not([hidden]) table.lens")
    assert page.locator("#lens-table td.lens-cell").count() == 4 * 2  # every iteration in the table
    assert page.locator("#iteration-control").is_hidden()

    page.click("#run-attention")
    page.wait_for_selector("#view-attention:not([hidden]) [data-testid=thumb-L1H0]")
    assert page.locator("#iteration-control").is_visible() and page.get_attribute("#iteration", "max") == "3"
    page.click("[data-testid=thumb-L1H0]")
    wait_pattern(page, 1, 0)
    assert page.locator("#compare-control").is_visible()  # stores patterns, 4 iterations

    # One iteration: neither the slider nor the compare control.
    looped = url_state(page.url)["analysis"]
    page.select_option("#model-select", INDUCTION)  # clears the looped model's view
    page.fill("#prompt", "the cat sat on the mat . the cat")
    page.press("#prompt", "Control+Enter")  # runs the first shown card that takes text: attention
    wait_js(page, f"[null, '{looped}'].indexOf(new URLSearchParams(location.search).get('analysis')) < 0")  # a new view
    page.wait_for_selector("#view-attention:not([hidden]) [data-testid=thumb-L0H0]")
    page.click("[data-testid=thumb-L0H0]")
    wait_pattern(page, 0, 0)
    assert page.locator("#iteration-control").is_hidden() and page.locator("#compare-control").is_hidden()


MODEBARS = """() => [...document.querySelectorAll(".js-plotly-plot")].map((gd) => ({
  id: gd.id,
  titles: [...gd.querySelectorAll(".modebar-btn")].map((b) => b.getAttribute("data-title") || ""),
  cloud: gd._context.showSendToCloud, studio: gd._context.showEditInChartStudio, logo: gd._context.displaylogo,
  filename: gd._context.toImageButtonOptions.filename,
}))"""


def test_charts_offer_no_cloud_button_and_name_their_png_after_the_view(new_page):
    page = open_page(new_page)
    page.fill("#prompt", "The cat sat on the mat.")
    page.click("#run-attention")
    page.click("[data-testid=thumb-L1H2]")
    wait_pattern(page, 1, 2)
    page.hover("#pattern-plot")
    plots = page.evaluate(MODEBARS)
    assert {plot["id"] for plot in plots} >= {"stat-grid", "pattern-plot"}
    for plot in plots:
        assert plot["titles"], plot  # a modebar, drawn
        assert not any("chart studio" in t.lower() or "cloud" in t.lower() for t in plot["titles"]), plot
        assert any(t.lower().startswith("download plot") for t in plot["titles"]), plot  # the PNG button
        assert (plot["cloud"], plot["logo"]) == (False, False)
        assert plot["studio"] in (False, None)  # plotly.js 4 dropped the Chart Studio option (None); off where it exists
        assert plot["filename"].startswith("loupe-") and all(c.isalnum() or c in "._-" for c in plot["filename"])
    names = {plot["id"]: plot["filename"] for plot in plots}
    pattern = names["pattern-plot"]
    assert "gpt2tiny" in pattern and "attention" in pattern and "L1H2" in pattern, pattern
    assert names["stat-grid"] == "loupe-local_gpt2tiny-attention-bos"

    # A looped model's views name their iteration; the head scores grid names its score.
    page.select_option("#model-select", "local/loopedtiny")
    page.fill("#seq-len", "8")
    page.fill("#batch", "2")
    page.click("#run-head-scores")
    page.wait_for_selector("#view-head-scores:not([hidden])")
    wait_js(page, "document.getElementById('score-grid')._context?.toImageButtonOptions")
    grid = page.evaluate("document.getElementById('score-grid')._context.toImageButtonOptions.filename")
    assert grid == "loupe-local_loopedtiny-head_scores-it0-induction"


def test_every_modules_url_keys_round_trip_and_stay_in_their_view(new_page, loupe_url):
    types = api(loupe_url, "/api/analysis_types")
    page = new_page()
    page.goto("/api/health")  # any page of the origin can import the modules; this one skips Plotly
    report = page.evaluate(
        """async () => {
          const { PLOTS } = await import("/js/plots/index.js");
          const { initialState, parseQuery, toQuery } = await import("/js/state.js");
          const trips = [];
          const modules = [];
          for (const plot of PLOTS) {
            modules.push({
              name: plot.name, title: plot.card?.title, button: plot.card?.button,
              fields: (plot.card?.fields ?? []).map((f) => f.name), usesIteration: plot.usesIteration,
              functions: ["params", "restore", "render"].filter((f) => typeof plot[f] === "function"),
              view: typeof plot.view === "string", keys: Object.keys(plot.keys ?? {}),
            });
            for (const [key, spec] of Object.entries(plot.keys ?? {})) {
              const values = spec.type === "int" ? [0, 3, null] : spec.values;
              for (const value of values) {
                const state = { ...initialState(), analysis: "abc", view: plot.name, layer: 1, head: 0, iteration: 2, [key]: value };
                const query = toQuery(state);
                trips.push({ name: plot.name, key, state, query, parsed: parseQuery(query) });
              }
            }
            trips.push({ name: plot.name, key: null, state: { ...initialState(), analysis: "abc", view: plot.name },
                         query: toQuery({ ...initialState(), analysis: "abc", view: plot.name }) });
          }
          const old = parseQuery("?analysis=a&view=attention&layer=1&head=0&iteration=0&stat=entropy");
          const bad = parseQuery("?analysis=a&view=head_scores&score=<b>&probe_layer=-2&stat=nope");
          return { trips, modules, old, bad, keysOf: Object.fromEntries(PLOTS.map((p) => [p.name, Object.keys(p.keys ?? {})])) };
        }"""
    )
    # One module per backend analysis, each with the whole registry shape.
    assert sorted(m["name"] for m in report["modules"]) == sorted(t["name"] for t in types)
    for module in report["modules"]:
        assert module["title"] and module["button"] and module["view"], module
        assert module["functions"] == ["params", "restore", "render"], module
        assert isinstance(module["usesIteration"], bool), module
        params = next(t for t in types if t["name"] == module["name"])["params"]["properties"]
        assert set(module["fields"]) <= set(params), module  # every field is a param the backend takes
    all_keys = {key for keys in report["keysOf"].values() for key in keys}
    for trip in report["trips"]:
        query = dict(pair.split("=", 1) for pair in trip["query"].lstrip("?").split("&"))
        assert query["view"] == trip["name"]
        others = all_keys - set(report["keysOf"][trip["name"]])
        assert not others & set(query), trip  # another view's keys never reach this view's URL
        if trip["key"] is not None:
            assert trip["parsed"] == trip["state"], trip
    assert report["old"]["stat"] == "entropy" and (report["old"]["layer"], report["old"]["head"]) == (1, 0)
    assert (report["bad"]["score"], report["bad"]["probe_layer"], report["bad"]["stat"]) == ("induction", None, "bos")


def computed_attention(loupe_url: str, text: str) -> dict:
    body = {"analysis": "attention", "model": MODEL, "text": text, "params": {}, "wait_s": 30}
    response = httpx.post(f"{loupe_url}/api/analyses", json=body, timeout=60)
    response.raise_for_status()
    assert response.json()["status"] == "done"
    return response.json()


def test_an_evicted_result_is_recomputed_with_a_notice(new_page, loupe_url):
    done = computed_attention(loupe_url, "An evicted <b>prompt</b>.")
    analysis_id = done["id"]
    page = new_page()
    served = []

    def evicted_once(route):
        if served:
            return route.continue_()
        served.append(route.request.url)
        row = {key: done[key] for key in ("id", "analysis", "model", "text", "params")}
        route.fulfill(json={**row, "status": "evicted"})

    page.route(f"{loupe_url}/api/analyses/{analysis_id}", evicted_once)
    page.goto(f"/?analysis={analysis_id}&view=attention&layer=1&head=0&iteration=0&stat=bos")
    wait_pattern(page, 1, 0)
    assert served, "the page asked for the analysis"
    assert page.locator("[data-testid=notice]").is_visible()
    assert "evicted" in page.text_content("[data-testid=notice]") and "recomputed" in page.text_content("[data-testid=notice]")
    posts = analysis_posts(page)
    assert posts == [f"{loupe_url}/api/analyses"]
    assert url_state(page.url)["analysis"] == analysis_id and url_state(page.url)["layer"] == "1"
    assert page.input_value("#prompt") == "An evicted <b>prompt</b>."
    assert page.locator("#error").is_hidden()


def test_a_failed_result_shows_its_error(new_page, loupe_url):
    page = new_page()
    failure = {"error": "The model ran out of <i>memory</i>.", "code": "out_of_memory", "status": 507}
    page.route(f"{loupe_url}/api/analyses/failed-one",
               lambda route: route.fulfill(json={"id": "failed-one", "status": "error", "error": failure}))
    page.goto("/?analysis=failed-one&view=attention")
    page.wait_for_selector("#error:not([hidden])")
    assert page.text_content("#error-message") == failure["error"]  # as text
    assert page.get_attribute("#error", "data-code") == "out_of_memory"
    assert page.locator("#empty").is_visible()


def test_too_many_jobs_is_shown_with_when_to_retry(new_page, loupe_url):
    page = open_page(new_page)
    body = {"error": "The server is running too many jobs; try again shortly.", "code": "too_many_jobs", "status": 429}
    page.route(f"{loupe_url}/api/analyses",
               lambda route: route.fulfill(status=429, headers={"Retry-After": "7"}, content_type="application/json",
                                           body=json.dumps(body)))
    page.fill("#prompt", "Too many.")
    page.click("#run-attention")
    page.wait_for_selector("#error:not([hidden])")
    assert page.text_content("#error-message") == f"{body['error']} Try again in 7 s."
    assert page.get_attribute("#error", "data-code") == "too_many_jobs"
    assert page.locator("#run-attention").is_enabled() and page.locator("#progress-box").is_hidden()
