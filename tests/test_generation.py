"""KV-cache generation with capture on a real tiny GPT-2: the sums equal a full forward pass."""

import pytest
import torch
from transformers import AutoModelForCausalLM

from loupe.errors import InvalidInput, TooLong
from loupe.generation import generate_with_attention, span_sums
from loupe.capture import capture_patterns

PROMPT = "The cat sat on the mat. The dog sat on the"


def _generate(model, text=PROMPT, max_new_tokens=12, **kwargs):
    with model.lock:
        return generate_with_attention(model, model.tokenize(text, 1024), max_new_tokens, **kwargs)


def _full_forward_sums(model, generation):
    """Span sums from one forward pass (no KV cache) over prompt + generated tokens: the query
    rows P-1 .. P-2+new are the ones that predicted each generated token."""
    tokens = torch.cat([generation.prompt_ids, generation.new_ids]).unsqueeze(0)  # [1, pos]
    with model.lock:
        _, pattern = capture_patterns(model, tokens)  # [iteration, layer, 1, head, q, k]
    n_prompt, n_new = generation.n_prompt, len(generation.new_ids)
    rows = pattern[:, :, 0, :, n_prompt - 1 : n_prompt - 1 + n_new]  # [iteration, layer, head, new, k]
    return span_sums(rows, n_prompt).permute(3, 0, 1, 2, 4)  # [new, iteration, layer, head, 3]


@pytest.mark.parametrize("sampled", [False, True])
def test_captured_attention_equals_a_full_forward_pass(tiny_model, sampled):
    generation = _generate(tiny_model, temperature=1.0 if sampled else None, seed=3)
    assert len(generation.new_ids) == 12
    assert generation.bos.shape == (12, 1, 2, 4)  # [new, iteration, layer, head]
    full = _full_forward_sums(tiny_model, generation)
    captured = torch.stack([generation.bos, generation.prompt, generation.generated], dim=-1)
    assert (captured - full).abs().max().item() <= 1e-4
    # every query's attention sums to one over the three spans
    assert torch.allclose(captured.sum(-1), torch.ones_like(generation.bos), atol=1e-5)
    assert (generation.generated[0] == 0).all()  # the first new token sees no generated token
    assert (generation.generated[1:] > 0).all()


def test_looped_model_captures_every_iteration(looped_model):
    """A looped model recomputes the sequence each step (an HF cache would grow on every loop
    iteration); its per-iteration sums still equal a full forward pass."""
    generation = _generate(looped_model, text="12+34=", max_new_tokens=4)
    assert generation.bos.shape == (4, 3, 2, 2)  # [new, iteration, layer, head]
    full = _full_forward_sums(looped_model, generation)
    captured = torch.stack([generation.bos, generation.prompt, generation.generated], dim=-1)
    assert (captured - full).abs().max().item() <= 1e-4


def test_greedy_tokens_equal_hf_generate(tiny_model):
    generation = _generate(tiny_model, max_new_tokens=10)
    hf = AutoModelForCausalLM.from_pretrained(tiny_model.entry.location).eval()
    prompt = generation.prompt_ids.unsqueeze(0)
    with torch.no_grad():
        expected = hf.generate(prompt, max_new_tokens=10, min_new_tokens=10, do_sample=False, pad_token_id=0)
    assert generation.new_ids.tolist() == expected[0, prompt.shape[1] :].tolist()


def test_sampling_is_seeded(tiny_model):
    first = _generate(tiny_model, temperature=2.0, seed=1, max_new_tokens=16).new_ids
    again = _generate(tiny_model, temperature=2.0, seed=1, max_new_tokens=16).new_ids
    others = [_generate(tiny_model, temperature=2.0, seed=s, max_new_tokens=16).new_ids for s in (2, 3)]
    assert first.tolist() == again.tolist()
    assert any(other.tolist() != first.tolist() for other in others)


def test_stops_after_a_stop_token_and_removes_its_hooks(tiny_model):
    first = int(_generate(tiny_model, max_new_tokens=1).new_ids[0])
    generation = _generate(tiny_model, max_new_tokens=8, stop_ids=(first,))
    assert generation.new_ids.tolist() == [first] and generation.bos.shape[0] == 1
    for name in tiny_model.pattern_hook_names().values():
        assert not tiny_model.bridge.hook_dict[name].fwd_hooks


def test_too_long_and_bad_prompts_are_rejected(tiny_model):
    prompt = tiny_model.tokenize(PROMPT, 1024)
    with tiny_model.lock, pytest.raises(TooLong):
        generate_with_attention(tiny_model, prompt, tiny_model.n_ctx)
    with tiny_model.lock, pytest.raises(InvalidInput):
        generate_with_attention(tiny_model, prompt[:, :1], 4)  # BOS alone


def test_span_sums_on_a_known_row():
    row = torch.tensor([0.5, 0.1, 0.2, 0.15, 0.05])  # BOS, 2 prompt tokens, 2 generated
    assert span_sums(row, n_prompt=3).tolist() == pytest.approx([0.5, 0.3, 0.2])
