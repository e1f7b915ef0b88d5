"""head_ablation against an independent computation: the Hugging Face model itself, each head's
slice of the attention output projection's input zeroed by a plain torch pre-hook."""

import pytest
import torch
from transformers import AutoModelForCausalLM

from loupe.analyses import Inputs
from loupe.analyses.head_ablation import HeadAblationParams, head_ablation
from loupe.config import Settings
from loupe.loops import LoopSpec
from loupe.model_store import ModelStore

from ..tiny_models import build_tiny_llama

TEXT = "When Mary and John went to the store, John gave a drink to Mary."


def _hf_delta(path, token_ids: list[int], out_proj: str) -> torch.Tensor:
    """[layer, head] loss rise with head h's z zeroed, from HF alone (no Loupe, no TransformerLens)."""
    hf = AutoModelForCausalLM.from_pretrained(path, attn_implementation="eager").eval()
    tokens = torch.tensor([token_ids])
    n_heads = hf.config.num_attention_heads
    d_head = hf.config.hidden_size // n_heads
    blocks = hf.transformer.h if hasattr(hf, "transformer") else hf.model.layers
    with torch.no_grad():
        clean = float(hf(tokens, labels=tokens).loss)
        delta = torch.zeros(len(blocks), n_heads)
        for layer, block in enumerate(blocks):
            projection = block.attn.c_proj if out_proj == "c_proj" else block.self_attn.o_proj
            for head in range(n_heads):

                def zero(module, args, head=head):
                    z = args[0].clone()  # [batch, pos, head * d_head]: heads side by side
                    z[..., head * d_head : (head + 1) * d_head] = 0
                    return (z,)

                handle = projection.register_forward_pre_hook(zero)
                delta[layer, head] = float(hf(tokens, labels=tokens).loss) - clean
                handle.remove()
    return delta


def test_equals_hugging_face_with_the_head_zeroed_gpt2(tiny_model, model_dir):
    result = head_ablation(tiny_model, HeadAblationParams(), Inputs(text=TEXT)).result
    assert result.n_iterations == 1 and result.n_layers == 2 and result.n_heads == 4
    expected = _hf_delta(model_dir / "gpt2tiny", result.token_ids, "c_proj")
    got = torch.tensor(result.delta_loss[0])
    assert torch.allclose(got, expected, atol=2e-5), (got, expected)
    assert got.abs().max() > 1e-3  # heads do matter: the check is not of zeros


def test_equals_hugging_face_on_grouped_query_llama(tmp_path):
    build_tiny_llama(tmp_path / "llamatiny")
    model = ModelStore(Settings(model_dirs=[tmp_path], zoo_dir=tmp_path / "zoo")).get("local/llamatiny")
    result = head_ablation(model, HeadAblationParams(), Inputs(text=TEXT)).result
    expected = _hf_delta(tmp_path / "llamatiny", result.token_ids, "o_proj")
    assert torch.allclose(torch.tensor(result.delta_loss[0]), expected, atol=2e-5)


def test_a_retrofit_loop_ablates_each_iteration_on_its_own(tiny_model):
    """Layers 0..1 run twice: zeroing a head at iteration 0 or at iteration 1 are different
    interventions, and a batch of ablations equals running each one alone."""
    params = HeadAblationParams(loop=LoopSpec(start=0, end=1, times=2))
    result = head_ablation(tiny_model, params, Inputs(text=TEXT)).result
    assert result.n_iterations == 2
    delta = torch.tensor(result.delta_loss)  # [iteration, layer, head]
    assert not torch.allclose(delta[0], delta[1])


@pytest.mark.parametrize("batch", [1, 3])
def test_batching_does_not_change_the_numbers(tiny_model, monkeypatch, batch):
    from loupe.analyses import head_ablation as module

    reference = head_ablation(tiny_model, HeadAblationParams(), Inputs(text=TEXT)).result.delta_loss
    monkeypatch.setattr(module, "MAX_BATCH", batch)
    again = head_ablation(tiny_model, HeadAblationParams(), Inputs(text=TEXT)).result.delta_loss
    assert torch.allclose(torch.tensor(again), torch.tensor(reference), atol=1e-5)
