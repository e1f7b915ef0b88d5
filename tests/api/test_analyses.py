"""The analyses API on a real temp SQLite file and a real tiny model."""

import zlib

from fastapi.testclient import TestClient

from loupe.main import create_app

from ..conftest import TINY

ATTENTION = {"analysis": "attention", "model": TINY, "text": "Attention heads copy information."}


def test_attention_is_computed_once_then_served_from_cache(client):
    first = client.post("/api/analyses", json=ATTENTION)
    assert first.status_code == 200
    body = first.json()
    assert body["status"] == "done" and len(body["id"]) == 64
    assert body["result"]["n_layers"] == 2 and body["result"]["n_heads"] == 4 and body["result"]["n_iterations"] == 1
    jobs = client.app.state.runs.jobs
    assert jobs.computed == 1
    again = client.post("/api/analyses", json=ATTENTION).json()
    assert again["id"] == body["id"] and again["result"] == body["result"]
    assert jobs.computed == 1  # no recomputation
    other = client.post("/api/analyses", json={**ATTENTION, "text": "Something else."}).json()
    assert other["id"] != body["id"] and jobs.computed == 2


def test_defaults_and_explicit_params_share_one_id(client):
    implicit = client.post("/api/analyses", json={"analysis": "head_scores", "model": TINY, "params": {"seq_len": 8}})
    explicit = client.post(
        "/api/analyses", json={"analysis": "head_scores", "model": TINY, "params": {"seq_len": 8, "batch": 10, "seed": 0}}
    )
    assert implicit.json()["id"] == explicit.json()["id"]


def test_get_summary_and_head_slice(client):
    analysis_id = client.post("/api/analyses", json=ATTENTION).json()["id"]
    summary = client.get(f"/api/analyses/{analysis_id}").json()
    assert summary["status"] == "done" and summary["text"] == ATTENTION["text"]
    tokens = summary["result"]["tokens"]
    head = client.get(f"/api/analyses/{analysis_id}/attention", params={"layer": 1, "head": 3, "iteration": 0}).json()
    assert head["tokens"] == tokens and (head["layer"], head["head"]) == (1, 3)
    pattern = head["pattern"]
    assert len(pattern) == len(tokens) and all(len(row) == len(tokens) for row in pattern)
    assert all(abs(sum(row) - 1) < 1e-3 for row in pattern)  # each query's attention sums to one
    assert all(row[q + 1 :] == [0.0] * (len(tokens) - q - 1) for q, row in enumerate(pattern))  # causal


def test_u16_slice_matches_json(client):
    analysis_id = client.post("/api/analyses", json=ATTENTION).json()["id"]
    params = {"layer": 0, "head": 1}
    as_json = client.get(f"/api/analyses/{analysis_id}/attention", params=params).json()["pattern"]
    raw = client.get(f"/api/analyses/{analysis_id}/attention", params={**params, "format": "u16"})
    T = len(as_json)
    assert raw.headers["x-shape"] == f"{T},{T}" and len(raw.content) == 2 * T * T
    values = [int.from_bytes(raw.content[i : i + 2], "little") / 65535 for i in range(0, 2 * T, 2)]
    assert max(abs(a - b) for a, b in zip(values, as_json[0])) < 1e-4


def test_stored_slice_decodes_as_documented(client):
    """format=stored, decoded by the route's documented recipe (not Loupe's codec): zlib, then
    n low bytes and n high bytes, then the lower triangle row by row."""
    analysis_id = client.post("/api/analyses", json=ATTENTION).json()["id"]
    params = {"layer": 1, "head": 2}
    as_json = client.get(f"/api/analyses/{analysis_id}/attention", params=params).json()["pattern"]
    stored = client.get(f"/api/analyses/{analysis_id}/attention", params={**params, "format": "stored"})
    T = len(as_json)
    assert stored.headers["x-codec"] == "tri-u16-zlib" and stored.headers["x-shape"] == f"{T},{T}"
    raw = zlib.decompress(stored.content)
    n = T * (T + 1) // 2
    assert len(raw) == 2 * n and len(stored.content) < T * T  # smaller than the u16 matrix's half
    values = iter(raw[i] | raw[n + i] << 8 for i in range(n))
    rows = [[next(values) / 65535 for _ in range(q + 1)] for q in range(T)]
    assert max(abs(a - b) for q in range(T) for a, b in zip(rows[q], as_json[q])) < 1e-4
    assert all(value == 0 for q in range(T) for value in as_json[q][q + 1 :])


def test_head_scores_keep_their_test_sequence(client):
    body = client.post("/api/analyses", json={"analysis": "head_scores", "model": TINY, "params": {"seq_len": 6, "batch": 2}}).json()
    result = body["result"]
    assert set(result["scores"]) == {"induction", "previous_token", "duplicate_token", "bos"}
    assert len(result["token_ids"]) == 13 and result["token_ids"][1:7] == result["token_ids"][7:]
    assert set(result["formulas"]) == set(result["scores"])
    head = client.get(f"/api/analyses/{body['id']}/attention", params={"layer": 0, "head": 0}).json()
    assert len(head["pattern"]) == 13
    thumbs = client.get(f"/api/analyses/{body['id']}/thumbnails").json()
    assert len(thumbs["thumbnails"]) == 2 and len(thumbs["thumbnails"][0]) == 4


def test_results_survive_a_restart(settings):
    with TestClient(create_app(settings)) as client:
        first = client.post("/api/analyses", json=ATTENTION).json()
    with TestClient(create_app(settings)) as client:
        again = client.post("/api/analyses", json=ATTENTION).json()
        assert again["id"] == first["id"] and again["result"] == first["result"]
        assert client.app.state.runs.jobs.computed == 0
        assert client.get(f"/api/analyses/{first['id']}/attention", params={"layer": 1, "head": 0}).status_code == 200


def test_health_and_models(client):
    assert client.get("/api/health").json()["status"] == "ok"
    models = client.get("/api/models").json()
    tiny = next(m for m in models if m["id"] == TINY)
    assert tiny == {**tiny, "source": "local", "n_layers": 2, "n_heads": 4, "n_iterations": 1, "n_ctx": 128}
    assert {"id", "source", "n_layers", "n_heads", "n_iterations", "n_ctx", "description"} <= set(tiny)
    types = {t["name"] for t in client.get("/api/analysis_types").json()}
    assert {"attention", "head_scores"} <= types


def test_frontend_and_plotly_are_served_locally(client):
    assert client.get("/").status_code == 200
    plotly = client.get("/vendor/plotly-cartesian.min.js")
    assert plotly.status_code == 200 and len(plotly.content) > 1_000_000
    assert client.get("/docs").status_code == 200
