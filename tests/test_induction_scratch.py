"""The shipped induction-scratch model and its checkpoints show the numbers its card and trajectory record."""

import json
from pathlib import Path

import pytest
import torch
from safetensors import safe_open

from loupe.analyses.head_scores import HeadScoreParams, head_scores
from loupe.analyses.registry import Inputs
from loupe.config import Settings
from loupe.model_store import ModelStore

FOLDER = Path(__file__).resolve().parents[1] / "models" / "induction-scratch"
TRAJECTORY = json.loads((FOLDER / "checkpoints" / "trajectory.json").read_text())["checkpoints"]


def _scores(zoo: Path, model_id: str) -> dict:
    model = ModelStore(Settings(zoo_dir=zoo)).get(model_id)
    with model.lock:
        return {k: v[0] for k, v in head_scores(model, HeadScoreParams(), Inputs()).result.scores.items()}


def _close(measured: dict, recorded: dict) -> None:
    for name in ("induction", "previous_token", "duplicate_token"):
        assert torch.allclose(torch.tensor(measured[name]), torch.tensor(recorded[name]), atol=0.01), name


def test_checkpoint_layout():
    steps = sorted(int(p.name) for p in (FOLDER / "checkpoints").iterdir() if p.is_dir())
    assert 35 <= len(steps) <= 45 and steps[0] == 0 and [r["step"] for r in TRAJECTORY] == steps
    with safe_open(FOLDER / "model.safetensors", "pt") as top:
        names = set(top.keys())
    for step in steps:
        with safe_open(FOLDER / "checkpoints" / str(step) / "model.safetensors", "pt") as f:
            assert set(f.keys()) == names
            assert all(f.get_tensor(k).dtype == torch.float16 for k in f.keys())


@pytest.mark.slow
def test_final_weights_match_the_card():
    metrics = json.loads((FOLDER / "metrics.json").read_text())
    scores = _scores(FOLDER.parent, FOLDER.name)
    _close(scores, metrics["final"]["scores"])
    assert max(map(max, scores["induction"])) >= 0.8 and max(map(max, scores["previous_token"])) >= 0.8


@pytest.mark.slow
@pytest.mark.parametrize("step", [TRAJECTORY[0]["step"], next(r["step"] for r in TRAJECTORY if r["step"] >= 3000)])
def test_checkpoints_match_the_trajectory(tmp_path, step):
    folder = tmp_path / f"step-{step}"
    folder.mkdir()
    for f in FOLDER.iterdir():
        if f.is_file() and f.name != "model.safetensors":
            (folder / f.name).symlink_to(f)
    (folder / "model.safetensors").symlink_to(FOLDER / "checkpoints" / str(step) / "model.safetensors")
    _close(_scores(tmp_path, folder.name), next(r for r in TRAJECTORY if r["step"] == step)["scores"])
