"""The request path: inputs that once gave a 500, failures kept with their cause, the time limit
inside the forward pass, retention (eviction, delete, expiry), headers, OpenAPI, migration."""

import dataclasses
import json
import time
from datetime import datetime

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import create_engine, text

from loupe import progress
from loupe.analyses import REGISTRY, Inputs
from loupe.analyses.head_scores import HeadScoreParams, head_scores
from loupe.db.engine import init_db
from loupe.db.tables import SCHEMA_VERSION, Analysis
from loupe.errors import JobTimeout
from loupe.main import create_app

from ..conftest import TINY

ATTENTION = {"analysis": "attention", "model": TINY, "text": "Attention heads copy information."}
TOO_MANY_TOKENS = "copy " * 300  # under the character bound, over the tiny model's 128 positions


def _assert_error(response, status: int, code: str) -> dict:
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error", "code", "status"} and body["status"] == status and body["code"] == code
    return body


def _until_settled(client, analysis_id: str, timeout: float = 30) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        view = client.get(f"/api/analyses/{analysis_id}")
        assert view.status_code == 200, view.text  # a job that existed is never a 404
        if view.json()["status"] not in ("queued", "running"):
            return view.json()
        time.sleep(0.05)
    raise AssertionError(f"analysis {analysis_id} did not settle in {timeout} s")


# ---- inputs that used to give a 500 ------------------------------------------------------------


def test_a_lone_surrogate_is_a_422_wherever_it_is(client):
    raw = b'{"analysis": "attention", "model": "%s", "text": "a\\ud800b"}' % TINY.encode()
    body = _assert_error(client.post("/api/analyses", content=raw, headers={"content-type": "application/json"}), 422, "invalid_input")
    assert "\\ud800" in body["error"]
    in_params = b'{"analysis": "head_scores", "model": "%s", "params": {"loop": null, "seed": 0, "x\\udfff": 1}}' % TINY.encode()
    response = client.post("/api/analyses", content=in_params, headers={"content-type": "application/json"})
    assert response.status_code == 422  # unknown param or surrogate: refused either way, never a 500
    upload = b'{"format": "jsonl", "content": "{\\"text\\": \\"\\ud800\\", \\"label\\": 1}"}'
    _assert_error(client.post("/api/datasets/parse", content=upload, headers={"content-type": "application/json"}), 422, "invalid_input")


def test_deeply_nested_json_lines_are_a_422(client):
    nested = "[" * 200_000
    _assert_error(client.post("/api/datasets/parse", json={"format": "jsonl", "content": nested}), 422, "invalid_input")
    request = {"analysis": "hallucination_eval", "model": TINY, "params": {"source": "jsonl", "jsonl": nested}}
    body = _assert_error(client.post("/api/analyses", json=request), 422, "invalid_input")
    assert "nested too deeply" in body["error"]
    as_body = client.post("/api/analyses", content=b"[" * 200_000, headers={"content-type": "application/json"})
    assert 400 <= as_body.status_code < 500 and set(as_body.json()) == {"error", "code", "status"}


@pytest.mark.parametrize("seed", [2**64, 10**40, -1])
@pytest.mark.parametrize("analysis", ["head_scores", "hallucination"])
def test_out_of_range_seeds_are_refused_before_any_work(client, analysis, seed):
    request = {"analysis": analysis, "model": TINY, "text": "a b c", "params": {"seed": seed, "sample": True}}
    if analysis == "head_scores":
        request = {"analysis": analysis, "model": TINY, "params": {"seed": seed, "seq_len": 8}}
    _assert_error(client.post("/api/analyses", json=request), 422, "invalid_input")
    assert client.app.state.runs.jobs.computed == 0


# ---- failures are kept with their cause ----------------------------------------------------------


def test_a_failure_found_inside_the_job_is_kept_and_never_a_404(client):
    queued = client.post("/api/analyses", json={**ATTENTION, "text": TOO_MANY_TOKENS, "wait_s": 0})
    assert queued.status_code in (200, 413)
    analysis_id = client.app.state.runs.plan("attention", TINY, TOO_MANY_TOKENS, {}).key
    failed = _until_settled(client, analysis_id)
    assert failed["status"] == "error" and failed["result"] is None
    assert failed["error"]["code"] == "too_long" and "128" in failed["error"]["error"]
    assert client.get(f"/api/analyses/{analysis_id}").json()["error"] == failed["error"]  # kept
    _assert_error(client.post("/api/analyses", json={**ATTENTION, "text": TOO_MANY_TOKENS}), 413, "too_long")


def test_an_unexpected_exception_is_stored_naming_its_cause(client, monkeypatch):
    def broken(model, params, inputs):
        raise RuntimeError("view size is not compatible with input tensor's size and stride")

    monkeypatch.setitem(REGISTRY, "attention", dataclasses.replace(REGISTRY["attention"], fn=broken))
    body = _assert_error(client.post("/api/analyses", json=ATTENTION), 500, "analysis_failed")
    assert "RuntimeError: view size is not compatible" in body["error"]
    analysis_id = client.app.state.runs.plan("attention", TINY, ATTENTION["text"], {}).key
    stored = client.get(f"/api/analyses/{analysis_id}").json()
    assert stored["status"] == "error" and stored["error"] == body
    monkeypatch.undo()
    assert client.post("/api/analyses", json=ATTENTION).json()["status"] == "done"  # re-runnable


def test_a_model_that_cannot_load_is_stored_with_the_reason(settings, tmp_path, model_dir):
    broken = tmp_path / "dirs" / "broken"
    broken.mkdir(parents=True)
    for name in ("config.json", "tokenizer.json", "tokenizer_config.json"):  # no weights
        (broken / name).write_text((model_dir / "gpt2tiny" / name).read_text())
    with TestClient(create_app(settings.model_copy(update={"model_dirs": [tmp_path / "dirs"]}))) as client:
        body = _assert_error(client.post("/api/analyses", json={**ATTENTION, "model": "local/broken"}), 503, "model_unavailable")
        assert "local/broken" in body["error"] and ":" in body["error"].split("loaded:")[1]
        analysis_id = client.app.state.runs.plan("attention", "local/broken", ATTENTION["text"], {}).key
        assert client.get(f"/api/analyses/{analysis_id}").json()["error"] == body


def test_slices_of_an_analysis_without_patterns_are_404_not_500(client):
    lens = client.post("/api/analyses", json={**ATTENTION, "analysis": "logit_lens"}).json()
    assert lens["status"] == "done"
    _assert_error(client.get(f"/api/analyses/{lens['id']}/attention", params={"layer": 0, "head": 0}), 404, "no_patterns")
    _assert_error(client.get(f"/api/analyses/{lens['id']}/thumbnails"), 404, "no_patterns")


def test_hallucination_takes_head_scores_from_the_cache(client):
    for prompt in ("alice red fox . ? alice", "bob blue owl . ? bob"):
        request = {"analysis": "hallucination", "model": TINY, "text": prompt, "params": {"max_new_tokens": 2}}
        assert client.post("/api/analyses", json=request).json()["status"] == "done"
    runs = client.app.state.runs
    with runs.cache.sessions() as session:
        scores = session.query(Analysis).filter_by(analysis="head_scores").all()
    assert len(scores) == 1 and scores[0].status == "done"  # computed once, stored as its own permalink
    assert scores[0].request["params"]["seq_len"] == 50


# ---- the time limit -----------------------------------------------------------------------------


def test_the_time_limit_stops_head_scores_inside_the_forward_pass(tiny_model):
    """No stage is reported here (Inputs() has a silent progress): only the capture's per-layer
    checkpoint can stop it."""
    expired = progress.Progress(timeout_s=0.0)
    expired.stage = "forward"
    token = progress.current.set(expired)
    try:
        with pytest.raises(JobTimeout, match="limit"):
            head_scores(tiny_model, HeadScoreParams(seq_len=20, batch=4), Inputs())
    finally:
        progress.current.reset(token)
    assert head_scores(tiny_model, HeadScoreParams(seq_len=20, batch=4), Inputs()).result.n_layers == 2  # no job: no limit


def test_a_timed_out_job_is_stored_as_timeout(settings):
    with TestClient(create_app(settings.model_copy(update={"job_timeout_s": 1e-6}))) as client:
        request = {"analysis": "head_scores", "model": TINY, "params": {"seq_len": 60, "batch": 64}}
        body = _assert_error(client.post("/api/analyses", json=request), 504, "timeout")
        assert "limit" in body["error"]


# ---- retention ------------------------------------------------------------------------------------


def _attention(client, i: int) -> dict:
    body = client.post("/api/analyses", json={**ATTENTION, "text": f"Sentence number {i} about attention."}).json()
    assert body["status"] == "done"
    return body


def test_eviction_keeps_what_is_stored_under_the_cap(settings, tmp_path, fresh_database):
    with TestClient(create_app(settings)) as client:
        one = client.app.state.runs.cache
        _attention(client, 0)
        size = one.stored_bytes()
    cap = int(3.5 * size)
    capped = settings.model_copy(
        update={"data_dir": tmp_path / "capped", "database_url": fresh_database(tmp_path / "capped"), "max_db_bytes": cap}
    )
    with TestClient(create_app(capped)) as client:
        cache = client.app.state.runs.cache
        ids = [_attention(client, 0)["id"], _attention(client, 1)["id"]]
        time.sleep(1.1)  # reads refresh read_at at 1 s resolution
        assert client.get(f"/api/analyses/{ids[0]}").json()["status"] == "done"  # 0 is now read more recently than 1
        for i in range(2, 8):
            ids.append(_attention(client, i)["id"])
            assert cache.stored_bytes() <= cap
        statuses = [client.get(f"/api/analyses/{i}").json()["status"] for i in ids]
        assert statuses[-3:] == ["done"] * 3 and "evicted" in statuses
        assert statuses[1] == "evicted"  # least recently read went first
        evicted = client.get(f"/api/analyses/{ids[1]}").json()
        assert evicted["text"] == "Sentence number 1 about attention." and evicted["result"] is None
        _assert_error(client.get(f"/api/analyses/{ids[1]}/attention"), 409, "not_ready")
        again = _attention(client, 1)  # the permalink's request, posted again, recomputes it
        assert again["id"] == ids[1]
        assert cache.stored_bytes() <= cap
    if capped.sqlalchemy_url.startswith("sqlite"):  # SQLite's freed pages go back to the file system (PostgreSQL's autovacuum reuses them)
        assert (capped.data_dir / "loupe.db").stat().st_size <= cap + 256 * 1024


def test_delete_needs_the_token_and_removes_everything(settings):
    with TestClient(create_app(settings.model_copy(update={"api_token": "s3cret"}))) as client:
        auth = {"Authorization": "Bearer s3cret"}
        analysis_id = client.post("/api/analyses", json=ATTENTION, headers=auth).json()["id"]
        _assert_error(client.delete(f"/api/analyses/{analysis_id}"), 401, "unauthorized")
        assert client.delete(f"/api/analyses/{analysis_id}", headers=auth).status_code == 204
        _assert_error(client.get(f"/api/analyses/{analysis_id}"), 404, "not_found")
        _assert_error(client.get(f"/api/analyses/{analysis_id}/attention"), 404, "not_found")
        _assert_error(client.delete(f"/api/analyses/{analysis_id}", headers=auth), 404, "not_found")
        assert client.app.state.runs.cache.stored_bytes() == 0


def test_failed_analyses_expire(settings):
    with TestClient(create_app(settings.model_copy(update={"failed_ttl_s": 0.0}))) as client:
        client.post("/api/analyses", json={**ATTENTION, "text": TOO_MANY_TOKENS})
        failed_id = client.app.state.runs.plan("attention", TINY, TOO_MANY_TOKENS, {}).key
        assert client.get(f"/api/analyses/{failed_id}").json()["status"] == "error"
        time.sleep(0.01)
        _attention(client, 0)  # storing a result tidies up
        _assert_error(client.get(f"/api/analyses/{failed_id}"), 404, "not_found")


def test_a_version_1_database_is_migrated_with_its_results(settings):
    """A database written before sizes and read times existed opens, keeps every result, and serves it."""
    with TestClient(create_app(settings)) as client:
        done = client.post("/api/analyses", json=ATTENTION).json()
    engine = create_engine(settings.sqlalchemy_url)
    with engine.begin() as connection:  # back to the version 1 layout
        connection.execute(text("DROP INDEX IF EXISTS ix_analysis_read_at"))
        connection.execute(text("DROP INDEX IF EXISTS ix_analysis_status"))
        connection.execute(text("ALTER TABLE analysis DROP COLUMN read_at"))
        connection.execute(text("ALTER TABLE analysis DROP COLUMN size_bytes"))
        connection.execute(text("UPDATE meta SET value = '1' WHERE key = 'schema_version'"))
    sessions = init_db(engine)
    with sessions() as session:
        row = session.get(Analysis, done["id"])
        assert row.status == "done" and row.size_bytes > 1000 and row.read_at is not None
        assert session.execute(text("SELECT value FROM meta")).scalar() == str(SCHEMA_VERSION)
    engine.dispose()
    with TestClient(create_app(settings)) as client:
        again = client.get(f"/api/analyses/{done['id']}").json()
        assert again["result"] == done["result"]
        assert client.get(f"/api/analyses/{done['id']}/attention", params={"layer": 1, "head": 2}).status_code == 200


# ---- protocol, headers, OpenAPI -------------------------------------------------------------------


def test_security_headers_on_pages_api_and_errors(settings):
    with TestClient(create_app(settings.model_copy(update={"frame_ancestors": "'self' https://wiki.example.org"}))) as client:
        for response in (client.get("/"), client.get("/api/health"), client.get("/api/no/such/route"), client.get("/docs")):
            policy = response.headers["content-security-policy"]
            assert "script-src 'self';" in policy and "frame-ancestors 'self' https://wiki.example.org" in policy
            assert "unsafe-eval" not in policy and "cdn" not in policy
            assert response.headers["x-content-type-options"] == "nosniff"
        not_allowed = client.delete("/api/health")
        _assert_error(not_allowed, 405, "method_not_allowed")
        assert "GET" in not_allowed.headers["allow"].split(", ")


def test_timestamps_carry_their_timezone(client):
    created = datetime.fromisoformat(client.post("/api/analyses", json=ATTENTION).json()["created_at"])
    assert created.tzinfo is not None and created.utcoffset().total_seconds() == 0


def test_openapi_declares_every_response(client):
    doc = client.get("/openapi.json").json()
    attention = doc["paths"]["/api/analyses/{analysis_id}/attention"]["get"]["responses"]
    assert {"application/json", "application/octet-stream"} <= set(attention["200"]["content"])
    post = doc["paths"]["/api/analyses"]["post"]["responses"]
    assert {"400", "413", "422", "429", "500"} <= set(post)
    assert {link["operationId"] for link in post["200"]["links"].values()} == {
        "get_analysis", "get_attention", "get_thumbnails", "delete_analysis",
    }
    assert "evicted" in json.dumps(doc["components"]["schemas"]["AnalysisView"])
    assert doc["paths"]["/api/analyses/{analysis_id}"]["delete"]["responses"]["204"]


def test_docs_are_served_from_local_assets(client):
    for page in ("/docs", "/redoc"):
        html = client.get(page).text
        assets = [part.split('"')[0] for part in html.split('src="')[1:]] + [part.split('"')[0] for part in html.split('href="')[1:]]
        assert assets and all(asset.startswith("/docs-assets/") for asset in assets), assets
        for asset in assets:
            assert client.get(asset).status_code == 200, asset
        assert "<script>" not in html  # no inline script: the CSP allows none


def test_a_known_path_with_another_method_is_405_naming_every_allowed_method(client):
    for method, path, allowed in (
        ("PUT", "/api/analyses", {"GET", "POST"}),
        ("GET", "/api/datasets/parse", {"POST"}),
        ("PUT", "/api/analyses/" + "0" * 64, {"GET", "DELETE"}),
        ("POST", "/", {"GET", "HEAD"}),
    ):
        response = client.request(method, path)
        _assert_error(response, 405, "method_not_allowed")
        assert allowed <= set(response.headers["allow"].split(", ")), (path, response.headers["allow"])
    assert client.get("/").status_code == 200 and "<title>Loupe</title>" in client.get("/").text


def test_a_malformed_csv_header_is_a_422(client):
    _assert_error(client.post("/api/datasets/parse", json={"format": "csv", "content": "a\rb"}), 422, "invalid_input")
