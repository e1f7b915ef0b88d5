"""A model whose forward draws random numbers (Huginn's initial latent), through the API: `loop.seed`
is part of the request's key and fixes the draw; without it the draw is seed 0's, so the same
request always gives the same stored result; a model that draws nothing refuses a seed."""

import pytest

from ..tiny_models import build_tiny_llama
from .test_huginn import build

TEXT = "abc abc abc"


@pytest.fixture(scope="module")
def huginn_dirs(tmp_path_factory):
    root = tmp_path_factory.mktemp("huginn_dirs")
    build(root / "huginn")
    build_tiny_llama(root / "llama")
    return root


def _attention(client, loop=None, recompute=False):
    body = {"analysis": "attention", "model": "local/huginn", "text": TEXT, "params": {"loop": loop} if loop else {}}
    first = client.post("/api/analyses", json=body).json()
    assert first["status"] == "done", first
    if recompute:  # drop the stored result: the same request computes it again from scratch
        assert client.delete(f"/api/analyses/{first['id']}").status_code in (200, 204)
        again = client.post("/api/analyses", json=body).json()
        assert again["id"] == first["id"]
        return first, again
    return first


def test_seeded_draws_are_part_of_the_key_and_reproduce(client_over, huginn_dirs):
    client = client_over(huginn_dirs)
    models = {m["id"]: m for m in client.get("/api/models").json()}
    assert "seeded" in models["local/huginn"]["capabilities"] and models["local/huginn"]["n_iterations"] == 4
    first, again = _attention(client, {"seed": 3}, recompute=True)
    assert first["result"] == again["result"]  # recomputed from scratch: the same draw
    assert first["params"]["loop"]["seed"] == 3
    default = _attention(client)
    assert default["params"]["loop"]["seed"] == 0  # no seed given: seed 0's draw, named in the request
    assert _attention(client, {"seed": 0})["id"] == default["id"]
    other = _attention(client, {"seed": 4})
    assert other["id"] != first["id"] and other["result"]["head_stats"] != first["result"]["head_stats"]  # the draw matters

    body = {"analysis": "attention", "model": "local/llama", "text": TEXT, "params": {"loop": {"seed": 3}}}
    response = client.post("/api/analyses", json=body)
    assert response.status_code == 422 and "draws no random numbers" in response.json()["error"]


def test_every_view_runs_per_iteration(client_over, huginn_dirs):
    client = client_over(huginn_dirs)
    for analysis, params in [("logit_lens", {}), ("head_scores", {"seq_len": 10}), ("ablation", {}),
                             ("hallucination", {"max_new_tokens": 2, "min_induction": 0}),
                             ("probes", {"dataset": "arithmetic_statements", "n": 40, "folds": 2})]:
        body = {"analysis": analysis, "model": "local/huginn", "text": TEXT, "params": params}
        response = client.post("/api/analyses", json=body).json()
        assert response["status"] == "done", (analysis, response)
        assert response["result"]["n_iterations"] == 4, analysis
    probes = client.post("/api/analyses", json={"analysis": "probes", "model": "local/huginn", "params": {
        "dataset": "arithmetic_statements", "n": 40, "folds": 2}}).json()["result"]
    assert len(probes["self_verification_accuracy"] or probes["self_verification_note"]) > 0
    lens = client.post("/api/analyses", json={"analysis": "logit_lens", "model": "local/huginn", "text": TEXT}).json()["result"]
    start, end = lens["loop_layers"]
    assert lens["exit_only"] and (start, end) == (1, 2)
    assert all(row[end] and not row[0] for row in lens["top_tokens"])  # read at the exit only


def test_a_loop_count_past_the_servers_limit_is_refused_before_any_work(client_over, huginn_dirs):
    client = client_over(huginn_dirs)  # LOUPE_MAX_ITERATIONS: 64 by default
    body = {"analysis": "attention", "model": "local/huginn", "text": TEXT, "params": {"loop": {"times": 65}}}
    response = client.post("/api/analyses", json=body)
    assert response.status_code == 422 and "at most 64 iterations" in response.json()["error"]
    assert client.get("/api/analyses").json()["total"] == 0
    body["params"]["loop"]["times"] = 40  # Huginn's published default is 32: more is allowed up to the limit
    assert client.post("/api/analyses", json=body).json()["result"]["n_iterations"] == 40
