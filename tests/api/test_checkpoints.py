"""The checkpoint axis (`<model>@<step>`) and `emergence`, through the API on a real temp SQLite: a
checkpoint is its weights loaded directly, its own cache key; emergence is head_scores at every
checkpoint, and its losses are plain torch on the HF model's logits."""

import shutil

import pytest
import torch

from loupe.analyses.head_metrics import CORPUS
from loupe.analyses.scores import repeated_random_tokens
from loupe.config import Settings
from loupe.model_store import ModelStore

from ..conftest import TINY
from ..tiny_models import build_tiny_checkpointed

MODEL = "local/gpt2ckpt"
STEPS = [0, 100, 1000]
TEXT = "When Mary and John went to the store, John gave a drink to Mary."
EMERGENCE = {"seq_len": 8, "batch": 3, "seed": 1, "n_texts": 3, "icl_early": 4, "icl_late": 40}


@pytest.fixture(scope="module")
def checkpoint_dirs(tmp_path_factory):
    """(the model dir with `gpt2ckpt` and its checkpoints, a dir with `ckpt100`: checkpoint 100's
    weights (fp16) saved beside the same config and tokenizer as a model of its own)."""
    root, alone = tmp_path_factory.mktemp("checkpointed"), tmp_path_factory.mktemp("standalone")
    folder = build_tiny_checkpointed(root / "gpt2ckpt", steps=STEPS, half=(100,))
    (alone / "ckpt100").mkdir()
    for path in folder.iterdir():
        if path.is_file() and path.name != "model.safetensors":
            shutil.copy(path, alone / "ckpt100" / path.name)
    shutil.copy(folder / "checkpoints" / "100" / "model.safetensors", alone / "ckpt100" / "model.safetensors")
    return root, alone


@pytest.fixture
def client(client_over, checkpoint_dirs, model_dir):
    return client_over(checkpoint_dirs[0], checkpoint_dirs[1], model_dir)


def _done(client, body: dict) -> dict:
    response = client.post("/api/analyses", json=body)
    assert response.status_code in (200, 201), response.text
    assert response.json()["status"] == "done", response.json()
    return response.json()


def _error(response, status: int, code: str) -> str:
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error", "code", "status"} and body["status"] == status and body["code"] == code
    return body["error"]


def test_models_list_checkpoints_not_as_models(client):
    models = {m["id"]: m for m in client.get("/api/models").json()}
    assert models[MODEL]["checkpoints"] == STEPS and "checkpoints" in models[MODEL]["capabilities"]
    assert models[TINY]["checkpoints"] is None and "checkpoints" not in models[TINY]["capabilities"]
    assert not [m for m in models if "@" in m]


def test_a_checkpoint_is_its_weights_loaded_directly(checkpoint_dirs, tmp_path):
    store = ModelStore(Settings(model_dirs=list(checkpoint_dirs), zoo_dir=tmp_path / "zoo"))
    at_100, alone, final = store.get(f"{MODEL}@100"), store.get("local/ckpt100"), store.get(MODEL, keep=False)
    tokens = at_100.token_ids(TEXT)
    with torch.no_grad():
        logits = at_100.bridge(tokens, return_type="logits")
        assert torch.equal(logits, alone.bridge(tokens, return_type="logits"))  # exact: the same load
        assert not torch.allclose(logits, final.bridge(tokens, return_type="logits"))
    assert next(at_100.bridge.parameters()).dtype == torch.float32  # fp16 weights cast to the model's dtype
    assert len({store.revision(MODEL), store.revision(f"{MODEL}@0"), store.revision(f"{MODEL}@100")}) == 3
    assert list(store._loaded) == [f"{MODEL}@100", "local/ckpt100"]  # keep=False kept nothing


def test_the_same_analysis_at_two_checkpoints(client):
    body = {"analysis": "head_scores", "params": {"seq_len": 8, "batch": 2}}
    at_0, at_1000 = (_done(client, {**body, "model": f"{MODEL}@{step}"}) for step in (0, 1000))
    assert at_0["id"] != at_1000["id"] and at_0["model"] == f"{MODEL}@0"
    assert at_0["result"]["scores"] != at_1000["result"]["scores"]
    at_100, alone = _done(client, {**body, "model": f"{MODEL}@100"}), _done(client, {**body, "model": "local/ckpt100"})
    assert at_100["result"] == alone["result"] and at_100["id"] != alone["id"]
    attention = _done(client, {"analysis": "attention", "model": f"{MODEL}@100", "text": TEXT, "params": {}})
    assert client.get(f"/api/analyses/{attention['id']}").json()["model"] == f"{MODEL}@100"


@pytest.mark.parametrize(
    "model, says",
    [(f"{MODEL}@7", "0, 100, 1000"), (f"{MODEL}@abc", "integer"), (f"{MODEL}@007", "integer"), (f"{TINY}@5", "none")],
)
def test_an_unknown_checkpoint_is_refused(client, model, says):
    response = client.post("/api/analyses", json={"analysis": "attention", "model": model, "text": TEXT, "params": {}})
    assert says in _error(response, 404, "unknown_checkpoint")


@pytest.mark.parametrize("model, code", [(f"{MODEL}@100", "checkpoint_of"), (TINY, "no_checkpoints")])
def test_emergence_needs_final_weights_with_checkpoints(client, model, code):
    response = client.post("/api/analyses", json={"analysis": "emergence", "model": model, "params": EMERGENCE})
    _error(response, 422, code)


@pytest.mark.parametrize("model, code", [(MODEL, "no_training_data"), (TINY, "no_checkpoints")])
def test_data_attribution_needs_training_data_loupe_can_regenerate(client, model, code):
    """Checkpoints alone are not enough: only a zoo model whose loupe.json names its training script."""
    response = client.post("/api/analyses", json={"analysis": "data_attribution", "model": model, "params": {}})
    _error(response, 422, code)
    assert "training_data" not in {m["id"]: m for m in client.get("/api/models").json()}[MODEL]["capabilities"]


def _hf_model(folder, weights):
    """The HF model of `folder`'s config with `weights` (a safetensors file), in float32, eager attention."""
    from safetensors.torch import load_file
    from transformers import GPT2LMHeadModel

    model = GPT2LMHeadModel.from_pretrained(folder, attn_implementation="eager").eval()
    state = {name: tensor.float() for name, tensor in load_file(weights).items()}
    model.load_state_dict(state, strict=False)  # lm_head.weight is tied to wte
    model.tie_weights()
    return model


def _losses(model, tokens: torch.Tensor) -> torch.Tensor:
    """[batch, pos - 1]: -log p(token p | tokens before p), from the HF logits."""
    with torch.no_grad():
        logits = model(tokens).logits.double()
    return torch.nn.functional.cross_entropy(logits[:, :-1].transpose(1, 2), tokens[:, 1:], reduction="none")


def test_emergence_is_head_scores_and_losses_at_every_checkpoint(client, checkpoint_dirs):
    from transformers import AutoTokenizer

    result = _done(client, {"analysis": "emergence", "model": MODEL, "params": EMERGENCE})["result"]
    points = [f"{MODEL}@{step}" for step in STEPS] + [MODEL]
    assert result["points"] == points and result["steps"] == [*STEPS, None]
    assert result["train_loss"] == [6.0, 5.0, 4.0, None]  # trajectory.json
    head_params = {key: EMERGENCE[key] for key in ("seq_len", "batch", "seed")}
    induction = []
    for i, point in enumerate(points):
        head = _done(client, {"analysis": "head_scores", "model": point, "params": head_params})
        assert result["head_scores_ids"][i] == head["id"]
        assert set(result["scores"]) == {"induction", "previous_token", "duplicate_token", "bos"}
        for name, values in head["result"]["scores"].items():
            assert result["scores"][name][i] == values
        induction.append(max(v for layer in head["result"]["scores"]["induction"][0] for v in layer))
    rises = [induction[i] - induction[i - 1] for i in range(1, len(induction))]
    assert result["phase_change"]["index"] == 1 + rises.index(max(rises))
    assert len(set(map(str, result["scores"]["induction"]))) == len(points)  # the checkpoints differ

    # the losses, in plain torch from HF logits, on independently made inputs
    folder = checkpoint_dirs[0] / "gpt2ckpt"
    tokenizer = AutoTokenizer.from_pretrained(folder)
    S, late, early = EMERGENCE["seq_len"], EMERGENCE["icl_late"], EMERGENCE["icl_early"]
    vocab = torch.tensor([i for i in range(len(tokenizer)) if i not in tokenizer.all_special_ids])
    repeated = repeated_random_tokens(vocab, EMERGENCE["batch"], S, tokenizer.bos_token_id, EMERGENCE["seed"])
    stream = tokenizer(CORPUS.read_text()[:20000], add_special_tokens=False)["input_ids"][: EMERGENCE["n_texts"] * late]
    windows = torch.cat([torch.zeros(EMERGENCE["n_texts"], 1, dtype=torch.long), torch.tensor(stream).view(-1, late)], 1)
    for i, step in enumerate([*STEPS, None]):
        weights = folder / "model.safetensors" if step is None else folder / "checkpoints" / str(step) / "model.safetensors"
        model = _hf_model(folder, weights)
        on_repeats = _losses(model, repeated)  # index p-1: token p
        assert result["repeated_first"][i] == pytest.approx(float(on_repeats[:, 1:S].mean()), abs=1e-5)
        assert result["repeated_second"][i] == pytest.approx(float(on_repeats[:, S + 1 :].mean()), abs=1e-5)
        on_text = _losses(model, windows)
        assert result["icl_score"][i] == pytest.approx(float((on_text[:, late - 1] - on_text[:, early - 1]).mean()), abs=1e-5)
