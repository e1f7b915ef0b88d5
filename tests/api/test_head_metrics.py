"""head_metrics through the API on a real temp SQLite: the stored result is the analysis' own, and a
bad corpus (empty, too many texts, a text too long) is refused in the one error shape."""

import pytest

from loupe.analyses import Inputs
from loupe.analyses.head_metrics import MAX_TEXTS, HeadMetricParams, head_metrics

from ..conftest import TINY

PARAMS = {"corpus": "texts", "texts": ["The cat sat on the mat. The cat sat.", "abc abc"], "max_tokens": 64, "top_k": 2}
REQUEST = {"analysis": "head_metrics", "model": TINY, "params": PARAMS}


@pytest.fixture
def client(client_over, model_dir):
    return client_over(model_dir)


def _assert_error(response, status: int, code: str) -> str:
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error", "code", "status"} and body["status"] == status and body["code"] == code
    return body["error"]


def test_the_stored_result_is_the_analysis(client, tiny_model):
    body = client.post("/api/analyses", json={**REQUEST, "text": "ignored"}).json()
    assert body["status"] == "done", body
    with tiny_model.lock:
        direct = head_metrics(tiny_model, HeadMetricParams(**PARAMS), Inputs()).result.model_dump(mode="json")
    assert body["result"] == direct
    types = {t["name"]: t for t in client.get("/api/analysis_types").json()}
    assert not types["head_metrics"]["takes_text"] and types["head_metrics"]["takes_loop"]
    assert not types["head_metrics"]["stores_patterns"]


@pytest.mark.parametrize(
    "params, status, code, says",
    [
        ({"corpus": "texts", "texts": []}, 422, "invalid_input", "empty"),
        ({"corpus": "texts", "texts": ["", " "]}, 422, "invalid_input", "empty"),
        ({"corpus": "texts", "texts": ["a"] * (MAX_TEXTS + 1)}, 422, "invalid_input", "texts"),
        ({"corpus": "texts", "texts": ["fine", "copy " * 60], "max_tokens": 32}, 413, "too_long", "Text 2"),
        ({"corpus": "texts", "texts": ["x" * 5000]}, 413, "too_long", "Text 1"),
        ({"max_tokens": 4096}, 413, "too_long", "max_tokens"),  # over the tiny model's 128-token context
        ({"top_k": 0}, 422, "invalid_input", "top_k"),
        ({"texts": ["a text without corpus `texts`"]}, 422, "invalid_input", "corpus"),
        ({"corpus": "texts"}, 422, "invalid_input", "corpus"),
        ({"corpus": "texts", "texts": [{"text": "a row, not a text"}]}, 422, "invalid_input", "texts"),
    ],
)
def test_bad_corpus_gives_the_one_error_shape(client, params, status, code, says):
    message = _assert_error(client.post("/api/analyses", json={**REQUEST, "params": params}), status, code)
    assert says in message

