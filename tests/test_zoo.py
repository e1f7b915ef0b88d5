"""The shipped models load through TransformerBridge and show what their cards promise."""

import pytest

from loupe.analyses.head_scores import HeadScoreParams, head_scores
from loupe.analyses.registry import Inputs
from loupe.config import Settings
from loupe.model_store import ModelStore, discover


@pytest.fixture(scope="module")
def zoo():
    return ModelStore(Settings())


def test_zoo_lists_the_shipped_models(zoo):
    entries = discover(Settings())
    assert {"induction-2l", "looped-add", "looped-lag", "retrieval-2l"} <= set(entries)
    assert entries["looped-add"].n_iterations == 4 and entries["induction-2l"].n_iterations == 1
    assert entries["looped-lag"].n_iterations == 4 and "generating_lm" not in entries["looped-lag"].capabilities
    assert Settings().default_model in entries


def test_induction_model_has_induction_and_previous_token_heads(zoo):
    model = zoo.get("induction-2l")
    with model.lock:
        scores = head_scores(model, HeadScoreParams(), Inputs()).result.scores  # [iteration][layer][head]
    best = {name: max(v for layer in values[0] for v in layer) for name, values in scores.items()}
    assert best["induction"] >= 0.8 and best["previous_token"] >= 0.8
