"""Long prompts through the API: a 2,000-token prompt keeps queries and keys, not patterns; every
head served (whole, or a region as the page's tiles) equals HF eager attention, and the stats equal
those of the eager patterns; models whose attention Loupe does not recompute are refused past the
stored-pattern limit, in the one error shape."""

import numpy as np
import pytest
import torch
from fastapi.testclient import TestClient
from transformers import AutoModelForCausalLM

from loupe.analyses import attention as attention_module
from loupe.analyses.attention import head_stats
from loupe.api.routes import analyses as routes
from loupe.config import Settings
from loupe.main import create_app

from ..tiny_models import build_tiny_llama

LONG = "local/llamalong"
WORDS = "the cat sat on a mat while dogs ran past old red barns".split()


def long_text(n_words: int, seed: int = 20261201) -> str:
    rng = np.random.default_rng(seed)
    return " ".join(rng.choice(WORDS, n_words))


@pytest.fixture(scope="module")
def long_dir(tmp_path_factory):
    """A LOUPE_MODEL_DIRS folder holding a tiny GQA Llama with a 4,096-token context."""
    root = tmp_path_factory.mktemp("long_dirs")
    build_tiny_llama(root / "llamalong", n_ctx=4096)
    return root


@pytest.fixture
def long_client(tmp_path, long_dir):
    settings = Settings(data_dir=tmp_path / "data", model_dirs=[long_dir], zoo_dir=tmp_path / "zoo", sync_wait_s=120, max_tokens=4096)
    with TestClient(create_app(settings)) as client:
        yield client


def run(client, text: str) -> dict:
    body = client.post("/api/analyses", json={"analysis": "attention", "model": LONG, "text": text}).json()
    assert body["status"] == "done", body
    return body


def u16(response) -> np.ndarray:
    rows, cols = map(int, response.headers["x-shape"].split(","))
    return np.frombuffer(response.content, "<u2").reshape(rows, cols).astype(np.float32) / 65535


def test_a_long_prompt_is_kept_and_every_head_served_equals_hf_eager(long_client, long_dir):
    body = run(long_client, long_text(600))
    result, analysis_id = body["result"], body["id"]
    n_pos = len(result["tokens"])
    assert n_pos > 1500 and result["pattern_source"] == "recomputed"
    hf = AutoModelForCausalLM.from_pretrained(long_dir / "llamalong", attn_implementation="eager").float().eval()
    with torch.no_grad():
        attentions = hf(torch.tensor([result["token_ids"]]), output_attentions=True).attentions  # [1, head, q, k] per layer
    for layer, want in enumerate(attentions):
        full = head_stats(want[0])
        for stat, values in full.items():
            assert np.allclose(result["head_stats"][stat][0][layer], values.numpy(), atol=2e-4), (stat, layer)
    for layer, head in [(0, 1), (1, 3)]:
        want = attentions[layer][0, head].numpy()
        whole = long_client.get(f"/api/analyses/{analysis_id}/attention?layer={layer}&head={head}&format=u16")
        assert np.abs(u16(whole) - want).max() < 1e-4
        region = long_client.get(f"/api/analyses/{analysis_id}/attention/tile?layer={layer}&head={head}&q0=1000&q1=1040&k0=980&k1=1030")
        assert region.headers["x-region"] == "1000,1040,980,1030"
        assert np.abs(u16(region) - want[1000:1040, 980:1030]).max() < 1e-4  # at most `size` a side: the weights themselves
        overview = long_client.get(f"/api/analyses/{analysis_id}/attention/tile?layer={layer}&head={head}&size=300")
        pooled = torch.nn.functional.adaptive_max_pool2d(torch.from_numpy(want)[None], 300)[0].numpy()
        assert u16(overview).shape == (300, 300) and np.abs(u16(overview) - pooled).max() < 1e-4
        per_row = long_client.get(f"/api/analyses/{analysis_id}/attention/tile?layer={layer}&head={head}&q0=7&q1=9&norm=row&size=2048")
        assert np.abs(u16(per_row) - want[7:9] / want[7:9].max(-1, keepdims=True)).max() < 1e-4
    thumbnails = long_client.get(f"/api/analyses/{analysis_id}/thumbnails").json()
    pooled = torch.nn.functional.adaptive_max_pool2d(attentions[1][0], 32)  # [head, 32, 32]
    assert np.abs(np.array(thumbnails["thumbnails"][1]) - (pooled * 255).round().numpy()).max() <= 1


def test_the_stored_and_kept_forms_serve_the_same_head(long_client, monkeypatch):
    text = long_text(400, seed=3)  # past KEPT_FROM_TOKENS
    kept = run(long_client, text)
    monkeypatch.setattr(attention_module, "KEPT_FROM_TOKENS", 10**6)
    long_client.app.state.runs.cache.delete(kept["id"])
    stored = run(long_client, text)
    assert (kept["result"]["pattern_source"], stored["result"]["pattern_source"]) == ("recomputed", "stored")
    for key in ("tokens", "n_layers", "n_heads"):
        assert kept["result"][key] == stored["result"][key]
    for stat, values in kept["result"]["head_stats"].items():
        assert np.allclose(values, stored["result"]["head_stats"][stat], atol=2e-4)


@pytest.mark.parametrize(
    "query, message",
    [
        ("q0=5&q1=3", "The query range 5..3"),
        ("k1=100000", "The key range 0..100000"),
        ("q0=-1", "The query range -1.."),
        ("size=0", "size must be in 1..2048"),
        ("size=4096", "size must be in 1..2048"),
        ("layer=7", "layer must be in 0..1"),
        ("head=-1", "head must be in 0..3"),
        ("norm=log", None),
    ],
)
def test_a_bad_region_is_refused_in_the_one_shape(long_client, query, message):
    analysis_id = run(long_client, "The cat sat on the mat.")["id"]
    response = long_client.get(f"/api/analyses/{analysis_id}/attention/tile?{query}")
    body = response.json()
    assert response.status_code == 422 and set(body) == {"error", "code", "status"} and body["status"] == 422
    assert message is None or body["error"].startswith(message), body


def test_a_whole_head_past_the_text_limit_is_no_json_or_csv(long_client, monkeypatch):
    monkeypatch.setattr(routes, "MAX_TEXT_HEAD_TOKENS", 16)
    analysis_id = run(long_client, long_text(40))["id"]
    for path in ("attention?layer=0&head=0", "attention/export.csv?layer=0&head=0"):
        response = long_client.get(f"/api/analyses/{analysis_id}/{path}")
        assert response.status_code == 413 and response.json()["code"] == "too_long"
        assert "format=u16" in response.json()["error"]
    assert long_client.get(f"/api/analyses/{analysis_id}/attention?layer=0&head=0&format=stored").status_code == 200
    monkeypatch.setattr(routes, "MAX_WHOLE_HEAD_TOKENS", 32)  # past it, no whole head is made: regions only
    response = long_client.get(f"/api/analyses/{analysis_id}/attention?layer=0&head=0&format=u16")
    assert response.status_code == 413 and "/attention/tile" in response.json()["error"]
    assert long_client.get(f"/api/analyses/{analysis_id}/attention/tile?layer=0&head=0").status_code == 200


def test_past_the_stored_limit_a_model_loupe_does_not_recompute_is_refused(tmp_path, long_dir, monkeypatch):
    monkeypatch.setattr(attention_module, "runs_natively", lambda model: False)  # as a model TransformerLens' hooks run
    settings = Settings(data_dir=tmp_path / "data", model_dirs=[long_dir], zoo_dir=tmp_path / "zoo", sync_wait_s=60, max_stored_tokens=64)
    with TestClient(create_app(settings)) as client:
        short = run(client, long_text(12))
        assert short["result"]["pattern_source"] == "stored"
        response = client.post("/api/analyses", json={"analysis": "attention", "model": LONG, "text": long_text(100)})
    body = response.json()
    assert response.status_code == 422 and body["code"] == "patterns_too_long", body
    assert "past the 64 whose patterns Loupe stores" in body["error"] and "not run by Loupe's own attention function" in body["error"]
