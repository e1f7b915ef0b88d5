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


@pytest.mark.slow
def test_data_attribution_on_the_regenerated_training_rows():
    """On the shipped model: the rows are the script's own batches, the head's score at each checkpoint is the
    trajectory's, every row's token shares sum to its influence, and the ranking and kinds add up."""
    from loupe.analyses.data_attribution import DataAttributionParams, data_attribution
    from models.train_induction_scratch import row_kinds

    model = ModelStore(Settings()).get("induction-scratch")
    assert "training_data" in model.entry.capabilities
    params = DataAttributionParams(n_steps=2, n_checkpoints=3, seq_len=50, batch=10, top_k=3)
    with model.lock:
        result = data_attribution(model, params, Inputs()).result
    recorded = {r["step"]: r["scores"]["induction"][1][1] for r in TRAJECTORY}
    assert result.until_step == 2925 and result.checkpoints[0] == 0 and max(result.checkpoints) < 2925
    for step, score in zip(result.checkpoints, result.scores):
        assert score == pytest.approx(recorded[step], abs=0.002), step
    influences = [e[3] for e in result.examples]
    assert influences == sorted(influences, reverse=True) and len(influences) == 2 * len(row_kinds())
    assert {k.kind: k.count for k in result.by_kind} == {"english": 4, "repeat": 12}
    for example in result.top + result.bottom:
        assert sum(example.contributions) == pytest.approx(example.influence, rel=1e-4, abs=1e-12)
        assert len(example.tokens) == len(example.contributions) == 128 and example.contributions[0] == 0
    assert result.top[0].influence == influences[0] and result.bottom[0].influence == influences[-1]


@pytest.mark.parametrize("params, says", [({"until_step": 6001}, "trained for 6000 steps"), ({"layer": 2}, "no L2H1"),
                                          ({"head": 4}, "no L1H4"), ({"seq_len": 64}, "must fit")])  # fmt: skip
def test_data_attribution_refuses_what_the_model_does_not_have(params, says):
    from loupe.analyses.data_attribution import DataAttributionParams, data_attribution
    from loupe.errors import InvalidInput

    model = ModelStore(Settings()).get("induction-scratch")
    with pytest.raises(InvalidInput, match=says):
        data_attribution(model, DataAttributionParams(**params), Inputs())
