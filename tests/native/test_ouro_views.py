"""Ouro through the API: every view per iteration, the exit gate as the model computes it (against
the plain-torch reference of the published equations, ouro_reference.py), and the gate beside the
probe curves."""

import pytest
import torch

from loupe.architectures import ouro

from ..tiny_models import _tokenizer
from .ouro_reference import reference

TEXT = "abc abd abc abd"


@pytest.fixture(scope="module")
def ouro_dirs(tmp_path_factory):
    root = tmp_path_factory.mktemp("ouro_dirs")
    ouro.save_published(ouro.tiny(0, n_iterations=3), root / "ouro", _tokenizer())
    return root


def _run(client, analysis, params=None, text=TEXT):
    body = {"analysis": analysis, "model": "local/ouro", "text": text, "params": params or {}}
    response = client.post("/api/analyses", json=body).json()
    assert response["status"] == "done", (analysis, response)
    return response["result"]


def test_exit_gate_is_the_models_own(client_over, ouro_dirs):
    client = client_over(ouro_dirs)
    listed = {m["id"]: m for m in client.get("/api/models").json()}["local/ouro"]
    assert listed["n_iterations"] == 3 and "exit_gate" in listed["capabilities"] and listed["warnings"] == []
    for times in (None, 5):
        gate = _run(client, "exit_gate", {"loop": {"times": times}} if times else {})
        tokens = torch.tensor([gate["token_ids"]])
        ref = reference(ouro_dirs / "ouro", tokens, times)
        steps = times or 3
        assert gate["n_iterations"] == steps
        assert torch.allclose(torch.tensor(gate["exit_lambda"]), ref["exit_lambda"][:, 0], atol=1e-4)
        assert torch.allclose(torch.tensor(gate["exit_pdf"]), ref["exit_pdf"][:, 0], atol=1e-4)
        assert torch.allclose(torch.tensor(gate["expected_exit_step"]), ref["expected_exit_step"][0], atol=1e-4)
        assert gate["output_step"] == (ref["exit_iteration"][0] + 1).tolist()
        top = ref["step_logits"][:, 0].argmax(-1)  # [iteration, pos]
        decode = _tokenizer().decode
        assert gate["top_tokens"] == [[decode([int(i)]) for i in row] for row in top]
        for pos, step in enumerate(gate["settled_step"]):  # from that step on, the last step's answer
            assert all(top[t, pos] == top[-1, pos] for t in range(step - 1, steps))
            assert step == 1 or top[step - 2, pos] != top[-1, pos]
        assert 1 < sum(gate["expected_exit_step"]) / len(gate["expected_exit_step"]) < steps  # not a degenerate gate


def test_every_view_per_iteration_and_the_gate_beside_the_probes(client_over, ouro_dirs):
    client = client_over(ouro_dirs)
    for analysis, params in [("attention", {}), ("head_scores", {"seq_len": 10}), ("logit_lens", {}), ("ablation", {}),
                             ("hallucination", {"max_new_tokens": 2, "min_induction": 0})]:
        assert _run(client, analysis, params)["n_iterations"] == 3, analysis
    probes = _run(client, "probes", {"dataset": "arithmetic_statements", "n": 40, "folds": 2}, text=None)
    assert len(probes["exit_pdf"]) == 3 and sum(probes["exit_pdf"]) == pytest.approx(1, abs=1e-3)
    assert 1 <= probes["expected_exit_step"] <= 3
    plain = client.post("/api/analyses", json={"analysis": "exit_gate", "model": "local/ouro", "text": TEXT,
                                                 "params": {"loop": {"start": 0}}})
    assert plain.status_code == 422 and "set only loop.times" in plain.json()["error"]  # said before any work
