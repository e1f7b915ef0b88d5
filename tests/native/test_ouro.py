"""Loupe's Ouro (architectures/ouro.py) against a plain-torch forward from the published equations
(ouro_reference.py), on tiny seeded folders saved as the hub lays Ouro out (auto_map included):
attention at every iteration on both capture paths, logits, per-step exits, the exit gate, the loop
count, generation, and loading through the model store without remote code."""

import json

import pytest
import torch
from safetensors.torch import load_file, save_file

from loupe import loops, model_store
from loupe.architectures import native, ouro
from loupe.capture import capture_patterns
from loupe.config import Settings
from loupe.loops import LoopSpec, capture_residuals, looping, readout
from loupe.model_store import LoadedModel, ModelStore, _entry_from_dir

from ..tiny_models import _tokenizer
from .ouro_reference import reference

TOL = 1e-4
N_ITERATIONS = 3


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    """A tiny random-init Ouro (2 layers, 4 heads over 2 kv heads, 3 steps) saved in the published layout."""
    return ouro.save_published(ouro.tiny(0, n_iterations=N_ITERATIONS), tmp_path_factory.mktemp("ouro") / "ourotiny", _tokenizer())


@pytest.fixture(scope="module")
def model(folder):
    """A LoadedModel as the model store makes it (the store itself: the last test)."""
    return LoadedModel(entry=_entry_from_dir("local/ourotiny", "local", folder), bridge=ouro.boot(folder), revision="test")


@pytest.fixture(scope="module")
def tokens():
    return torch.randint(0, 300, (2, 9), generator=torch.Generator().manual_seed(1))  # [batch, pos]


@pytest.fixture(scope="module")
def ref(folder, tokens):
    return reference(folder, tokens)


def per_iteration(a: torch.Tensor, b: torch.Tensor) -> list[float]:
    """Max |a - b| at each iteration (dim 0)."""
    return [float((x - y).abs().max()) for x, y in zip(a, b)]


def test_saved_folder_has_the_published_layout(folder):
    config = json.loads((folder / "config.json").read_text())
    assert config["model_type"] == "ouro" and config["architectures"] == ["OuroForCausalLM"]
    assert config["auto_map"]["AutoModelForCausalLM"] == "modeling_ouro.OuroForCausalLM"
    assert config["total_ut_steps"] == N_ITERATIONS and config["early_exit_threshold"] == 1.0
    per_layer = [
        "input_layernorm", "input_layernorm_2", "post_attention_layernorm", "post_attention_layernorm_2",
        "self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj",
        "mlp.gate_proj", "mlp.up_proj", "mlp.down_proj",
    ]  # fmt: skip
    names = {f"model.layers.{i}.{name}.weight" for i in range(2) for name in per_layer}
    names |= {"model.embed_tokens.weight", "model.norm.weight", "model.early_exit_gate.weight", "model.early_exit_gate.bias", "lm_head.weight"}
    assert set(load_file(folder / "model.safetensors")) == names


def test_facts_come_from_config_json(folder):
    facts = native("ouro").facts(json.loads((folder / "config.json").read_text()))
    assert (facts.n_layers, facts.n_heads, facts.n_iterations, facts.n_ctx) == (2, 4, N_ITERATIONS, 64)
    assert facts.exit_gate and not facts.draws_random
    published_defaults = ouro.facts({"model_type": "ouro"})  # what the published config class defaults to
    assert (published_defaults.n_iterations, published_defaults.n_layers) == (4, 32)


def test_loading_is_strict(folder, tmp_path):
    weights = load_file(folder / "model.safetensors")
    (tmp_path / "config.json").write_text((folder / "config.json").read_text())
    save_file({k: v for k, v in weights.items() if k != "model.norm.weight"}, tmp_path / "model.safetensors")
    with pytest.raises(RuntimeError, match="model.norm.weight"):
        ouro.load(tmp_path)
    save_file({**weights, "model.extra.weight": torch.zeros(1)}, tmp_path / "model.safetensors")
    with pytest.raises(RuntimeError, match="model.extra.weight"):
        ouro.load(tmp_path)


def test_sharded_checkpoint_loads(folder, tmp_path, tokens):
    weights = load_file(folder / "model.safetensors")
    names = sorted(weights)
    shards = {"model-00001-of-00002.safetensors": names[::2], "model-00002-of-00002.safetensors": names[1::2]}
    for shard, keys in shards.items():
        save_file({k: weights[k] for k in keys}, tmp_path / shard)
    index = {"weight_map": {k: shard for shard, keys in shards.items() for k in keys}}
    (tmp_path / "model.safetensors.index.json").write_text(json.dumps(index))
    (tmp_path / "config.json").write_text((folder / "config.json").read_text())
    with torch.no_grad():
        assert torch.equal(ouro.load(tmp_path)(tokens).logits, ouro.load(folder)(tokens).logits)


def test_a_hub_like_bfloat16_checkpoint_loads_in_float32(tmp_path, tokens):
    """The hub ships bfloat16 weights, `torch_dtype: bfloat16`, a large rope_theta and `use_cache: true`."""
    folder = ouro.save_published(ouro.tiny(3, n_iterations=4).to(torch.bfloat16), tmp_path / "ouro")
    raw = json.loads((folder / "config.json").read_text())
    assert raw["torch_dtype"] == "bfloat16"
    (folder / "config.json").write_text(json.dumps({**raw, "rope_theta": 1000000.0}))
    hf = ouro.load(folder)
    assert {p.dtype for p in hf.parameters()} == {torch.float32}
    with torch.no_grad():
        assert (hf(tokens).logits - reference(folder, tokens)["logits"]).abs().max() < TOL


def test_tied_embeddings_load_from_the_embedding(tmp_path, tokens):
    folder = ouro.save_published(ouro.tiny(4, n_iterations=N_ITERATIONS, tie_word_embeddings=True), tmp_path / "ouro")
    assert "lm_head.weight" not in load_file(folder / "model.safetensors")
    hf = ouro.load(folder)
    assert hf.lm_head.weight is hf.model.embed_tokens.weight
    with torch.no_grad():
        assert (hf(tokens).logits - reference(folder, tokens)["logits"]).abs().max() < TOL


@pytest.mark.parametrize("change", [{"use_sliding_window": True, "max_window_layers": 1}, {"rope_scaling": {"rope_type": "linear", "factor": 2.0}}])
def test_configs_no_released_checkpoint_uses_are_refused(folder, tmp_path, change):
    raw = json.loads((folder / "config.json").read_text())
    del raw["layer_types"], raw["sliding_window"]  # derived again from the changed keys, as the published class does
    (tmp_path / "config.json").write_text(json.dumps({**raw, "sliding_window": 4, **change}))
    (tmp_path / "model.safetensors").write_bytes((folder / "model.safetensors").read_bytes())
    with pytest.raises(ValueError, match="not supported by Loupe"):
        ouro.load(tmp_path)


@pytest.mark.parametrize("implementation", ["eager", "sdpa", "loupe_capture"])
def test_logits_equal_reference_under_each_attention(folder, tokens, ref, implementation):
    hf = ouro.load(folder)  # "loupe_capture": Loupe's attention function (loupe.capture registers it), outside a capture
    hf.config._attn_implementation = implementation
    with torch.no_grad():
        logits = hf(tokens, use_cache=False).logits
        last = hf(tokens, past_key_values=None, use_cache=False, logits_to_keep=1).logits
    assert (logits - ref["logits"]).abs().max() < TOL
    assert (last - logits[:, -1:]).abs().max() < 1e-6
    assert torch.equal(ref["exit_iteration"], torch.full_like(ref["exit_iteration"], N_ITERATIONS - 1))  # threshold 1.0: last


@pytest.mark.parametrize("native_path", [True, False], ids=["fast_path", "bridge_hooks"])
def test_captured_attention_and_logits_equal_reference_at_every_iteration(model, tokens, ref, native_path):
    with model.lock:
        logits, patterns = capture_patterns(model, tokens, native=native_path)
    assert patterns.shape == ref["patterns"].shape  # [iteration, layer, batch, head, query_pos, key_pos]
    assert max(per_iteration(patterns, ref["patterns"])) < TOL
    assert (logits - ref["logits"]).abs().max() < TOL
    row_max = ref["patterns"][..., 1:, :].max(-1).values  # sharpened: far from uniform, so a wrong pattern shows
    assert row_max.max() > 0.99 and 0.3 < row_max.mean() < 0.9


def test_exit_logits_equal_the_reference_per_step_logits(model, tokens, ref):
    with torch.inference_mode():
        exits = model.bridge.original_model.exit_logits(tokens)  # [iteration, batch, pos, d_vocab]
    assert max(per_iteration(exits, ref["step_logits"])) < TOL
    assert (ref["step_logits"][0] - ref["step_logits"][-1]).abs().max() > 0.5 * ref["step_logits"].abs().max()  # steps differ


def test_generic_early_exit_equals_the_reference_per_step_logits(model, tokens, ref):
    positions = torch.arange(tokens.shape[1])
    with model.lock:
        logits, resid = capture_residuals(model, tokens, positions)  # resid [iteration, layer, batch, pos, d_model]
    exits = readout(model, resid[:, -1])  # [iteration, batch, pos, d_vocab]
    assert max(per_iteration(exits, ref["step_logits"])) < TOL
    assert (logits - ref["logits"]).abs().max() < TOL
    with model.lock:
        per_step = loops.exit_logits(model, tokens, positions)  # what analyses read: Ouro's exit is norm + unembed
    assert not model.entry.own_exit and max(per_iteration(per_step, ref["step_logits"])) < TOL


def test_exit_gate_equals_reference(model, tokens, ref):
    with torch.inference_mode():
        gate = model.bridge.original_model.exit_gate(tokens)
    for name in ("exit_lambda", "exit_pdf", "expected_exit_step"):
        assert (gate[name] - ref[name]).abs().max() < TOL, name
    assert torch.equal(gate["exit_iteration"], ref["exit_iteration"])
    assert torch.allclose(gate["exit_pdf"].sum(0), torch.ones(2, 9))
    assert (gate["exit_pdf"] > 0.05).sum(0).float().mean() > 1.5  # the exit mass spreads over steps


@pytest.mark.parametrize("times", [1, 2, 5])
def test_loop_count_set_by_loupe_runs_that_many_steps(model, folder, tokens, times):
    expected = reference(folder, tokens, n_iterations=times)
    with model.lock:
        logits, patterns = capture_patterns(model, tokens, loop=LoopSpec(times=times), native=True)
        _, bridge_patterns = capture_patterns(model, tokens, loop=LoopSpec(times=times), native=False)
        _, resid = capture_residuals(model, tokens, torch.arange(tokens.shape[1]), LoopSpec(times=times))
        with torch.inference_mode(), looping(model, LoopSpec(times=times)):
            gate = model.bridge.original_model.exit_gate(tokens)
    assert patterns.shape[0] == bridge_patterns.shape[0] == resid.shape[0] == times
    assert max(per_iteration(patterns, expected["patterns"]) + per_iteration(bridge_patterns, expected["patterns"])) < TOL
    assert (logits - expected["logits"]).abs().max() < TOL
    assert max(per_iteration(readout(model, resid[:, -1]), expected["step_logits"])) < TOL
    assert (gate["exit_pdf"] - expected["exit_pdf"]).abs().max() < TOL
    assert model.bridge.original_model.model.total_ut_steps == N_ITERATIONS  # restored


def test_bridge_hooks_fire_once_per_step(model, tokens):
    names = ["blocks.0.hook_resid_post", "blocks.1.hook_resid_post", "blocks.1.attn.hook_pattern", "ln_final.hook_out", "unembed.hook_out"]
    counts = dict.fromkeys(names, 0)

    def counter(name):
        def count(activation, hook):
            counts[name] += 1

        return count

    with torch.inference_mode():
        model.bridge.run_with_hooks(tokens, fwd_hooks=[(name, counter(name)) for name in names], use_cache=False)
    assert counts == {**dict.fromkeys(names[:4], N_ITERATIONS), "unembed.hook_out": 1}


@pytest.mark.parametrize(
    "config, expected_exit",
    [
        ({"early_exit_threshold": 1.0, "gate_bias": 30.0}, "first"),  # lambda rounds to 1.0: the pdf is all at step 1
        ({"early_exit_threshold": 0.5}, "mixed"),
        ({"early_exit_threshold": None}, "last"),
        ({"early_exit_step": 1}, "second"),
    ],
)
def test_output_comes_from_the_published_exit_rule(tmp_path, tokens, config, expected_exit):
    config = dict(config)
    gate_bias = config.pop("gate_bias", None)
    hf = ouro.tiny(2, n_iterations=N_ITERATIONS, **config)
    if gate_bias is not None:
        with torch.no_grad():
            hf.model.early_exit_gate.weight.zero_()
            hf.model.early_exit_gate.bias.fill_(gate_bias)
    folder = ouro.save_published(hf, tmp_path / "ouro", _tokenizer())
    if "early_exit_step" in config:  # not a key of the hub configs, but the published class reads it
        raw = json.loads((folder / "config.json").read_text())
        (folder / "config.json").write_text(json.dumps({**raw, "early_exit_step": config["early_exit_step"]}))
    expected = reference(folder, tokens)
    if "early_exit_step" in config:
        expected["logits"] = expected["step_logits"][config["early_exit_step"]]
        expected["exit_iteration"] = torch.full_like(expected["exit_iteration"], config["early_exit_step"])
    hf = ouro.load(folder)
    with torch.no_grad():
        logits, gate = hf(tokens).logits, hf.exit_gate(tokens)
    assert (logits - expected["logits"]).abs().max() < TOL
    assert torch.equal(gate["exit_iteration"], expected["exit_iteration"])
    steps = set(gate["exit_iteration"].flatten().tolist())
    assert steps == {"first": {0}, "second": {1}, "last": {N_ITERATIONS - 1}}.get(expected_exit, steps)
    if expected_exit == "mixed":
        assert len(steps) > 1


def test_no_kv_cache_is_refused_loudly(model, tokens):
    with pytest.raises(ValueError, match="no KV cache"), torch.no_grad():
        model.bridge.original_model(tokens, use_cache=True)


def greedy(folder, tokens, n_new: int) -> torch.Tensor:
    """The reference's greedy continuation of tokens [1, pos], recomputing the whole prefix."""
    for _ in range(n_new):
        tokens = torch.cat([tokens, reference(folder, tokens)["logits"][:, -1].argmax(-1, keepdim=True)], dim=1)
    return tokens


def test_generation_recomputes_the_prefix_through_the_bridge(model, folder, tokens):
    prompt = tokens[:1, :5]
    with torch.inference_mode():
        out = model.bridge.generate(prompt, max_new_tokens=4, do_sample=False, stop_at_eos=False, return_type="tokens", verbose=False)
    assert torch.equal(out, greedy(folder, prompt, 4))


def test_loupe_generation_equals_reference(model, folder, tokens):
    from loupe.generation import generate_with_attention

    prompt = tokens[:1, :5]
    with model.lock:
        generation = generate_with_attention(model, prompt, 4)
    assert torch.equal(torch.cat([prompt[0], generation.new_ids]), greedy(folder, prompt, 4)[0])
    assert generation.bos.shape[1] == N_ITERATIONS  # [new, iteration, layer, head]


def test_model_store_boots_the_folder_without_remote_code(folder, tmp_path, monkeypatch, tokens, ref):
    from transformers import dynamic_module_utils
    from transformers.models.auto import auto_factory, configuration_auto, tokenization_auto

    def refuse(*args, **kwargs):
        raise AssertionError("the folder's auto_map was looked up")

    for module in (dynamic_module_utils, auto_factory, configuration_auto, tokenization_auto):
        for name in ("resolve_trust_remote_code", "get_class_from_dynamic_module"):
            if hasattr(module, name):
                monkeypatch.setattr(module, name, refuse)
    settings = Settings(model_dirs=[folder.parent], zoo_dir=tmp_path / "zoo", data_dir=tmp_path / "data", hub_models=[])
    assert not settings.trust_remote_code
    store = ModelStore(settings)
    entry = store.entry("local/ourotiny")
    assert (entry.model_type, entry.n_layers, entry.n_heads, entry.n_iterations) == ("ouro", 2, 4, N_ITERATIONS)
    assert {"loop", "attention", "exit_gate", "causal_lm"} <= set(entry.capabilities)
    assert not entry.remote_code and entry.warnings == []  # its auto_map is never needed
    loaded_model = store.get("local/ourotiny")
    assert type(loaded_model.bridge.original_model) is ouro.OuroForCausalLM
    with loaded_model.lock:
        logits, patterns = capture_patterns(loaded_model, tokens)  # the path Loupe picks for it
    assert max(per_iteration(patterns, ref["patterns"])) < TOL and (logits - ref["logits"]).abs().max() < TOL
    text_tokens = loaded_model.tokenize("the cat sat", 64)
    assert int(text_tokens[0, 0]) == loaded_model.tokenizer.bos_token_id  # BOS prepended once
    assert int(text_tokens[0, 1]) != loaded_model.tokenizer.bos_token_id


def test_the_kept_path_equals_reference_at_every_iteration(model, tokens, ref):
    """A long prompt's path: each step's queries, keys and rule kept, every head recomputed."""
    from ..kept import keep, recomputed

    kept, _ = keep(model, tokens[:1])
    for iteration in range(N_ITERATIONS):
        for layer in range(2):
            assert (recomputed(kept, iteration, layer) - ref["patterns"][iteration, layer, 0]).abs().max() < TOL
