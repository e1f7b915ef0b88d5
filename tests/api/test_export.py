"""Exports of a stored analysis: JSON, CSV (whole result, one head's pattern) and the HTML report,
each parsed and compared with what the API serves for the same analysis."""

import csv
import io
import itertools
import json

import pytest

from ..conftest import TINY

ATTENTION = {"analysis": "attention", "model": TINY, "text": "Hello <b>&amp; </script> world"}
HEAD_SCORES = {"analysis": "head_scores", "model": TINY, "params": {"seq_len": 8}}
EXPORTS = ("export.json", "export.csv", "export.html", "attention/export.csv")


def _done(client, body) -> dict:
    analysis = client.post("/api/analyses", json=body).json()
    assert analysis["status"] == "done"
    return client.get(f"/api/analyses/{analysis['id']}").json()


def _csv(response) -> list[dict]:
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/csv")
    return list(csv.DictReader(io.StringIO(response.text)))


def _attachment(response) -> str:
    disposition = response.headers["content-disposition"]
    assert disposition.startswith('attachment; filename="')
    return disposition.split('"')[1]


@pytest.mark.parametrize("body, group", [(ATTENTION, "head_stats"), (HEAD_SCORES, "scores")])
def test_csv_holds_every_head_value_of_the_result(client, body, group):
    analysis = _done(client, body)
    result = analysis["result"]
    response = client.get(f"/api/analyses/{analysis['id']}/export.csv")
    rows = _csv(response)
    assert _attachment(response) == f"loupe-local_gpt2tiny-{body['analysis']}-{analysis['id'][:8]}.csv"
    assert list(rows[0])[:4] == ["field", "iteration", "layer", "head"] and list(rows[0])[-1] == "value"
    heads = {(r["field"], int(r["iteration"]), int(r["layer"]), int(r["head"])): float(r["value"])
             for r in rows if r["field"].startswith(group + ".")}
    expected = {
        (f"{group}.{name}", it, layer, head): values[it][layer][head]
        for name, values in result[group].items()
        for it, layer, head in itertools.product(range(result["n_iterations"]), range(result["n_layers"]), range(result["n_heads"]))
    }
    assert len(expected) == len(result[group]) * 1 * 2 * 4
    assert heads == expected  # floats written by repr read back exactly
    # arrays of other shapes keep their positions: the token ids, one row each
    ids = sorted((int(r["index_0"]), int(r["value"])) for r in rows if r["field"] == "token_ids")
    assert ids == list(enumerate(result["token_ids"]))
    assert all(r["iteration"] == r["layer"] == r["head"] == "" for r in rows if r["field"] == "token_ids")


def test_json_export_is_the_stored_analysis(client):
    analysis = _done(client, HEAD_SCORES)
    response = client.get(f"/api/analyses/{analysis['id']}/export.json")
    assert response.status_code == 200 and response.headers["content-type"].startswith("application/json")
    assert _attachment(response).endswith(f"-head_scores-{analysis['id'][:8]}.json")
    data = json.loads(response.text)
    assert data["result"] == analysis["result"]
    for key in ("id", "analysis", "model", "text", "params"):
        assert data[key] == analysis[key]
    assert data["request"]["params"]["seq_len"] == 8 and data["version"] >= 1


def test_pattern_csv_is_the_head_slice(client):
    analysis = _done(client, ATTENTION)
    query = {"layer": 1, "head": 2, "iteration": 0}
    response = client.get(f"/api/analyses/{analysis['id']}/attention/export.csv", params=query)
    rows = _csv(response)
    assert _attachment(response) == f"loupe-local_gpt2tiny-attention-L1H2-it0-{analysis['id'][:8]}.csv"
    head = client.get(f"/api/analyses/{analysis['id']}/attention", params=query).json()
    tokens, pattern = head["tokens"], head["pattern"]
    assert len(rows) == len(tokens) ** 2
    for r in rows:
        q, k = int(r["query_pos"]), int(r["key_pos"])
        assert (r["query_token"], r["key_token"]) == (tokens[q], tokens[k])  # csv quoting keeps "<b>", commas, spaces
        assert float(r["weight"]) == pattern[q][k]
    assert any("<" in t for t in tokens)  # the prompt's markup reached the tokens, and came back as text


def test_html_report_embeds_the_data_safely(client):
    analysis = _done(client, ATTENTION)
    response = client.get(f"/api/analyses/{analysis['id']}/export.html")
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/html")
    page = response.text
    start = page.index('<script type="application/json" id="loupe-data">') + len('<script type="application/json" id="loupe-data">')
    embedded = page[start : page.index("</script>", start)]
    assert json.loads(embedded)["result"] == analysis["result"]  # `<\/` is JSON for `</`: nothing closes the block early
    assert "</script> world" not in page and "<b>" not in page.split("<body>")[1].split("<script")[0]
    assert "Content-Security-Policy" in page and "connect-src 'none'" in page


@pytest.mark.parametrize("path", EXPORTS)
def test_exports_of_unknown_or_unfinished_analyses_are_refused(client, path):
    unknown = client.get(f"/api/analyses/{'0' * 64}/{path}")
    assert unknown.status_code == 404 and unknown.json() == {**unknown.json(), "code": "not_found", "status": 404}
    assert set(unknown.json()) == {"error", "code", "status"}
    client.app.state.runs.cache.begin("f" * 64, "attention", 1, TINY, {"text": "x", "params": {}})  # queued, never run
    queued = client.get(f"/api/analyses/{'f' * 64}/{path}")
    assert queued.status_code == 409 and queued.json()["code"] == "not_ready" and set(queued.json()) == {"error", "code", "status"}

