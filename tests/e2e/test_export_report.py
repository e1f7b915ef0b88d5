"""The standalone HTML report opens from a file with no server running: its charts draw from the
embedded data, equal to the stored result, and no request leaves the page."""

import itertools

from fastapi.testclient import TestClient

from loupe.config import Settings
from loupe.main import create_app

from ..conftest import LOOPED, TINY
from .test_browser import wait_js


def _report(tmp_path, model_dirs, body) -> tuple[dict, str]:
    """The analysis (as GET serves it) and its report saved to a file, the app closed before returning."""
    settings = Settings(data_dir=tmp_path / "data", model_dirs=model_dirs, zoo_dir=tmp_path / "zoo", sync_wait_s=30)
    with TestClient(create_app(settings)) as client:
        analysis_id = client.post("/api/analyses", json=body).json()["id"]
        analysis = client.get(f"/api/analyses/{analysis_id}").json()
        response = client.get(f"/api/analyses/{analysis_id}/export.html")
    assert response.status_code == 200 and analysis["status"] == "done"
    path = tmp_path / "report.html"
    path.write_text(response.text, encoding="utf-8")
    return analysis, path.as_uri()


def _open(browser, url):
    context = browser.new_context(viewport={"width": 1200, "height": 900})
    page = context.new_page()
    page.requests, page.errors, page.console = [], [], []
    page.on("request", lambda request: page.requests.append(request.url))
    page.on("pageerror", lambda error: page.errors.append(str(error)))
    page.on("console", lambda message: page.console.append(message.text))
    page.goto(url)
    wait_js(page, "document.body.dataset.ready === 'true'")
    return context, page


def _charts(page) -> dict:
    return page.evaluate("""() => Object.fromEntries([...document.querySelectorAll('.chart')].map((el) => [
        el.dataset.field,
        {z: el.data[0].z, iteration: Number(el.dataset.iteration), title: el.layout.title.text,
         drawn: Boolean(el._fullLayout) && el.querySelectorAll('.main-svg .hm, .main-svg image').length > 0}]))""")


def _assert_offline(page, url):
    assert page.requests == [url], page.requests  # the file itself, nothing else: Plotly and data are inline
    assert not page.errors, page.errors
    assert not [m for m in page.console if "Content Security Policy" in m], page.console


def test_report_draws_every_head_grid_from_a_file(browser, tmp_path, model_dir):
    text = "When Mary and John <b>went</b> to the store, John gave </script> a drink"
    analysis, url = _report(tmp_path, [model_dir], {"analysis": "attention", "model": TINY, "text": text})
    context, page = _open(browser, url)
    try:
        charts = _charts(page)
        stats = analysis["result"]["head_stats"]
        assert set(charts) == {f"head_stats.{name}" for name in stats}
        for name, values in stats.items():
            chart = charts[f"head_stats.{name}"]
            assert chart["drawn"] and chart["iteration"] == 0
            assert chart["z"] == values[0]  # [layer][head], as stored
            assert "local/gpt2tiny" in chart["title"] and "attention" in chart["title"] and name in chart["title"]
        assert page.text_content("#report-text") == text  # the prompt as text: no <b> element, no early </script>
        assert page.evaluate("document.querySelectorAll('#report-text *, #report-charts b').length") == 0
        _assert_offline(page, url)
    finally:
        context.close()


def test_report_of_a_looped_model_shows_each_iteration(browser, tmp_path, looped_model_dir):
    analysis, url = _report(tmp_path, [looped_model_dir], {"analysis": "head_scores", "model": LOOPED, "params": {"seq_len": 8}})
    result = analysis["result"]
    assert result["n_iterations"] == 3
    context, page = _open(browser, url)
    try:
        for iteration, (name, values) in itertools.product(range(3), result["scores"].items()):
            page.select_option(f"select[aria-label='scores.{name}: iteration']", str(iteration))
            chart = _charts(page)[f"scores.{name}"]
            assert chart["iteration"] == iteration and chart["z"] == values[iteration]
            assert chart["title"].endswith(f"iteration {iteration}")
        _assert_offline(page, url)
    finally:
        context.close()
