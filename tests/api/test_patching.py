"""patching through the API on a real temp SQLite: the stored result is the analysis' own, the same
request is one id served from the cache, and every bad input is a 422 in the one error shape."""

import pytest

from loupe.analyses import Inputs
from loupe.analyses.patching import PatchingParams, patching

from ..conftest import LOOPED, TINY

CLEAN = "When Mary and John went to the store, John gave a drink to"
CORRUPTED = "When Mary and John went to the store, Mary gave a drink to"
PARAMS = {"corrupted": CORRUPTED, "correct": "M", "wrong": "J"}
REQUEST = {"analysis": "patching", "model": TINY, "text": CLEAN, "params": PARAMS}


@pytest.fixture
def client(client_over, model_dir, looped_model_dir):
    return client_over(model_dir, looped_model_dir)


def test_the_stored_result_is_the_analysis_and_the_cache_serves_it(client, tiny_model):
    first = client.post("/api/analyses", json=REQUEST)
    assert first.status_code == 200, first.text
    body = first.json()
    assert body["status"] == "done"
    direct = patching(tiny_model, PatchingParams(**PARAMS), Inputs(text=CLEAN)).result.model_dump(mode="json")
    assert body["result"] == direct
    assert body["result"]["residual_hook"] == "hook_resid_pre" and len(body["result"]["resid"][0][0]) == 37
    again = client.post("/api/analyses", json={**REQUEST, "params": {**PARAMS, "residual": "pre"}}).json()
    assert again["id"] == body["id"] and client.app.state.runs.jobs.computed == 1  # defaults filled in: one id
    assert client.get(f"/api/analyses/{body['id']}").json()["result"] == direct
    types = {t["name"]: t for t in client.get("/api/analysis_types").json()}
    assert types["patching"]["takes_text"] and types["patching"]["takes_loop"]
    assert {"text", "causal_lm", "attention"} <= set(types["patching"]["needs"])


def test_a_looped_model_is_patched_per_iteration(client, looped_model):
    params = {"corrupted": "15+34=", "correct": "4", "wrong": "9", "residual": "post"}
    body = client.post("/api/analyses", json={"analysis": "patching", "model": LOOPED, "text": "12+34=", "params": params}).json()
    assert body["status"] == "done", body
    direct = patching(looped_model, PatchingParams(**params), Inputs(text="12+34=")).result.model_dump(mode="json")
    assert body["result"] == direct and body["result"]["n_iterations"] == 3


@pytest.mark.parametrize(
    "text, params, says",
    [
        (CLEAN, {**PARAMS, "corrupted": "When Mary and John went"}, "The clean text is 37 tokens and the corrupted one 15"),
        (CLEAN, {**PARAMS, "correct": " Mary"}, "The correct answer ' Mary' is 3 tokens"),
        (CLEAN, {**PARAMS, "wrong": " J"}, "The wrong answer ' J' is 2 tokens"),
        (CLEAN, {**PARAMS, "wrong": "M"}, "the same token"),
        (CLEAN, {**PARAMS, "corrupted": CLEAN}, "nothing to restore"),
        (CLEAN, {**PARAMS, "corrupted": ""}, "corrupted"),
        (CLEAN, {"correct": "M", "wrong": "J"}, "corrupted: Field required"),
        (CLEAN, {**PARAMS, "residual": "mid"}, "residual"),
        (CLEAN, {**PARAMS, "position": -1}, "Unknown params for patching: 'position'"),
        ("", PARAMS, "needs a non-empty `text`"),
    ],
)
def test_bad_input_is_a_422_in_the_one_error_shape(client, text, params, says):
    response = client.post("/api/analyses", json={**REQUEST, "text": text, "params": params})
    assert response.status_code == 422, response.text
    body = response.json()
    assert set(body) == {"error", "code", "status"} and body["code"] == "invalid_input" and body["status"] == 422
    assert says in body["error"], body["error"]


def test_a_corrupted_prompt_past_the_token_limit_is_too_long(client):
    response = client.post("/api/analyses", json={**REQUEST, "params": {**PARAMS, "corrupted": "copy " * 300}})
    assert response.status_code == 413 and response.json()["code"] == "too_long"
