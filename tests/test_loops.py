"""Per-iteration capture: hook firings = iterations; iteration k equals a manual k-step forward;
retrofit loops of a plain model equal an unrolled HF forward; early exit equals the model's output."""

import pytest
import torch
from transformers import AutoModelForCausalLM

from loupe.errors import InvalidInput
from loupe.looped_model import load_looped
from loupe.capture import capture_patterns
from loupe.loops import (
    LoopSpec,
    capture_residuals,
    looping,
    readout,
    run_recording,
    stack_iterations,
)

SUM = "12+34=46?"


def _hf_last_step_attention(hf_model, tokens: torch.Tensor, steps: int) -> torch.Tensor:
    """[layer, head, query_pos, key_pos]: eager attention weights of the final step of a plain HF
    forward run with `steps` loop steps (no bridge, no TransformerLens)."""
    weights: dict[int, torch.Tensor] = {}
    handles = [
        layer.self_attn.register_forward_hook(lambda m, i, out, index=index: weights.__setitem__(index, out[1][0]))
        for index, layer in enumerate(hf_model.model.layers)
    ]
    hf_model.model.total_ut_steps = steps
    try:
        with torch.no_grad():
            hf_model(tokens)
    finally:
        for handle in handles:
            handle.remove()
    return torch.stack([weights[i] for i in range(len(weights))])


def test_hooks_fire_once_per_iteration(looped_model, tiny_model):
    names = ["blocks.0.attn.hook_pattern", "blocks.1.hook_resid_post", "blocks.1.mlp.hook_out"]
    tokens = looped_model.tokenize(SUM, 64)
    with looped_model.lock:
        _, firings = run_recording(looped_model, tokens, names)
        assert {name: len(f) for name, f in firings.items()} == dict.fromkeys(names, 3)  # n_iterations = 3
        with looping(looped_model, LoopSpec(times=6)):  # runnable beyond its trained count
            _, firings = run_recording(looped_model, tokens, names)
        assert {name: len(f) for name, f in firings.items()} == dict.fromkeys(names, 6)
        _, firings = run_recording(looped_model, tokens, names)
        assert len(firings[names[0]]) == 3  # the loop count is restored
    with tiny_model.lock:
        _, firings = run_recording(tiny_model, tiny_model.tokenize("a b c", 64), ["blocks.0.attn.hook_pattern"])
    assert len(firings["blocks.0.attn.hook_pattern"]) == 1  # a plain model has one iteration


def test_iteration_k_pattern_equals_a_manual_k_step_forward(looped_model):
    hf_model, _ = load_looped(looped_model.entry.location)
    tokens = looped_model.tokenize(SUM, 64)  # [1, pos]
    with looped_model.lock:
        _, pattern = capture_patterns(looped_model, tokens, LoopSpec(times=4))
    assert pattern.shape == (4, 2, 1, 2, tokens.shape[1], tokens.shape[1])  # [iteration, layer, batch, head, q, k]
    for k in range(1, 5):
        manual = _hf_last_step_attention(hf_model, tokens, steps=k)  # [layer, head, q, k]
        assert (pattern[k - 1, :, 0] - manual).abs().max().item() < 1e-5, f"iteration {k}"
    assert (pattern[0] - pattern[3]).abs().max().item() > 1e-3  # iterations really differ


def test_early_exit_of_iteration_k_equals_the_k_step_model(looped_model):
    hf_model, _ = load_looped(looped_model.entry.location)
    tokens = looped_model.tokenize(SUM, 64)
    positions = torch.arange(tokens.shape[1])
    with looped_model.lock:
        logits, resid = capture_residuals(looped_model, tokens, positions)
    assert resid.shape == (3, 2, 1, tokens.shape[1], 32)  # [iteration, layer, batch, pos, d_model]
    exits = readout(looped_model, resid[:, -1])  # [iteration, batch, pos, d_vocab]
    assert (exits[-1] - logits).abs().max().item() < 1e-4  # the last exit is the model's own output
    with torch.no_grad():
        manual = hf_model.exit_logits(tokens)  # [iteration, batch, pos, d_vocab], no bridge
        for k in (1, 2):
            hf_model.model.total_ut_steps = k
            assert (hf_model(tokens).logits - exits[k - 1]).abs().max().item() < 1e-4
    assert (manual - exits).abs().max().item() < 1e-4


def test_retrofit_loop_equals_an_unrolled_hf_forward(tiny_model):
    hf = AutoModelForCausalLM.from_pretrained(tiny_model.entry.location, attn_implementation="eager").eval()
    h = hf.transformer.h
    hf.transformer.h = torch.nn.ModuleList([h[0], h[1], h[1], h[1]])  # layer 1 looped 3 times
    tokens = tiny_model.tokenize("The cat sat on the mat.", 64)
    with torch.no_grad():
        out = hf(tokens, output_attentions=True, use_cache=False)
    unrolled = torch.stack(out.attentions)[:, 0]  # [4, head, q, k]
    with tiny_model.lock:
        logits, pattern = capture_patterns(tiny_model, tokens, LoopSpec(start=1, end=1, times=3))
    assert pattern.shape[:2] == (3, 2)  # [iteration, layer]
    assert (logits - out.logits).abs().max().item() < 1e-4
    for iteration in range(3):
        assert (pattern[iteration, 0, 0] - unrolled[0]).abs().max().item() < 1e-5  # outside the loop: repeated
        assert (pattern[iteration, 1, 0] - unrolled[1 + iteration]).abs().max().item() < 1e-5
    with tiny_model.lock:  # the blocks are restored afterwards
        plain_logits, plain = capture_patterns(tiny_model, tokens)
    assert plain.shape[0] == 1 and "forward" not in vars(tiny_model.bridge.blocks[1])
    assert (plain_logits - logits).abs().max().item() > 1e-4


def test_retrofit_loop_over_several_layers(tiny_model):
    hf = AutoModelForCausalLM.from_pretrained(tiny_model.entry.location, attn_implementation="eager").eval()
    h = hf.transformer.h
    hf.transformer.h = torch.nn.ModuleList([h[0], h[1], h[0], h[1]])
    tokens = tiny_model.tokenize("one two three", 64)
    with torch.no_grad():
        expected = hf(tokens, use_cache=False).logits
    with tiny_model.lock:
        logits, pattern = capture_patterns(tiny_model, tokens, LoopSpec(start=0, end=1, times=2))
    assert pattern.shape[:2] == (2, 2) and (logits - expected).abs().max().item() < 1e-4


def test_bad_loops_are_rejected(looped_model, tiny_model):
    tokens = tiny_model.tokenize("x", 64)
    with pytest.raises(InvalidInput, match="natively"), looped_model.lock:
        capture_patterns(looped_model, looped_model.tokenize("1", 64), LoopSpec(start=0, end=1, times=2))
    for spec in (LoopSpec(start=1, end=0, times=2), LoopSpec(start=0, end=2, times=2)):
        with pytest.raises(InvalidInput), tiny_model.lock:
            capture_patterns(tiny_model, tokens, spec)


def test_stack_iterations_repeats_single_firings_and_rejects_uneven():
    a, b = torch.zeros(2), torch.ones(2)
    stacked = stack_iterations({"x": [a], "y": [a, b, b]}, ["x", "y"])
    assert stacked.shape == (3, 2, 2) and stacked[:, 0].eq(0).all() and stacked[1:, 1].eq(1).all()
    with pytest.raises(RuntimeError, match="unevenly"):
        stack_iterations({"x": [a, a], "y": [a, b, b]}, ["x", "y"])
    with pytest.raises(RuntimeError):
        stack_iterations({"x": []}, ["x"])
