"""LOUPE_DEVICE_MAP on a real tiny GPT-2: the map is honoured weight by weight, analyses on the
placed model equal the plain model's exactly, and a map this machine or model cannot take is
refused in the one error shape (at start-up, or at load for what needs the model)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from fastapi.testclient import TestClient

from loupe.analyses.attention import attention
from loupe.analyses.registry import Inputs
from loupe.capture import capture_patterns
from loupe.config import Settings
from loupe.errors import AppError
from loupe.main import create_app
from loupe.model_store import ModelStore
from loupe import placement
from loupe.placement import STRATEGIES, device_map

from .conftest import TINY

TEXT = "An induction head attends to the token after the previous occurrence of the current token."
# layer 1 offloaded to disk (accelerate keeps meta placeholders and loads it per forward), the rest on the CPU
MAP = {"transformer.wte": "cpu", "transformer.wpe": "cpu", "transformer.h.0": "cpu", "transformer.h.1": "disk",
       "transformer.ln_f": "cpu", "lm_head": "cpu"}


@pytest.fixture(scope="module")
def placed(model_dir, tmp_path_factory):
    settings = Settings(data_dir=tmp_path_factory.mktemp("data"), model_dirs=[model_dir],
                        zoo_dir=tmp_path_factory.mktemp("zoo"), device_map=json.dumps(MAP))
    return ModelStore(settings).get(TINY), settings


def test_an_explicit_map_places_every_weight_where_it_says(placed):
    model, _ = placed
    hf = model.bridge.original_model
    assert model.spread and hf.hf_device_map == MAP and model.input_device == torch.device("cpu")
    for module, target in MAP.items():
        weights = dict(hf.get_submodule(module).named_parameters())
        # the bridge splits GPT-2's fused c_attn into its own q, k, v copies; the HF weights are the ones placed
        hf_weights = {name: w for name, w in weights.items() if not any(f"attn.{p}." in name for p in "qkv")}
        assert hf_weights and {w.device.type for w in hf_weights.values()} == {"meta" if target == "disk" else "cpu"}, module
    # what holds layer 1's weights: accelerate's hooks, which load them from the checkpoint for each forward
    offloading = {name for name, module in hf.named_modules() if getattr(getattr(module, "_hf_hook", None), "offload", False)}
    assert offloading and all(name.startswith("transformer.h.1.") for name in offloading)


def test_attention_on_the_placed_model_equals_the_plain_model_exactly(placed, tiny_model):
    model, _ = placed
    params = attention.__annotations__["params"]()
    with model.lock, tiny_model.lock:
        spread = attention(model, params, Inputs(text=TEXT, max_tokens=1024))
        plain = attention(tiny_model, params, Inputs(text=TEXT, max_tokens=1024))
    assert spread.result == plain.result
    assert [(s.name, s.iteration, s.layer, s.head, s.data) for s in spread.patterns.slices()] == \
           [(s.name, s.iteration, s.layer, s.head, s.data) for s in plain.patterns.slices()]


@pytest.mark.parametrize("native", [True, False])  # Loupe's own capture, and the bridge's hook_pattern
def test_captured_patterns_of_the_placed_model_equal_the_plain_model_exactly(placed, tiny_model, native):
    model, _ = placed
    tokens = tiny_model.tokenize(TEXT, 1024)
    with model.lock, tiny_model.lock:
        spread_logits, spread = capture_patterns(model, tokens, native=native)
        plain_logits, plain = capture_patterns(tiny_model, tokens, native=native)
    assert spread.device.type == "cpu" and torch.equal(spread, plain) and torch.equal(spread_logits, plain_logits)


def _refusal(value: str) -> dict:
    with pytest.raises(AppError) as raised:
        device_map(Settings(device_map=value))
    body = raised.value.body()
    assert set(body) == {"error", "code", "status"} and body["code"] == "device_map" and body["status"] == 503
    return body


@pytest.mark.parametrize("value, reason", [
    ("{not json", "not valid JSON"),
    ("[0, 1]", "neither a strategy"),
    ("everywhere", "neither a strategy"),
    ("{}", "non-empty object"),
    ('{"transformer": "tpu"}', "no device torch knows"),
    ('{"transformer": "cuda:99"}', "this machine has"),
    ('{"transformer": 99}', "this machine has"),
    ('{"transformer": "meta"}', "holds no weights"),
    ('{"transformer": true}', "a device is a string"),
])
def test_a_map_this_machine_cannot_honour_is_refused_with_its_reason(value, reason):
    assert reason in _refusal(value)["error"]


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_a_strategy_with_no_accelerator_is_refused(strategy, monkeypatch):
    monkeypatch.setattr(placement, "_accelerators", lambda: 0)  # what torch reports on a CPU-only host
    assert "torch sees none" in _refusal(strategy)["error"]


def test_unset_or_an_offload_map_is_accepted():
    assert device_map(Settings()) is None and device_map(Settings(device_map=" ")) is None
    assert device_map(Settings(device_map=json.dumps(MAP))) == MAP


def test_the_server_refuses_to_start_on_a_map_it_cannot_honour(tmp_path):
    root = Path(__file__).resolve().parents[1]
    env = {**os.environ, "PYTHONPATH": str(root / "backend"), "LOUPE_DEVICE_MAP": "auto", "LOUPE_DATA_DIR": str(tmp_path),
           "CUDA_VISIBLE_DEVICES": "", "HIP_VISIBLE_DEVICES": ""}  # a CPU-only host, on any machine
    done = subprocess.run([sys.executable, "-m", "loupe"], cwd=root, env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    body = json.loads(done.stderr.strip().splitlines()[-1])
    assert body["code"] == "device_map" and body["status"] == 503 and "auto" in body["error"]


def _first_analysis(settings: Settings, mapping: dict):
    """The answer to an app's first analysis of TINY (its first load) with this device map."""
    with TestClient(create_app(settings.model_copy(update={"device_map": json.dumps(mapping)}))) as client:
        return client.post("/api/analyses", json={"analysis": "attention", "model": TINY, "text": TEXT})


@pytest.mark.parametrize("mapping, reason", [
    ({**MAP, "transformer.h.7": "cpu"}, "has no module 'transformer.h.7'"),  # a map written for a deeper model
    # all on the CPU, HF would load the rest there unasked; Loupe refuses
    ({"transformer.wte": "cpu", "transformer.h.0": "cpu", "lm_head": "cpu"}, "names no device for transformer.h.1."),
])
def test_a_map_that_does_not_fit_the_model_is_refused_at_load_in_the_error_shape(settings, mapping, reason):
    response = _first_analysis(settings, mapping)
    body = response.json()
    assert response.status_code == 503 and set(body) == {"error", "code", "status"}, body
    assert body["code"] == "device_map" and reason in body["error"]


def test_a_map_accelerate_refuses_is_answered_in_the_error_shape(settings):
    """With an offload target, accelerate itself checks that every weight is placed."""
    mapping = {key: value for key, value in MAP.items() if key != "transformer.ln_f"}
    body = _first_analysis(settings, mapping).json()
    assert body["status"] == 503 and body["code"] == "model_unavailable" and "transformer.ln_f.weight" in body["error"]
