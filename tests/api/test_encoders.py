"""Encoders through the API: listed with `encoder` and without generation; their whole attention
matrices stored (full-u16-zlib) and served equal to HF eager; what needs a causal LM or an
unembedding refused with a 422 naming why, before any job."""

import pytest
import torch
import transformers


from ..conftest import refused
from ..encoders import BY_NAME, build_encoder

TEXT = "The cat sat on the mat. The dog sat on the log."
NAMES = ("bert_base", "roberta_mlm")


@pytest.fixture(scope="module")
def encoder_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("api_encoders")
    for name in NAMES:
        build_encoder(name, root)
    return root


@pytest.fixture
def encoder_client(client_over, encoder_dir):
    return client_over(encoder_dir)



def test_encoders_are_listed_as_encoders_without_generation(encoder_client):
    models = {m["id"]: m for m in encoder_client.get("/api/models").json()}
    for name in NAMES:
        capabilities = models[f"local/{name}"]["capabilities"]
        assert {"attention", "tokenizer", "encoder"} <= set(capabilities)
        assert "generating_lm" not in capabilities and "causal_lm" not in capabilities
    assert "unembedding" not in models["local/bert_base"]["capabilities"]
    assert "unembedding" in models["local/roberta_mlm"]["capabilities"]
    types = {t["name"]: t for t in encoder_client.get("/api/analysis_types").json()}
    for name in ("hallucination", "hallucination_eval", "ablation"):
        assert "causal_lm" in types[name]["needs"]
    assert "unembedding" in types["logit_lens"]["needs"]


@pytest.mark.parametrize("name", NAMES)
def test_attention_is_stored_whole_and_served_equal_to_hf_eager(encoder_client, encoder_dir, name):
    body = encoder_client.post("/api/analyses", json={"analysis": "attention", "model": f"local/{name}", "text": TEXT}).json()
    assert body["status"] == "done", body
    result = body["result"]
    assert result["stat_labels"]["bos"].startswith("First token (")  # [CLS] / <s>
    encoder = BY_NAME[name]
    model = getattr(transformers, encoder.hf_class).from_pretrained(encoder_dir / name, attn_implementation="eager").eval()
    with torch.no_grad():
        expected = model(torch.tensor([result["token_ids"]]), output_attentions=True).attentions  # layer -> [1, head, q, k]
    T = len(result["tokens"])
    above = 0
    for layer in range(2):
        for head in range(4):
            params = {"layer": layer, "head": head}
            pattern = torch.tensor(encoder_client.get(f"/api/analyses/{body['id']}/attention", params=params).json()["pattern"])
            assert pattern.shape == (T, T)
            assert (pattern - expected[layer][0, head]).abs().max() < 1e-4
            above += int((pattern.triu(1) > 1e-3).sum())
            stored = encoder_client.get(f"/api/analyses/{body['id']}/attention", params={**params, "format": "stored"})
            assert stored.headers["x-codec"] == "full-u16-zlib"
    assert above > 8 * T  # entries above the diagonal, served as computed


def test_generation_and_next_token_analyses_are_refused_for_encoders(encoder_client):
    for name in NAMES:
        model = f"local/{name}"
        for analysis, extra in (
            ("hallucination", {"text": TEXT}),
            ("ablation", {"text": TEXT}),
            ("hallucination_eval", {"params": {"n_examples": 10, "max_facts": 3}}),
        ):
            message = refused(encoder_client.post("/api/analyses", json={"analysis": analysis, "model": model, **extra}), "encoder")
            assert "is an encoder" in message and "bidirectional" in message
    assert encoder_client.app.state.runs.jobs.computed == 0  # refused before any job


def test_the_logit_lens_is_refused_on_encoders(encoder_client):
    """It reads the next token at each position; an MLM predicts the token in place (a browser walk-
    through found it labelling "what the model would write next" on BERT). A base encoder also has
    no unembedding at all."""
    request = {"analysis": "logit_lens", "model": "local/bert_base", "text": TEXT}
    assert "without its masked-LM head" in refused(encoder_client.post("/api/analyses", json=request), "no_unembedding")
    mlm = refused(encoder_client.post("/api/analyses", json={**request, "model": "local/roberta_mlm"}), "encoder")
    assert "logit lens" in mlm
    assert encoder_client.app.state.runs.jobs.computed == 0


def test_head_scores_on_an_encoder_mark_induction(encoder_client):
    request = {"analysis": "head_scores", "model": "local/bert_base", "params": {"seq_len": 8, "batch": 2}}
    body = encoder_client.post("/api/analyses", json=request).json()
    assert body["status"] == "done", body
    assert "not the causal induction mechanism" in body["result"]["formulas"]["induction"]
    assert set(body["result"]["scores"]) == {"induction", "previous_token", "duplicate_token", "bos"}
    stored = encoder_client.get(f"/api/analyses/{body['id']}/attention", params={"layer": 0, "head": 0, "format": "stored"})
    assert stored.headers["x-codec"] == "full-u16-zlib"
