"""GET /api/models/{id}/card and POST /api/models/{id}/tokenize: a model's card, a text's token count."""

import json
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from transformers import AutoTokenizer

from loupe.config import Settings
from loupe.main import create_app

from ..conftest import TINY

ZOO = Path(__file__).resolve().parents[2] / "models"
WORDS = "When Mary and John went to the store, John gave a drink to Mary. "


def _error(response, status: int, code: str) -> None:
    assert response.status_code == status, response.text
    assert response.json() == {"error": response.json()["error"], "code": code, "status": status}


@pytest.fixture
def zoo_client(tmp_path, model_dir):
    settings = Settings(data_dir=tmp_path / "data", model_dirs=[model_dir], zoo_dir=ZOO, max_tokens=16)
    with TestClient(create_app(settings)) as client:
        yield client


def test_a_zoo_models_card_is_its_readme_as_text(zoo_client):
    models = {m["id"]: m for m in zoo_client.get("/api/models").json()}
    for model_id in ("looped-add", "looped-lag", "retrieval-2l", "induction-2l"):
        response = zoo_client.get(f"/api/models/{model_id}/card")
        assert response.status_code == 200 and response.headers["content-type"].startswith("text/markdown")
        assert response.text == (ZOO / model_id / "README.md").read_text()
        assert models[model_id]["has_card"] and models[model_id]["prompt_hint"]
    assert models[TINY]["has_card"] is False and models[TINY]["prompt_hint"] is None
    _error(zoo_client.get(f"/api/models/{TINY}/card"), 404, "no_card")
    _error(zoo_client.get("/api/models/no-such-model/card"), 404, "unknown_model")


def test_the_hints_are_what_each_zoo_model_reads(zoo_client):
    hints = {m["id"]: m["prompt_hint"] for m in zoo_client.get("/api/models").json()}
    assert hints["looped-add"] == hints["looped-lag"] == "23+45=860?"  # 23 + 45 = 68, written 86, then a 0 pad
    assert hints["retrieval-2l"].rstrip().split()[-2] == "?"  # key-value facts, then "? key"
    assert hints["retrieval-2l"].split()[-1] in hints["retrieval-2l"].split("?")[0]
    words = hints["induction-2l"].split()
    assert len(set(words)) < len(words)  # English with a repeat


def test_the_token_count_is_the_tokenizers_plus_bos_and_the_limit_is_the_smaller(zoo_client, model_dir):
    tokenizer = AutoTokenizer.from_pretrained(model_dir / "gpt2tiny")
    for text in ("The cat sat on the mat.", WORDS * 3, "a\n\n\nb"):
        body = zoo_client.post(f"/api/models/{TINY}/tokenize", json={"text": text}).json()
        assert body == {"n_tokens": 1 + len(tokenizer(text)["input_ids"]), "limit": 16, "truncated": None}
    lag = zoo_client.post("/api/models/looped-lag/tokenize", json={"text": "23+45=860?"}).json()
    n_ctx = json.loads((ZOO / "looped-lag" / "config.json").read_text())["max_position_embeddings"]
    assert lag == {"n_tokens": 1 + len("23+45=860?"), "limit": min(16, n_ctx), "truncated": None}  # a token a character


@pytest.mark.parametrize("text", [WORDS * 3, "Harry Potter and the Philosopher's Stone; Harry Potter and the Chamber"])
def test_truncating_keeps_exactly_the_first_tokens(zoo_client, model_dir, text):
    tokenizer = AutoTokenizer.from_pretrained(model_dir / "gpt2tiny")
    whole = [0] + tokenizer(text)["input_ids"]  # BOS = id 0 prepended
    assert len(whole) > 16
    body = zoo_client.post(f"/api/models/{TINY}/tokenize", json={"text": text, "truncate": True}).json()
    cut = body["truncated"]
    assert body["n_tokens"] == len(whole) and text.startswith(cut["text"])
    ids = [0] + tokenizer(cut["text"])["input_ids"]
    assert cut["n_tokens"] == len(ids) and ids == whole[: len(ids)]  # the first tokens, exactly
    assert 16 - 1 <= len(ids) <= 16  # at most one short (a token boundary)
    again = zoo_client.post("/api/analyses", json={"analysis": "attention", "model": TINY, "text": cut["text"]})
    assert again.status_code in (200, 201, 202), again.text  # the cut text runs


def test_tokenize_errors_keep_the_one_shape(zoo_client):
    _error(zoo_client.post("/api/models/no-such-model/tokenize", json={"text": "x"}), 404, "unknown_model")
    _error(zoo_client.post(f"/api/models/{TINY}/tokenize", json={"text": "x" * 16 * 33}), 413, "too_long")
    response = zoo_client.post(f"/api/models/{TINY}/tokenize", json={})
    assert response.status_code == 422 and set(response.json()) == {"error", "code", "status"}


@pytest.mark.parametrize("model_id", ["%0A%5E%C2%B5", "a/b%0Ac", "x%0D%0A"])
def test_a_model_id_with_a_line_break_is_an_unknown_model_not_a_static_405(zoo_client, model_id):
    """Starlette's `path` stops at a line break: such an id fell through to the static files (found
    by the stateful fuzz, seed 20261201)."""
    for response in (zoo_client.post(f"/api/models/{model_id}/tokenize", json={"text": "hi"}),
                     zoo_client.get(f"/api/models/{model_id}/card")):
        body = response.json()
        assert response.status_code == 404 and body["code"] == "unknown_model" and set(body) == {"error", "code", "status"}
