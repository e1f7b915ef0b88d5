"""Every error path answers with the one shape {"error", "code", "status"}, never a 500."""

import pytest

from ..conftest import TINY

ATTENTION = {"analysis": "attention", "model": TINY, "text": "Attention heads copy information."}


def _assert_error(response, status: int, code: str):
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error", "code", "status"}
    assert body["status"] == status and body["code"] == code and body["error"]


@pytest.mark.parametrize(
    "payload, status, code",
    [
        ({**ATTENTION, "model": "no-such-model"}, 404, "unknown_model"),
        ({**ATTENTION, "model": "../../etc"}, 404, "unknown_model"),
        ({**ATTENTION, "model": "/tmp"}, 404, "unknown_model"),
        ({**ATTENTION, "analysis": "no_such_analysis"}, 404, "unknown_analysis"),
        ({**ATTENTION, "text": "copy " * 300}, 413, "too_long"),
        ({**ATTENTION, "text": "x" * 100_000}, 413, "too_long"),
        ({**ATTENTION, "text": ""}, 422, "invalid_input"),
        ({**ATTENTION, "text": None}, 422, "invalid_input"),
        ({"analysis": "head_scores", "model": TINY, "params": {"seq_len": 1}}, 422, "invalid_input"),
        ({"analysis": "head_scores", "model": TINY, "params": {"seq_len": "long"}}, 422, "invalid_input"),
        ({"analysis": "head_scores", "model": TINY, "params": {"seq_len": 100}}, 413, "too_long"),  # 201 > n_ctx 128
        ({"model": TINY}, 422, "invalid_input"),
        ({**ATTENTION, "params": []}, 422, "invalid_input"),
        ({**ATTENTION, "wait_s": -1}, 422, "invalid_input"),
        ({"analysis": "head_scores", "model": TINY, "params": {"seq_lne": 8}}, 422, "invalid_input"),  # misspelt
    ],
)
def test_bad_analysis_requests(client, payload, status, code):
    _assert_error(client.post("/api/analyses", json=payload), status, code)


def test_input_rejected_inside_the_job_is_answered_again_on_retry(client):
    first = client.post("/api/analyses", json={**ATTENTION, "text": "copy " * 300})
    _assert_error(first, 413, "too_long")
    assert client.app.state.runs.jobs.computed == 1
    retry = client.post("/api/analyses", json={**ATTENTION, "text": "copy " * 300})
    assert retry.json() == first.json()


def test_malformed_json_body(client):
    response = client.post("/api/analyses", content=b"{not json", headers={"content-type": "application/json"})
    _assert_error(response, 422, "invalid_input")


def test_unknown_analysis_id_and_routes(client):
    _assert_error(client.get("/api/analyses/" + "0" * 64), 404, "not_found")
    _assert_error(client.get("/api/analyses/" + "0" * 64 + "/attention"), 404, "not_found")
    _assert_error(client.get("/api/no/such/route"), 404, "not_found")
    _assert_error(client.delete("/api/health"), 405, "method_not_allowed")


@pytest.mark.parametrize(
    "query, status, code",
    [
        ({"layer": 2}, 422, "invalid_input"),
        ({"head": -1}, 422, "invalid_input"),
        ({"iteration": 1}, 422, "invalid_input"),
        ({"layer": "x"}, 422, "invalid_input"),
        ({"format": "png"}, 422, "invalid_input"),
    ],
)
def test_bad_slice_requests(client, query, status, code):
    analysis_id = client.post("/api/analyses", json=ATTENTION).json()["id"]
    _assert_error(client.get(f"/api/analyses/{analysis_id}/attention", params=query), status, code)


def test_slices_of_an_analysis_without_patterns_are_not_found(client):
    # a request that is queued (never computed) has no slices yet: a clear conflict, not a 500
    cache = client.app.state.runs.cache
    cache.begin("f" * 64, "attention", 1, TINY, {"text": "x", "params": {}})
    _assert_error(client.get("/api/analyses/" + "f" * 64 + "/attention"), 409, "not_ready")
