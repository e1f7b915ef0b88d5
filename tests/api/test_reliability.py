"""Shared-server behaviour: single flight, isolation of concurrent analyses, limits, auth."""

from concurrent.futures import ThreadPoolExecutor

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import create_engine, text

from loupe.db.engine import SchemaMismatch, init_db, make_engine
from loupe.db.tables import Meta
from loupe.main import create_app

from ..conftest import TINY

ATTENTION = {"analysis": "attention", "model": TINY, "text": "Attention heads copy information."}


def test_twenty_identical_requests_compute_once(client):
    with ThreadPoolExecutor(max_workers=20) as pool:
        responses = list(pool.map(lambda _: client.post("/api/analyses", json=ATTENTION), range(20)))
    assert all(r.status_code == 200 for r in responses)
    bodies = [r.json() for r in responses]
    assert {b["id"] for b in bodies} == {bodies[0]["id"]}
    assert all(b["status"] == "done" and b["result"] == bodies[0]["result"] for b in bodies)
    assert client.app.state.runs.jobs.computed == 1


def test_concurrent_mixed_requests_equal_sequential_ones(settings, tmp_path, fresh_database):
    requests = [
        {**ATTENTION, "text": f"Request number {i} about attention heads."} for i in range(4)
    ] + [{"analysis": "head_scores", "model": TINY, "params": {"seq_len": 10, "batch": 3, "seed": seed}} for seed in range(3)]

    def slices(client, body):
        return [
            client.get(f"/api/analyses/{body['id']}/attention", params={"layer": l, "head": h}).json()["pattern"]
            for l in range(2)
            for h in range(4)
        ]

    with TestClient(create_app(settings)) as client:
        with ThreadPoolExecutor(max_workers=len(requests)) as pool:
            concurrent = list(pool.map(lambda r: client.post("/api/analyses", json=r).json(), requests))
        concurrent_slices = [slices(client, body) for body in concurrent]
    sequential_settings = settings.model_copy(
        update={"data_dir": tmp_path / "sequential", "database_url": fresh_database(tmp_path / "sequential")}
    )
    with TestClient(create_app(sequential_settings)) as client:
        for request, body, expected in zip(requests, concurrent, concurrent_slices):
            alone = client.post("/api/analyses", json=request).json()
            assert alone["id"] == body["id"] and alone["result"] == body["result"]
            assert slices(client, alone) == expected


def test_api_token_guards_computing_but_not_reading(settings):
    with TestClient(create_app(settings.model_copy(update={"api_token": "s3cret"}))) as client:
        refused = client.post("/api/analyses", json=ATTENTION)
        assert refused.status_code == 401 and refused.json()["code"] == "unauthorized"
        wrong = client.post("/api/analyses", json=ATTENTION, headers={"Authorization": "Bearer nope"})
        assert wrong.status_code == 401
        done = client.post("/api/analyses", json=ATTENTION, headers={"Authorization": "Bearer s3cret"}).json()
        assert done["status"] == "done"
        # permalinks stay readable without the token
        assert client.get(f"/api/analyses/{done['id']}").status_code == 200
        assert client.get(f"/api/analyses/{done['id']}/attention").status_code == 200
        assert client.get("/api/models").status_code == 200


def test_oversized_body_is_refused_before_reading(settings):
    with TestClient(create_app(settings.model_copy(update={"max_body_bytes": 4096}))) as client:
        response = client.post("/api/analyses", json={**ATTENTION, "text": "x" * 10_000})
        assert response.status_code == 413 and response.json()["code"] == "too_long"


def test_job_time_limit_fails_the_job_cleanly(settings):
    with TestClient(create_app(settings.model_copy(update={"job_timeout_s": 1e-9}))) as client:
        response = client.post("/api/analyses", json=ATTENTION)
        assert response.status_code == 504 and response.json()["code"] == "timeout"
        stored = client.get(f"/api/analyses/{_key_of(client, ATTENTION)}").json()
        assert stored["status"] == "error" and stored["error"]["code"] == "timeout"
    with TestClient(create_app(settings)) as client:  # the same request can be re-run
        assert client.post("/api/analyses", json=ATTENTION).json()["status"] == "done"


def _key_of(client, request):
    from loupe.analyses import REGISTRY

    spec = REGISTRY[request["analysis"]]
    return spec.key(request["model"], client.app.state.store.revision(request["model"]), request["text"], spec.params())


def test_a_database_of_another_schema_version_is_refused(tmp_path, fresh_database):
    engine = make_engine(fresh_database(tmp_path / "old"))
    sessions = init_db(engine)
    with sessions.begin() as session:
        session.get(Meta, "schema_version").value = "0"
    with pytest.raises(SchemaMismatch, match="schema version 0"):
        init_db(engine)


def test_database_url_points_anywhere_sqlalchemy_reaches(settings, tmp_path, fresh_database):
    url = fresh_database(tmp_path / "elsewhere")
    with TestClient(create_app(settings.model_copy(update={"database_url": url}))) as client:
        done = client.post("/api/analyses", json=ATTENTION).json()
        assert done["status"] == "done"
    engine = create_engine(url)
    with engine.connect() as connection:
        assert connection.execute(text("SELECT status FROM analysis WHERE id = :id"), {"id": done["id"]}).scalar() == "done"
    engine.dispose()
    assert not (settings.data_dir / "loupe.db").exists()
