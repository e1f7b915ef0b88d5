"""Models whose attention Loupe cannot capture exactly are refused by name, before computing,
while the analyses that read the residual stream still run on them."""

import pytest
from fastapi.testclient import TestClient

from loupe.config import Settings
from loupe.main import create_app

from ..architectures import build_architecture


@pytest.fixture(scope="module")
def odd_models(tmp_path_factory):
    root = tmp_path_factory.mktemp("odd")
    for name in ("mamba", "jamba"):
        build_architecture(name, root)
    return root


@pytest.fixture
def odd_client(tmp_path, odd_models):
    settings = Settings(data_dir=tmp_path / "data", model_dirs=[odd_models], zoo_dir=tmp_path / "zoo", sync_wait_s=30)
    with TestClient(create_app(settings)) as client:
        yield client


def _refused(response, code: str) -> str:
    assert response.status_code == 422, response.text
    body = response.json()
    assert body["code"] == code and body["status"] == 422
    return body["error"]


def test_an_attention_free_model_is_refused_up_front_and_lists_no_attention(odd_client):
    models = {m["id"]: m for m in odd_client.get("/api/models").json()}
    assert "attention" not in models["local/mamba"]["capabilities"]
    for analysis, extra in (("attention", {"text": "The cat sat."}), ("head_scores", {"params": {"seq_len": 8}})):
        message = _refused(odd_client.post("/api/analyses", json={"analysis": analysis, "model": "local/mamba", **extra}), "no_attention")
        assert "mamba has no attention layers" in message and "logit lens" in message
    assert odd_client.app.state.runs.jobs.computed == 0  # refused before any job
    lens = odd_client.post("/api/analyses", json={"analysis": "logit_lens", "model": "local/mamba", "text": "The cat sat on the"})
    assert lens.status_code == 200 and lens.json()["status"] == "done"


def test_a_hybrid_stack_is_refused_naming_its_layers(odd_client):
    request = {"analysis": "attention", "model": "local/jamba", "text": "The cat sat."}
    message = _refused(odd_client.post("/api/analyses", json=request), "hybrid_stack")  # found when it loads
    assert "layers [0]" in message and "[1]" in message
    models = {m["id"]: m for m in odd_client.get("/api/models").json()}
    assert "attention" not in models["local/jamba"]["capabilities"]  # from its structure, now it is loaded
    again = odd_client.post("/api/analyses", json={**request, "text": "Another text."})
    _refused(again, "hybrid_stack")
    assert odd_client.app.state.runs.jobs.computed == 1  # once loaded, refused before any job


@pytest.fixture
def no_tokenizer_client(tmp_path, model_dir):
    """The tiny GPT-2's folder without its tokenizer files: config and weights only."""
    import shutil

    folder = tmp_path / "dirs" / "notok"
    folder.mkdir(parents=True)
    for name in ("config.json", "model.safetensors", "generation_config.json"):
        if (model_dir / "gpt2tiny" / name).exists():
            shutil.copy(model_dir / "gpt2tiny" / name, folder / name)
    settings = Settings(data_dir=tmp_path / "data", model_dirs=[tmp_path / "dirs"], zoo_dir=tmp_path / "zoo", sync_wait_s=30)
    with TestClient(create_app(settings)) as client:
        yield client


def test_a_folder_without_a_tokenizer_is_listed_with_a_warning_and_text_is_refused(no_tokenizer_client):
    (model,) = no_tokenizer_client.get("/api/models").json()
    assert model["id"] == "local/notok" and "tokenizer" not in model["capabilities"]
    assert model["warnings"] and "No tokenizer files" in model["warnings"][0]
    for analysis in ("attention", "logit_lens", "head_ablation"):
        request = {"analysis": analysis, "model": "local/notok", "text": "The cat sat."}
        assert "no tokenizer files" in _refused(no_tokenizer_client.post("/api/analyses", json=request), "no_tokenizer")
    assert no_tokenizer_client.app.state.runs.jobs.computed == 0
    types = {t["name"]: t for t in no_tokenizer_client.get("/api/analysis_types").json()}
    assert "tokenizer" in types["attention"]["needs"] and "tokenizer" not in types["head_scores"]["needs"]
