"""`logit_lens`: per iteration and layer, the early-exit top tokens; the last one is the model's own output."""

import pytest
import torch

from loupe.analyses.logit_lens import LogitLensParams, logit_lens
from loupe.analyses.registry import Inputs
from loupe.errors import InvalidInput
from loupe.looped_model import load_looped


def _run(model, text, **params):
    with model.lock:
        return logit_lens(model, LogitLensParams(**params), Inputs(text=text)).result


def test_each_iteration_reads_out_the_k_step_model(looped_model):
    text = "12+34="
    result = _run(looped_model, text, top_k=3)
    assert (result.n_iterations, result.n_layers) == (3, 2)
    assert result.position == len(result.tokens) - 1 and result.next_token is None
    hf, tokenizer = load_looped(looped_model.entry.location)
    tokens = torch.tensor([[0, *tokenizer.convert_tokens_to_ids(list(text))]])
    with torch.no_grad():
        exits = hf.exit_logits(tokens)[:, 0, -1].softmax(-1)  # [iteration, d_vocab]
    for iteration in range(3):
        top = exits[iteration].topk(3)
        assert result.top_token_ids[iteration][-1] == top.indices.tolist()  # the last layer is the early exit
        assert result.top_probs[iteration][-1] == pytest.approx(top.values.tolist(), abs=1e-4)
    assert result.top_tokens[0][-1][0] == tokenizer.decode([result.top_token_ids[0][-1][0]])


def test_next_token_probability_and_rank(tiny_model):
    result = _run(tiny_model, "The cat sat on the mat", position=2, top_k=20)
    assert result.position == 2 and result.next_token == result.tokens[3]
    for iteration in range(result.n_iterations):
        for layer in range(result.n_layers):
            rank = result.next_token_rank[iteration][layer]
            if rank < 20:
                assert result.top_token_ids[iteration][layer][rank] == result.token_ids[3]
                assert result.top_probs[iteration][layer][rank] == pytest.approx(result.next_token_prob[iteration][layer], abs=1e-4)
            else:
                assert result.next_token_prob[iteration][layer] <= result.top_probs[iteration][layer][-1]


def test_retrofit_loop_and_bad_position(tiny_model, looped_model):
    result = _run(tiny_model, "a b c", loop={"start": 0, "end": 1, "times": 3})
    assert result.n_iterations == 3 and result.loop_layers == [0, 1]
    assert result.top_token_ids[0] != result.top_token_ids[2]  # more passes, a different readout
    with pytest.raises(InvalidInput, match="position"):
        _run(tiny_model, "a b c", position=40)
    with pytest.raises(InvalidInput, match="natively"):
        _run(looped_model, "1+1=", loop={"start": 0, "times": 2})


def _own_top5(hf, token_ids: list[int]) -> torch.return_types.topk:
    """The model's own next-token distribution's top 5 at every position, from its HF forward alone."""
    with torch.no_grad():
        return hf(torch.tensor([token_ids])).logits[0].softmax(-1).topk(5)  # each [pos, 5]


def _check_grid(result, own):
    grid_ids = torch.tensor(result.grid_ids)  # [iteration, layer, pos, k]
    n_pos = len(result.tokens)
    assert grid_ids.shape == (result.n_iterations, result.n_layers, n_pos, 5)
    assert grid_ids[-1, -1].tolist() == own.indices.tolist()  # the last layer at the last iteration is the model's output
    assert torch.allclose(torch.tensor(result.grid_probs)[-1, -1], own.values, atol=1e-4)
    assert set(result.grid_tokens) == set(grid_ids.flatten().tolist())
    # the single-position fields are the grid's cell at `position`
    assert result.top_token_ids[-1][-1] == grid_ids[-1, -1, result.position].tolist()


def test_every_position_ends_in_the_models_own_prediction(tiny_model, model_dir, tmp_path, looped_model):
    from transformers import AutoModelForCausalLM

    from ..tiny_models import build_tiny_llama

    result = _run(tiny_model, "The cat sat on the mat. <b>The</b> cat", all_positions=True)
    _check_grid(result, _own_top5(AutoModelForCausalLM.from_pretrained(model_dir / "gpt2tiny").eval(), result.token_ids))
    assert result.next_token is None and torch.tensor(result.grid_ids)[0, 0].unique().numel() > 1

    from loupe.config import Settings
    from loupe.model_store import ModelStore

    build_tiny_llama(tmp_path / "llamatiny")
    llama = ModelStore(Settings(model_dirs=[tmp_path], zoo_dir=tmp_path / "zoo")).get("local/llamatiny")
    result = _run(llama, "When Mary and John went to the store", all_positions=True, position=3)
    _check_grid(result, _own_top5(AutoModelForCausalLM.from_pretrained(tmp_path / "llamatiny").eval(), result.token_ids))

    result = _run(looped_model, "12+34=", all_positions=True)
    assert result.n_iterations == 3
    hf, _ = load_looped(looped_model.entry.location)
    _check_grid(result, _own_top5(hf, result.token_ids))
    # each earlier iteration's exit layer is the k-step model's output at every position
    with torch.no_grad():
        exits = hf.exit_logits(torch.tensor([result.token_ids]))[:, 0].softmax(-1).topk(5).indices  # [iteration, pos, 5]
    assert torch.tensor(result.grid_ids)[:, -1].tolist() == exits.tolist()


def test_every_position_reads_in_chunks_the_same(tiny_model, monkeypatch):
    from loupe.analyses import logit_lens as module

    whole = _run(tiny_model, "a b c d e f", all_positions=True)
    monkeypatch.setattr(module, "LOGIT_BUDGET", 2 * 300)  # two positions of the 300-token vocabulary at a time
    chunked = _run(tiny_model, "a b c d e f", all_positions=True)
    assert chunked.grid_ids == whole.grid_ids and chunked.grid_probs == whole.grid_probs
