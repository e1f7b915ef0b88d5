"""Loupe's Huginn (architectures/huginn.py) against a plain-torch forward from the published equations
(huginn_reference.py), on tiny seeded folders saved as the hub lays Huginn out (auto_map included):
attention at every iteration on both capture paths, logits under every attention implementation,
per-step exits, the loop count, the seeded initial latent, generation, and loading through the
model store without remote code."""

import json

import pytest
import torch
from safetensors.torch import load_file, save_file

from loupe.architectures import huginn, native
from loupe.capture import capture_patterns
from loupe.config import Settings
from loupe import loops
from loupe.loops import LoopSpec, looping, seeded
from loupe.model_store import LoadedModel, ModelStore, _entry_from_dir

from ..tiny_models import _tokenizer
from .huginn_reference import PublishedHuginn

TOL = 1e-4
SEED = 11  # the initial latent's seed (loops.seeded sets it as Loupe's run service does)
N_STEPS = 4  # mean_recurrence of the tiny model
PRELUDE, CORE, CODA = 1, 2, 1


def build(folder, seed=0, **overrides):
    """A tiny random-init Huginn (1 prelude, 2 core, 1 coda block, 4 heads, 4 steps) saved in the
    published layout with a 300-token tokenizer. Queries and keys are scaled up and the q/k bias and
    norm weights drawn at random, so patterns are far from uniform and every tensor matters."""
    values = dict(
        n_embd=64, n_heads=4, intermediate_size=96, block_size=64, vocab_size=300, mean_recurrence=N_STEPS,
        n_layers_in_prelude=PRELUDE, n_layers_in_recurrent_block=CORE, n_layers_in_coda=CODA,
        bos_token_id=0, eos_token_id=0,
    )  # fmt: skip
    config = huginn.HuginnConfig(**{**values, **overrides})
    torch.manual_seed(seed)
    model = huginn.HuginnForCausalLM(config)
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if name.endswith("Wqkv.weight"):
                parameter[: 2 * config.n_embd] *= 4  # q and k rows: sharper attention
            elif name.endswith("qk_bias"):
                parameter.normal_(0, 0.5)
            elif "norm" in name or "ln_f" in name:
                parameter.normal_(1, 0.2)
    huginn.save_published(model, folder)
    _tokenizer().save_pretrained(folder)
    return folder


def loaded(folder) -> LoadedModel:
    return LoadedModel(entry=_entry_from_dir(f"local/{folder.name}", "local", folder), bridge=huginn.boot(folder), revision="t")


def latent(ref: PublishedHuginn, n_pos: int, seed: int = SEED) -> torch.Tensor:
    """The initial latent Loupe draws with `latent_seed = seed`: one row, from its own generator."""
    return ref.draw_latent((1, n_pos, ref.d), torch.Generator().manual_seed(seed))


def per_iteration(a: torch.Tensor, b: torch.Tensor) -> list[float]:
    """Max |a - b| at each iteration (dim 0)."""
    return [float((x - y).abs().max()) for x, y in zip(a, b)]


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return build(tmp_path_factory.mktemp("huginn") / "hugtiny")


@pytest.fixture(scope="module")
def model(folder):
    return loaded(folder)


@pytest.fixture(scope="module")
def published(folder):
    return PublishedHuginn(folder)


@pytest.fixture(scope="module")
def tokens():
    return torch.randint(1, 300, (2, 9), generator=torch.Generator().manual_seed(1))  # [batch, pos]


@pytest.fixture(scope="module")
def ref(published, tokens):
    return published.forward(tokens, latent(published, tokens.shape[1]), N_STEPS)


def test_saved_folder_has_the_published_layout(folder):
    config = json.loads((folder / "config.json").read_text())
    assert config["model_type"] == "huginn_raven" and config["architectures"] == ["RavenForCausalLM"]
    assert config["auto_map"]["AutoModelForCausalLM"] == "raven_modeling_minimal.RavenForCausalLM"
    assert (config["n_layers"], config["mean_recurrence"], config["block_size"], config["n_heads"]) == (4, N_STEPS, 64, 4)
    per_block = ["attn.Wqkv", "attn.proj", "mlp.fc", "mlp.proj", "norm_1", "norm_2", "norm_3", "norm_4"]
    names = {"freqs_cis", "lm_head.weight", "transformer.wte.weight", "transformer.adapter.weight", "transformer.ln_f.weight"}
    for stack, n in (("prelude", PRELUDE), ("core_block", CORE), ("coda", CODA)):
        names |= {f"transformer.{stack}.{i}.{part}.weight" for i in range(n) for part in per_block}
        names |= {f"transformer.{stack}.{i}.attn.qk_bias" for i in range(n)}
    assert set(load_file(folder / "model.safetensors")) == names


def test_published_names_load_strictly(folder, tmp_path):
    tensors = load_file(folder / "model.safetensors")
    for name, change in (("extra", lambda t: {**t, "transformer.coda.1.norm_1.weight": t["transformer.ln_f.weight"].clone()}),
                         ("missing", lambda t: {k: v for k, v in t.items() if k != "transformer.core_block.1.attn.qk_bias"})):  # fmt: skip
        broken = tmp_path / name
        broken.mkdir()
        (broken / "config.json").write_text((folder / "config.json").read_text())
        save_file(change(tensors), broken / "model.safetensors")
        with pytest.raises(ValueError, match="not a Huginn checkpoint"):
            huginn.load(broken)
    again = huginn.save_published(huginn.load(folder), tmp_path / "again")
    assert all(torch.equal(t, load_file(again / "model.safetensors")[name]) for name, t in tensors.items())


def test_facts_and_config_keys(folder):
    config = json.loads((folder / "config.json").read_text())
    assert native("huginn_raven") is huginn
    assert huginn.facts(config) == huginn.Facts(n_layers=4, n_heads=4, n_iterations=N_STEPS, n_ctx=64, draws_random=True, own_exit=True)
    hub = {"model_type": "huginn_raven", "n_embd": 5280, "num_attention_heads": 55, "n_layers": 8, "block_size": 4096,
           "n_layers_in_prelude": 2, "n_layers_in_recurrent_block": 4, "n_layers_in_coda": 2, "mean_recurrence": 32}  # fmt: skip
    assert huginn.facts(hub) == huginn.Facts(n_layers=8, n_heads=55, n_iterations=32, n_ctx=4096, draws_random=True, own_exit=True)
    for key, value in (("injection_type", "add"), ("state_init", "zero"), ("test_time_noise", 0.1)):
        with pytest.raises(ValueError):
            huginn.facts({**config, key: value})


@pytest.mark.parametrize("native_path", [True, False], ids=["fast_path", "bridge_hook_pattern"])
def test_attention_at_every_iteration_equals_reference(model, tokens, ref, native_path):
    with model.lock, seeded(model, SEED):
        logits, patterns = capture_patterns(model, tokens, native=native_path)
    assert patterns.shape == (N_STEPS, 4, 2, 4, 9, 9)  # [iteration, layer, batch, head, query_pos, key_pos]
    diffs = per_iteration(patterns, ref.patterns)
    assert max(diffs) < TOL, diffs
    assert (logits - ref.logits).abs().max() < TOL
    assert ref.patterns.amax(-1).mean() > 0.5  # sharp enough that equality means something


def test_every_attention_implementation_gives_the_same_logits(model, tokens, ref):
    hf = model.bridge.original_model
    saved = hf.config._attn_implementation
    try:
        for implementation in ("eager", "sdpa"):
            hf.config._attn_implementation = implementation
            with model.lock, seeded(model, SEED), torch.no_grad():
                assert (hf(tokens).logits - ref.logits).abs().max() < TOL, implementation
                assert (model.bridge(tokens) - ref.logits).abs().max() < TOL, implementation
    finally:
        hf.config._attn_implementation = saved


def test_exit_logits_are_each_steps_coda_readout(model, tokens, ref):
    with model.lock, seeded(model, SEED):
        exits = model.bridge.original_model.exit_logits(tokens)  # [iteration, batch, pos, d_vocab]
    assert exits.shape == (N_STEPS, 2, 9, 300)
    assert max(per_iteration(exits, ref.exits)) < TOL
    assert (exits[-1] - ref.logits).abs().max() < TOL  # the last exit is the model's output


def test_loupes_exit_and_residuals_read_the_reference(model, tokens, ref):
    positions = torch.tensor([2, 8])
    with model.lock, seeded(model, SEED):
        exits = loops.exit_logits(model, tokens, positions)  # [iteration, batch, n, d_vocab]
        _, resid = loops.capture_residuals(model, tokens, positions)  # [iteration, layer, batch, n, d_model]
        with pytest.raises(Exception, match="coda"):
            loops.readout(model, resid[:, -1])  # norm + unembedding is not Huginn's exit
    assert loops.loop_layers(model, None) == (PRELUDE, PRELUDE + CORE - 1)
    assert max(per_iteration(exits, ref.exits[:, :, positions])) < TOL
    assert max(per_iteration(resid[:, PRELUDE + CORE - 1], ref.latents[:, :, positions])) < TOL


def test_resid_post_fires_every_time_a_block_runs(model, tokens, ref):
    fired: dict[int, list[torch.Tensor]] = {layer: [] for layer in range(4)}

    def hook(layer):
        return lambda act, hook: fired[layer].append(act.clone())

    with model.lock, seeded(model, SEED), torch.no_grad():
        model.bridge.run_with_hooks(tokens, fwd_hooks=[(f"blocks.{l}.hook_resid_post", hook(l)) for l in range(4)])
    assert [len(fired[layer]) for layer in range(4)] == [1, N_STEPS, N_STEPS, 1]
    assert max(per_iteration(torch.stack(fired[PRELUDE + CORE - 1]), ref.latents)) < TOL  # the latent after each step


def test_loop_count_is_set_per_run(model, published, tokens):
    owner = model.bridge.original_model.transformer
    with model.lock, seeded(model, SEED):
        with looping(model, LoopSpec(times=2)):
            assert owner.total_ut_steps == 2
        logits, patterns = capture_patterns(model, tokens, loop=LoopSpec(times=2))
        exits = model.bridge.original_model.exit_logits(tokens, n_iterations=7)
    assert owner.total_ut_steps == N_STEPS
    two = published.forward(tokens, latent(published, 9), 2)
    assert patterns.shape[0] == 2 and max(per_iteration(patterns, two.patterns)) < TOL
    assert (logits - two.logits).abs().max() < TOL
    seven = published.forward(tokens, latent(published, 9), 7)
    assert exits.shape[0] == 7 and max(per_iteration(exits, seven.exits)) < TOL


def test_initial_latent_is_seeded_or_drawn_as_published(model, published, tokens):
    hf = model.bridge.original_model
    with model.lock, torch.no_grad():
        with seeded(model, SEED):
            assert torch.equal(hf(tokens).logits, hf(tokens).logits)  # every forward of a request: the same latent
        assert hf.transformer.latent_seed is None
        first, second = hf(tokens).logits, hf(tokens).logits
        assert (first - second).abs().max() > 1e-3  # unseeded: a fresh latent per forward
        torch.manual_seed(5)
        unseeded = hf(tokens).logits
    torch.manual_seed(5)
    drawn = published.draw_latent((2, 9, published.d))  # the published initialize_state on the global RNG
    assert (unseeded - published.forward(tokens, drawn, N_STEPS).logits).abs().max() < TOL


def test_a_rows_result_does_not_depend_on_its_batch(model, tokens):
    hf = model.bridge.original_model
    with model.lock, seeded(model, SEED), torch.no_grad():
        batch = hf(tokens).logits
        alone = torch.cat([hf(tokens[i : i + 1]).logits for i in range(2)])
    assert (batch - alone).abs().max() < 1e-5


def test_no_kv_cache_is_refused_loudly(model, tokens):
    with pytest.raises(ValueError, match="no KV cache"), torch.no_grad():
        model.bridge.original_model(tokens, use_cache=True)


def greedy(published, tokens, n_new: int) -> torch.Tensor:
    """The reference's greedy continuation of tokens [1, pos], recomputing the whole prefix with the
    latent Loupe draws at each length."""
    for _ in range(n_new):
        logits = published.forward(tokens, latent(published, tokens.shape[1]), N_STEPS).logits
        tokens = torch.cat([tokens, logits[:, -1].argmax(-1, keepdim=True)], dim=1)
    return tokens


def test_generation_recomputes_the_prefix(model, published, tokens):
    from loupe.generation import generate_with_attention

    prompt = tokens[:1, :5]
    with model.lock, seeded(model, SEED), torch.inference_mode():
        bridge = model.bridge.generate(prompt, max_new_tokens=4, do_sample=False, stop_at_eos=False, return_type="tokens", verbose=False)
        generation = generate_with_attention(model, prompt, 4)
    expected = greedy(published, prompt, 4)
    assert torch.equal(bridge, expected)
    assert torch.equal(torch.cat([prompt[0], generation.new_ids]), expected[0])
    assert generation.bos.shape[1:3] == (N_STEPS, 4)  # [new, iteration, layer, head]


def test_a_remote_tokenizer_class_falls_back_to_tokenizer_json(tmp_path, monkeypatch):
    import transformers.dynamic_module_utils as dynamic

    def refuse(*args, **kwargs):
        raise AssertionError("remote code was looked up")

    monkeypatch.setattr(dynamic, "resolve_trust_remote_code", refuse)  # also what would ask on stdin
    folder = build(tmp_path / "hugtok")
    settings = json.loads((folder / "tokenizer_config.json").read_text())
    settings.update(tokenizer_class="RavenTokenizer", auto_map={"AutoTokenizer": ["tokenization_raven.RavenTokenizer", None]})
    (folder / "tokenizer_config.json").write_text(json.dumps(settings))
    bridge = huginn.boot(folder)
    ids = bridge.to_tokens("the cat")
    assert int(ids[0, 0]) == 0 and int(ids[0, 1]) != 0  # BOS prepended once


def test_model_store_lists_and_boots_two_folders_without_remote_code(tmp_path, monkeypatch, tokens):
    import transformers.dynamic_module_utils as dynamic

    def refuse(*args, **kwargs):
        raise AssertionError("remote code was looked up")

    monkeypatch.setattr(dynamic, "get_class_from_dynamic_module", refuse)
    monkeypatch.setattr(dynamic, "resolve_trust_remote_code", refuse)
    root = tmp_path / "models"
    folders = [build(root / "huga", seed=0), build(root / "hugb", seed=1, mean_recurrence=3, tie_embeddings=False, n_layers_in_prelude=2)]
    for folder in folders:  # the remote files the auto_map names: importing them would fail loudly
        for name in ("raven_modeling_minimal.py", "raven_config_minimal.py"):
            (folder / name).write_text("raise RuntimeError('remote code ran')\n")
    settings = Settings(model_dirs=[root], zoo_dir=tmp_path / "zoo", data_dir=tmp_path / "data", hub_models=[])
    assert not settings.trust_remote_code
    store = ModelStore(settings)
    a, b = store.entry("local/huga"), store.entry("local/hugb")
    assert (a.model_type, a.n_layers, a.n_heads, a.n_iterations, a.n_ctx) == ("huginn_raven", 4, 4, N_STEPS, 64)
    assert (b.n_layers, b.n_iterations) == (5, 3)
    assert {"loop", "attention", "seeded", "causal_lm"} <= set(a.capabilities)
    for model_id, folder, steps in (("local/huga", folders[0], N_STEPS), ("local/hugb", folders[1], 3)):
        loaded_model = store.get(model_id)
        assert type(loaded_model.bridge.original_model) is huginn.HuginnForCausalLM
        assert loaded_model.n_layers == loaded_model.entry.n_layers
        published = PublishedHuginn(folder)
        expected = published.forward(tokens, latent(published, 9), steps)
        with loaded_model.lock, seeded(loaded_model, SEED):
            logits, patterns = capture_patterns(loaded_model, tokens)  # the path Loupe picks for it
        assert max(per_iteration(patterns, expected.patterns)) < TOL and (logits - expected.logits).abs().max() < TOL
    text_tokens = store.get("local/huga").tokenize("the cat sat", 64)
    assert int(text_tokens[0, 0]) == 0 and int(text_tokens[0, 1]) != 0  # BOS prepended once


def test_the_kept_path_equals_reference_at_every_iteration(model, tokens, ref):
    """A long prompt's path: each recurrence's queries, keys and rule kept, every head recomputed."""
    from ..kept import keep, recomputed

    with seeded(model, SEED):
        kept, _ = keep(model, tokens[:1])
    for iteration in range(N_STEPS):
        for layer in range(4):
            assert (recomputed(kept, iteration, layer) - ref.patterns[iteration, layer, 0]).abs().max() < TOL
