"""Attention capture in the model's own forward pass (capture.py): the same patterns as the
bridge's hook_pattern and as HF eager attention, loops included, and the bridge left intact."""

import pytest
import torch
from transformers import AutoModelForCausalLM

from loupe.capture import capture_patterns, recording_attention, runs_natively
from loupe.config import Settings
from loupe.loops import LoopSpec
from loupe.model_store import ModelStore

from .tiny_models import build_tiny_llama

TEXT = "When Mary and John went to the store, John gave a drink to Mary."


@pytest.fixture(scope="module")
def gqa_model(tmp_path_factory):
    """A tiny Llama with grouped-query attention (4 query heads, 2 key/value heads), loaded by Loupe."""
    root = tmp_path_factory.mktemp("gqa_dirs")
    build_tiny_llama(root / "llamatiny")
    return ModelStore(Settings(model_dirs=[root], zoo_dir=tmp_path_factory.mktemp("zoo"))).get("local/llamatiny")


def _both_paths(model, tokens, loop=None):
    with model.lock:
        native_logits, native = capture_patterns(model, tokens, loop, native=True)
        bridge_logits, bridge = capture_patterns(model, tokens, loop, native=False)
    return native_logits, native, bridge_logits, bridge


@pytest.mark.parametrize(
    "name, loop",
    [("tiny_model", None), ("tiny_model", LoopSpec(start=1, end=1, times=3)), ("looped_model", LoopSpec(times=4)), ("gqa_model", None)],
)
def test_native_capture_equals_the_bridge_hooks(request, name, loop):
    model = request.getfixturevalue(name)
    assert runs_natively(model)
    tokens = model.tokenize("12+34=46?" if name == "looped_model" else TEXT, 64)
    native_logits, native, bridge_logits, bridge = _both_paths(model, tokens, loop)
    assert native.shape == bridge.shape  # [iteration, layer, batch, head, q, k]
    assert (native - bridge).abs().max().item() < 1e-5
    assert (native_logits - bridge_logits).abs().max().item() < 1e-4


def test_grouped_query_attention_equals_hf_eager(gqa_model):
    hf = AutoModelForCausalLM.from_pretrained(gqa_model.entry.location, attn_implementation="eager").eval()
    tokens = gqa_model.tokenize(TEXT, 64)
    with torch.no_grad():
        expected = torch.stack(hf(tokens, output_attentions=True).attentions)  # [layer, batch, head, q, k]
    with gqa_model.lock:
        _, pattern = capture_patterns(gqa_model, tokens)
    assert pattern.shape == (1, *expected.shape) and pattern.shape[3] == 4  # every query head
    assert (pattern[0] - expected).abs().max().item() < 1e-5


def test_the_bridge_is_restored_after_recording_even_on_error(tiny_model):
    hf = tiny_model.bridge.original_model
    before = [(name, type(module)) for name, module in hf.named_modules()]
    tokens = tiny_model.tokenize(TEXT, 64)
    with tiny_model.lock:
        with torch.inference_mode():
            _, cache = tiny_model.bridge.run_with_cache(tokens, names_filter=list(tiny_model.pattern_hook_names().values()))
        with pytest.raises(RuntimeError, match="boom"), recording_attention(tiny_model, lambda *args: None) as recorder:
            recorder.forward(tokens)
            raise RuntimeError("boom")
        with torch.inference_mode():
            _, again = tiny_model.bridge.run_with_cache(tokens, names_filter=list(tiny_model.pattern_hook_names().values()))
    assert [(name, type(module)) for name, module in hf.named_modules()] == before
    assert hf.config._attn_implementation == "eager"
    for name in tiny_model.pattern_hook_names().values():  # the bridge's own hooks fire and agree as before
        assert torch.equal(cache[name], again[name])


def test_the_callback_sees_each_layer_once_per_iteration(looped_model):
    seen = []
    tokens = looped_model.tokenize("1+2=3?", 64)
    with looped_model.lock, recording_attention(looped_model, lambda i, layer, probs: seen.append((i, layer))) as recorder:
        logits, _ = recorder.forward(tokens)
    assert sorted(seen) == [(i, layer) for i in range(3) for layer in range(2)]
    assert logits.shape[:2] == (1, 1)  # only the last position's logits are computed


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_attention_function_equals_the_models_eager_one(tiny_model, dtype):
    """Float32: Loupe's own computation, equal to the model's eager attention within float error;
    half precision: the model's eager function itself (its softmax precision is the model's)."""
    from transformers.models.gpt2.modeling_gpt2 import eager_attention_forward

    from loupe.capture import _active, _Recording, capture_attention

    module = tiny_model.bridge.blocks[0].attn.original_component
    generator = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(2, 4, 9, 16, generator=generator).to(dtype) for _ in range(3))
    mask = torch.full((9, 9), torch.finfo(dtype).min, dtype=dtype).triu(1)[None, None]  # [1, 1, q, k]
    seen = []
    token = _active.set(_Recording({id(module): 0}, lambda i, layer, probs: seen.append(probs.clone()), [0]))
    try:
        with torch.no_grad():
            output, _ = capture_attention(module, q, k, v, mask, scaling=0.25)
    finally:
        _active.reset(token)
    with torch.no_grad():
        expected, weights = eager_attention_forward(module, q, k, v, mask, scaling=0.25)
    assert len(seen) == 1 and seen[0].dtype == torch.float32
    if dtype == torch.float32:
        assert (output - expected).abs().max().item() < 1e-5 and (seen[0] - weights).abs().max().item() < 1e-6
    else:
        assert torch.equal(output, expected) and torch.equal(seen[0], weights.float())
