"""Models whose attention Loupe cannot capture exactly are refused by name, before computing,
while the analyses that read the residual stream still run on them."""

import pytest


from ..conftest import refused
from ..architectures import build_architecture


@pytest.fixture(scope="module")
def odd_models(tmp_path_factory):
    root = tmp_path_factory.mktemp("odd")
    for name in ("mamba", "jamba"):
        build_architecture(name, root)
    return root


@pytest.fixture
def odd_client(client_over, odd_models):
    return client_over(odd_models)



def test_an_attention_free_model_is_refused_up_front_and_lists_no_attention(odd_client):
    models = {m["id"]: m for m in odd_client.get("/api/models").json()}
    assert "attention" not in models["local/mamba"]["capabilities"]
    for analysis, extra in (("attention", {"text": "The cat sat."}), ("head_scores", {"params": {"seq_len": 8}})):
        message = refused(odd_client.post("/api/analyses", json={"analysis": analysis, "model": "local/mamba", **extra}), "no_attention")
        assert "mamba has no attention layers" in message and "logit lens" in message
    assert odd_client.app.state.runs.jobs.computed == 0  # refused before any job
    lens = odd_client.post("/api/analyses", json={"analysis": "logit_lens", "model": "local/mamba", "text": "The cat sat on the"})
    assert lens.status_code == 200 and lens.json()["status"] == "done"


def test_a_hybrid_stack_shows_its_attention_layers_under_their_real_index(odd_client):
    """Jamba's layer 0 is a Mamba layer, layer 1 attends: every analysis runs, layer 0 is null,
    its slice is a 404 that says why (the matrix checks layer 1's patterns against HF eager)."""
    attention = odd_client.post("/api/analyses", json={"analysis": "attention", "model": "local/jamba", "text": "The cat sat on the mat."})
    assert attention.status_code == 200, attention.text
    result = attention.json()["result"]
    assert result["n_layers"] == 2 and result["attention_layers"] == [1]
    for stat in result["head_stats"].values():
        assert stat[0][0] == [None] * result["n_heads"] and None not in stat[0][1]
    analysis_id = attention.json()["id"]
    pattern = odd_client.get(f"/api/analyses/{analysis_id}/attention", params={"layer": 1, "head": 2}).json()["pattern"]
    assert all(abs(sum(row) - 1) < 1e-3 for row in pattern)
    missing = odd_client.get(f"/api/analyses/{analysis_id}/attention", params={"layer": 0, "head": 0})
    assert missing.status_code == 404 and missing.json()["code"] == "no_patterns" and "has no attention" in missing.json()["error"]
    thumbnails = odd_client.get(f"/api/analyses/{analysis_id}/thumbnails").json()["thumbnails"]
    assert len(thumbnails) == 2 and max(map(max, thumbnails[0][0])) == 0 and max(map(max, thumbnails[1][0])) > 0
    scores = odd_client.post("/api/analyses", json={"analysis": "head_scores", "model": "local/jamba", "params": {"seq_len": 8, "batch": 2}})
    assert scores.json()["result"]["scores"]["induction"][0][0] == [None] * 4
    ablation = odd_client.post("/api/analyses", json={"analysis": "ablation", "model": "local/jamba", "text": "The cat sat on the mat."})
    delta = ablation.json()["result"]["delta"][0]
    assert delta[0] == [None] * 4 and None not in delta[1]
    generated = odd_client.post(
        "/api/analyses", json={"analysis": "hallucination", "model": "local/jamba", "text": "The cat sat on the", "params": {"min_induction": 0}}
    ).json()["result"]
    assert all(head.startswith("L1") for head in (generated["heads"][i] for i in generated["retrieval_heads"]))
    assert generated["induction_scores"][:4] == [None] * 4 and all(value is not None for value in generated["bos_all"])
    models = {m["id"]: m for m in odd_client.get("/api/models").json()}
    assert "attention" in models["local/jamba"]["capabilities"] and models["local/jamba"]["attention_layers"] == [1]


@pytest.fixture
def no_tokenizer_client(tmp_path, model_dir, client_over):
    """The tiny GPT-2's folder without its tokenizer files: config and weights only."""
    import shutil

    folder = tmp_path / "dirs" / "notok"
    folder.mkdir(parents=True)
    for name in ("config.json", "model.safetensors", "generation_config.json"):
        if (model_dir / "gpt2tiny" / name).exists():
            shutil.copy(model_dir / "gpt2tiny" / name, folder / name)
    return client_over(tmp_path / "dirs")


def test_a_folder_without_a_tokenizer_is_listed_with_a_warning_and_text_isrefused(no_tokenizer_client):
    (model,) = no_tokenizer_client.get("/api/models").json()
    assert model["id"] == "local/notok" and "tokenizer" not in model["capabilities"]
    assert model["warnings"] and "No tokenizer files" in model["warnings"][0]
    for analysis in ("attention", "logit_lens", "ablation"):
        request = {"analysis": analysis, "model": "local/notok", "text": "The cat sat."}
        assert "no tokenizer files" in refused(no_tokenizer_client.post("/api/analyses", json=request), "no_tokenizer")
    assert no_tokenizer_client.app.state.runs.jobs.computed == 0
    types = {t["name"]: t for t in no_tokenizer_client.get("/api/analysis_types").json()}
    assert "tokenizer" in types["attention"]["needs"] and "tokenizer" not in types["head_scores"]["needs"]
