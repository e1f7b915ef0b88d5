"""The shipped `looped-lag`: Loupe's probes, re-run on its held-out rows through ModelStore, give the numbers
of its card, and show the gap the card claims: the probe at `?` ahead of the model's own verdict."""

import json

import pytest

from loupe.analyses.datasets import Row
from loupe.analyses.probes import ProbeParams, probes
from loupe.analyses.registry import Inputs
from loupe.config import REPO_ROOT, Settings
from loupe.model_store import ModelStore

SHIPPED = REPO_ROOT / "models" / "looped-lag"
TOLERANCE = 0.01  # 10 of 1000 rows: float noise across machines, never a different model


@pytest.fixture(scope="module")
def metrics() -> dict:
    return json.loads((SHIPPED / "metrics.json").read_text())


@pytest.fixture(scope="module")
def rows() -> list[Row]:
    return [Row(**json.loads(line)) for line in (SHIPPED / "held_out.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def measured(rows) -> dict:
    """Loupe's `probes` on the shipped folder, as the card's Loupe columns were measured."""
    model = ModelStore(Settings(zoo_dir=SHIPPED.parent, model_dirs=[], hub_models=[])).get("looped-lag")
    params = ProbeParams(dataset="rows", rows=rows, label_tokens={"Y": "Y", "N": "N"}, folds=5, seed=0, loop={"times": 8})
    with model.lock:
        return probes(model, params, Inputs(progress=lambda stage, fraction: None)).result.model_dump()


def test_held_out_rows_are_every_held_out_pair_right_and_wrong(rows):
    pairs = {}
    for row in rows:
        a, b, shown = int(row.text[0:2]), int(row.text[3:5]), int(row.text[6:9][::-1])  # `ab+cd=xyz?`, sum reversed
        assert (7 * a + 13 * b) % 20 == 0  # a pair training never saw
        assert row.label == ("Y" if shown == a + b else "N")
        pairs.setdefault((a, b), []).append(row.label)
    assert len(pairs) == 500 and all(sorted(labels) == ["N", "Y"] for labels in pairs.values())


def test_loupe_probes_reproduce_the_card(measured, metrics):
    card = metrics["loupe_probes"]
    assert measured["n_iterations"] == 8 and measured["n_rows"] == 1000
    for key in ("self_verification_accuracy", "task_accuracy"):
        assert measured[key] == pytest.approx(card[key], abs=TOLERANCE), key
    for got, want in zip(measured["probe_accuracy"], card["probe_accuracy"], strict=True):  # [iteration][layer]
        assert got == pytest.approx(want, abs=TOLERANCE)


def test_card_states_the_metrics(metrics):
    card = (SHIPPED / "README.md").read_text()
    probe = metrics["loupe_probes"]
    for i in range(8):
        accuracy, std = probe["probe_accuracy"][i][-1], probe["probe_accuracy_std"][i][-1]
        assert f"| {probe['self_verification_accuracy'][i]:.3f} | {accuracy:.3f} ± {std:.3f} |" in card


def test_probe_leads_the_verdict_where_the_card_says(measured, metrics):
    """Iterations from 1: the probe ahead at 2 and 3, level with the verdict at the trained K = 4, far ahead
    at 6..8 where the verdict decays; the probe above what it reads from an untrained model."""
    probe = [row[-1] for row in measured["probe_accuracy"]]  # the last layer
    verdict = measured["self_verification_accuracy"]
    gap = [p - v for p, v in zip(probe, verdict)]
    assert gap[1] >= 0.1 and gap[2] >= 0.05
    assert verdict[3] >= 0.95 and abs(gap[3]) <= 0.03
    assert min(gap[5:]) >= 0.2 and min(probe[2:]) >= 0.9
    floor = metrics["loupe_probes_untrained"]["probe_last_layer"]
    assert probe[1] - floor[1] >= 0.1 and max(floor) < 0.65
