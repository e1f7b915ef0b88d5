"""`hallucination` and `hallucination_eval` through the API: shapes, caching, the error shape."""

import json

import pytest

from ..conftest import TINY

GENERATE = {
    "analysis": "hallucination",
    "model": TINY,
    "text": "alice red fox . bob blue owl . ? bob",
    "params": {"max_new_tokens": 5, "top_k": 2, "min_induction": 0},
}
ROW = {"context": "alice red fox .", "question": "? alice", "label": 0}


def _assert_error(response, status: int, code: str, contains: str = ""):
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error", "code", "status"} and body["status"] == status and body["code"] == code
    assert contains in body["error"]


def test_hallucination_result_shape_and_permalink(client):
    body = client.post("/api/analyses", json=GENERATE).json()
    assert body["status"] == "done", body
    result = body["result"]
    n = len(result["tokens"])
    assert 1 <= n <= 5
    for key in ("token_ids", "signal", "bos_all", "lookback_ratio", "flagged", "bos_by_head", "lookback_by_head"):
        assert len(result[key]) == n, key
    assert len(result["heads"]) == len(result["induction_scores"]) == len(result["bos_by_head"][0]) == 8
    assert len(result["retrieval_heads"]) == 2 and set(result["formulas"]) >= {"signal", "lookback_ratio"}
    again = client.post("/api/analyses", json=GENERATE).json()
    assert again["id"] == body["id"] and client.app.state.runs.jobs.computed == 1
    assert client.get(f"/api/analyses/{body['id']}").json()["result"] == result


def test_eval_runs_and_is_cached(client):
    # min_induction 0: the random tiny model has no head over the default bar (that case: a warning)
    request = {"analysis": "hallucination_eval", "model": TINY, "params": {"n_examples": 10, "max_facts": 3, "min_induction": 0}}
    body = client.post("/api/analyses", json=request).json()
    assert body["status"] == "done", body
    result = body["result"]
    assert result["n_examples"] == 10 and set(result["signals"]) == {"bos_retrieval", "bos_all", "lookback", "detector"}
    roc = result["signals"]["bos_retrieval"]["roc"]
    assert len(roc["fpr"]) == len(roc["tpr"]) == len(roc["thresholds"])
    assert client.post("/api/analyses", json=request).json()["id"] == body["id"]
    assert client.app.state.runs.jobs.computed == 1


def test_both_analyses_are_listed(client):
    names = {spec["name"] for spec in client.get("/api/analysis_types").json()}
    assert {"hallucination", "hallucination_eval"} <= names


@pytest.mark.parametrize(
    ("params", "status", "code", "contains"),
    [
        ({"source": "jsonl"}, 422, "invalid_input", "needs the rows"),
        ({"source": "jsonl", "jsonl": json.dumps(ROW) + "\n{oops"}, 422, "invalid_input", "line 2 is not JSON"),
        ({"source": "jsonl", "jsonl": "\n".join([json.dumps({**ROW, "label": 3})] * 4)}, 422, "invalid_input", "line 1"),
        ({"source": "jsonl", "jsonl": "x" * 1_000_001}, 422, "invalid_input", "jsonl"),
        ({"jsonl": json.dumps(ROW)}, 422, "invalid_input", "source is `builtin`"),
        ({"n_examples": 5}, 422, "invalid_input", "n_examples"),
        ({"max_new_tokens": 100}, 422, "invalid_input", "max_new_tokens"),
    ],
)
def test_bad_eval_requests(client, params, status, code, contains):
    response = client.post("/api/analyses", json={"analysis": "hallucination_eval", "model": TINY, "params": params})
    _assert_error(response, status, code, contains)


def test_eval_rows_too_long_for_the_model(client):
    rows = [{**ROW, "context": "alice red fox . " * 40, "label": i % 2} for i in range(4)]
    params = {"source": "jsonl", "jsonl": "\n".join(json.dumps(row) for row in rows)}
    response = client.post("/api/analyses", json={"analysis": "hallucination_eval", "model": TINY, "params": params})
    _assert_error(response, 413, "too_long", "Row 1")


@pytest.mark.parametrize(
    ("change", "status", "code"),
    [
        ({"text": ""}, 422, "invalid_input"),
        ({"params": {"max_new_tokens": 0}}, 422, "invalid_input"),
        ({"params": {"threshold": 2}}, 422, "invalid_input"),
        ({"params": {"max_new_tokens": 120}}, 413, "too_long"),  # prompt + 120 > n_ctx 128
    ],
)
def test_bad_hallucination_requests(client, change, status, code):
    _assert_error(client.post("/api/analyses", json={**GENERATE, **change}), status, code)
