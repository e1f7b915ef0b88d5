"""ablation over HTTP: bad input is a 422 in the one error shape (never a 500), the clean patterns are
served, and rows stored as `head_ablation` before the rename still open, as `ablation`."""

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import create_engine, text

from loupe.db.engine import init_db
from loupe.db.tables import SCHEMA_VERSION
from loupe.main import create_app

from ..conftest import TINY, refused

TEXT = "The cat sat on the mat. The cat sat on the mat."


@pytest.mark.parametrize(
    "params, says",
    [
        ({"heads": ["L9H0"]}, "no attention head"),
        ({"heads": ["L0H0"], "iteration": 2}, "out of range"),
        ({"metric": "prob", "target": " cat mat"}, "exactly one"),
        ({"metric": "logit_diff", "target": " the", "other": "xyzzy qq"}, "exactly one"),
        ({"mode": "median"}, "mode"),
    ],
)
def test_bad_input_is_a_422_in_the_one_error_shape(client, params, says):
    response = client.post("/api/analyses", json={"analysis": "ablation", "model": TINY, "text": TEXT, "params": params})
    if response.status_code == 200:  # refused while computing: the stored failure says why
        response = client.get(f"/api/analyses/{response.json()['id']}")
        body = response.json()
        assert body["status"] == "error" and body["error"]["status"] == 422 and body["error"]["code"] == "invalid_input", body
        assert says in body["error"]["error"]
        return
    assert says in refused(response, "invalid_input")


def test_a_sweep_serves_its_clean_patterns(client):
    done = client.post("/api/analyses", json={"analysis": "ablation", "model": TINY, "text": TEXT}).json()
    assert done["status"] == "done"
    pattern = client.get(f"/api/analyses/{done['id']}/attention", params={"layer": 1, "head": 0}).json()["pattern"]
    assert len(pattern) == len(done["result"]["tokens"]) and all(abs(sum(row) - 1) < 1e-3 for row in pattern)


def test_a_stored_head_ablation_opens_as_ablation_after_the_migration(settings):
    with TestClient(create_app(settings)) as client:
        done = client.post("/api/analyses", json={"analysis": "ablation", "model": TINY, "text": TEXT}).json()
    old = {
        "tokens": done["result"]["tokens"], "token_ids": done["result"]["token_ids"], "n_iterations": 1, "n_layers": 2,
        "n_heads": 4, "loss": 5.5, "attention_layers": [0, 1], "delta_loss": [[[0.1] * 4, [0.2] * 4]], "formula": "old",
    }  # fmt: skip
    engine = create_engine(settings.sqlalchemy_url)
    with engine.begin() as connection:  # as version 2 stored a head_ablation
        connection.execute(
            text("UPDATE analysis SET analysis = 'head_ablation', result = :result, request = :request WHERE id = :id"),
            {"id": done["id"], "result": __import__("json").dumps(old), "request": '{"text": "%s", "params": {"loop": null}}' % TEXT},
        )
        connection.execute(text("DELETE FROM blob WHERE analysis_id = :id"), {"id": done["id"]})
        connection.execute(text("UPDATE meta SET value = '2' WHERE key = 'schema_version'"))
    init_db(engine)
    with engine.begin() as connection:
        assert connection.execute(text("SELECT value FROM meta")).scalar() == str(SCHEMA_VERSION) == "3"
    engine.dispose()
    with TestClient(create_app(settings)) as client:
        again = client.get(f"/api/analyses/{done['id']}").json()
        assert again["analysis"] == "ablation" and again["status"] == "done"
        result = again["result"]
        assert result["clean"] == 5.5 and result["delta"] == old["delta_loss"] and result["metric"] == "loss"
        assert result["mode"] == "zero" and result["heads"] is None and result["patterns"] is False
        missing = client.get(f"/api/analyses/{done['id']}/attention", params={"layer": 0, "head": 0})
        assert missing.status_code == 404 and missing.json()["code"] == "no_patterns"
