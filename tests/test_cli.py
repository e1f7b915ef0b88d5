"""`python -m loupe.cli` in a subprocess: analyze and precompute, in-process over a data dir (then read
back from that data dir) and against a running server."""

import json
import os
import subprocess
import sys
import tomllib
from urllib.parse import parse_qs, urlsplit

import httpx
import numpy as np
from fastapi.testclient import TestClient

from loupe import cli
from loupe.config import Settings
from loupe.main import create_app

from .conftest import TINY
from .server import ROOT

TEXT = "The cat sat on the mat. The cat sat"


def run_cli(*args: str, data_dir=None, model_dir=None, zoo=None) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT / "backend"), "LOUPE_PORT": "8123", "LOUPE_HUB_MODELS": "", "LOUPE_API_TOKEN": ""}
    if data_dir:
        env |= {"LOUPE_DATA_DIR": str(data_dir), "LOUPE_MODEL_DIRS": str(model_dir), "LOUPE_ZOO_DIR": str(zoo)}
    return subprocess.run([sys.executable, "-m", "loupe.cli", *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)


def link_id(permalink: str, base: str) -> str:
    assert permalink.startswith(base + "/?"), permalink
    query = parse_qs(urlsplit(permalink).query)
    return query["analysis"][0]


def stored(data_dir, model_dir, zoo):
    """A TestClient over the same data dir the CLI wrote."""
    return TestClient(create_app(Settings(data_dir=data_dir, model_dirs=[model_dir], zoo_dir=zoo)))


def top_heads(grid, count=3) -> str:
    """The top heads of [iteration][layer][head] at one iteration, as the summary writes them."""
    values = np.asarray(grid[0], dtype=float)  # [layer, head]
    order = np.argsort(-values, axis=None, kind="stable")[:count]
    return ", ".join(f"L{i // values.shape[1]}H{i % values.shape[1]} {values.flat[i]:.3f}" for i in order)


def test_analyze_prints_a_permalink_that_opens_from_the_data_dir(tmp_path, model_dir):
    data, zoo = tmp_path / "data", tmp_path / "zoo"
    zoo.mkdir()
    out = run_cli("analyze", "attention", "--model", TINY, "--text", TEXT, data_dir=data, model_dir=model_dir, zoo=zoo)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    analysis_id = link_id(lines[0], "http://127.0.0.1:8123")
    with stored(data, model_dir, zoo) as client:
        body = client.get(f"/api/analyses/{analysis_id}").json()
        assert body["status"] == "done" and body["text"] == TEXT and body["model"] == TINY
        assert client.post("/api/analyses", json={"analysis": "attention", "model": TINY, "text": TEXT}).json()["id"] == analysis_id
        assert client.app.state.runs.jobs.computed == 0  # it was in the cache the CLI filled
    stats = body["result"]["head_stats"]
    for stat in ("bos", "previous_token", "self"):
        assert f"  head_stats.{stat}: {top_heads(stats[stat])}" in lines
    assert "  n_layers: 2" in lines and "  n_heads: 4" in lines

    failed = run_cli("analyze", "attention", "--model", "local/nope", "--text", TEXT, data_dir=data, model_dir=model_dir, zoo=zoo)
    assert failed.returncode == 1 and failed.stdout == ""
    assert "(unknown_model, 404)" in failed.stderr


def test_precompute_fills_the_cache_and_names_what_failed(tmp_path, model_dir):
    data, zoo = tmp_path / "data", tmp_path / "zoo"
    zoo.mkdir()
    prompts = tmp_path / "prompts.jsonl"
    texts = ["The dog sat on the log.", "a b c a b c", "Harry Potter and the Chamber"]
    prompts.write_text("\n".join([
        json.dumps({"text": texts[0]}),
        json.dumps({"text": texts[1], "model": TINY}),
        "",
        "not json",
        json.dumps({"text": texts[2], "model": "local/nope"}),
        json.dumps({"text": texts[2], "params": {"loop": {"times": 0}}}),
        json.dumps({"text": texts[2], "params": {}}),
    ]) + "\n")
    out = run_cli("precompute", str(prompts), "--analysis", "attention", "--model", TINY, data_dir=data, model_dir=model_dir, zoo=zoo)
    assert out.returncode == 1
    links = out.stdout.splitlines()
    assert len(links) == 3
    assert f"{prompts}:4: not JSON" in out.stderr
    assert f"{prompts}:5: " in out.stderr and "(unknown_model, 404)" in out.stderr
    assert f"{prompts}:6: " in out.stderr and "422)" in out.stderr
    assert out.stderr.rstrip().endswith("3 done, 3 failed")
    with stored(data, model_dir, zoo) as client:
        bodies = [client.get(f"/api/analyses/{link_id(link, 'http://127.0.0.1:8123')}").json() for link in links]
    assert [(b["status"], b["model"], b["text"]) for b in bodies] == [("done", TINY, text) for text in texts]

    good = tmp_path / "good.jsonl"
    good.write_text(json.dumps({"text": texts[0]}) + "\n")
    again = run_cli("precompute", str(good), "--analysis", "attention", "--model", TINY, data_dir=data, model_dir=model_dir, zoo=zoo)
    assert again.returncode == 0 and again.stdout.splitlines() == links[:1]
    assert again.stderr.rstrip().endswith("1 done, 0 failed")


def test_analyze_against_a_server(loupe_server):
    out = run_cli("analyze", "head_scores", "--param", "seq_len=8", "--param", "batch=2", "--server", loupe_server.url)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    served = httpx.get(f"{loupe_server.url}/api/analyses/{link_id(lines[0], loupe_server.url)}").json()
    assert served["status"] == "done" and served["model"] == TINY and served["params"]["seq_len"] == 8
    assert f"  scores.induction: {top_heads(served['result']['scores']['induction'])}" in lines


def test_params_and_the_console_script():
    assert cli.params_of([cli.parse_param("loop.times=4"), cli.parse_param("seed=1"), cli.parse_param("name=abc")]) == {
        "loop": {"times": 4}, "seed": 1, "name": "abc",
    }
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert scripts["loupe"] == "loupe.cli:main"


def test_a_worker_refuses_to_start_without_a_queue_or_with_a_device_map_it_cannot_honour(monkeypatch):
    without = run_cli("worker")
    assert without.returncode == 2 and "LOUPE_QUEUE_URL" in without.stderr
    monkeypatch.setenv("LOUPE_QUEUE_URL", "redis://127.0.0.1:1/0")
    monkeypatch.setenv("LOUPE_DEVICE_MAP", '{"transformer.h.0": "cuda:7"}')
    unplaceable = run_cli("worker")
    assert unplaceable.returncode == 2
    body = json.loads(unplaceable.stderr.strip().splitlines()[-1])
    assert body["code"] == "device_map" and "cuda:7" in body["error"]


def test_a_worker_and_the_server_refuse_to_start_on_a_queue_that_does_not_answer(tmp_path, monkeypatch):
    from .server import free_port

    url = f"redis://:secret@127.0.0.1:{free_port()}/0"
    monkeypatch.setenv("LOUPE_QUEUE_URL", url)
    worker = run_cli("worker", data_dir=tmp_path / "data", model_dir=tmp_path, zoo=tmp_path)
    env = {**os.environ, "PYTHONPATH": str(ROOT / "backend"), "LOUPE_DATA_DIR": str(tmp_path / "data"), "LOUPE_PORT": str(free_port())}
    server = subprocess.run([sys.executable, "-m", "loupe"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    for process in (worker, server):
        assert process.returncode == 2 and "LOUPE_QUEUE_URL" in process.stderr and "does not answer" in process.stderr
        assert "Traceback" not in process.stderr and "secret" not in process.stderr
