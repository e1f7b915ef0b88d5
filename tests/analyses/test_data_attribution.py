"""data_attribution: TracIn on a head's own parameters, checked against plain torch on tiny seeded GPT-2s
(a full gradient of every parameter, masked to the head's slices by hand), and where the answer is known
by construction (a duplicated training row scores exactly as its copy)."""

import json

import pytest
import torch
from transformers import GPT2Config, GPT2LMHeadModel

from loupe.analyses import influence
from loupe.analyses.data_attribution import DataAttributionParams, sampled_steps, tracin
from loupe.model_store import _entry_from_dir

D_MODEL, N_HEAD, D_HEAD, VOCAB, S = 16, 4, 4, 40, 6


def tiny(seed: int) -> GPT2LMHeadModel:
    torch.manual_seed(seed)
    config = GPT2Config(vocab_size=VOCAB, n_positions=32, n_embd=D_MODEL, n_layer=2, n_head=N_HEAD, n_inner=16,
                        resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0, initializer_range=0.3, bos_token_id=0, eos_token_id=0)  # fmt: skip
    model = GPT2LMHeadModel(config).eval()
    model.config._attn_implementation = "eager"
    return model


def repeated(batch: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    half = torch.randint(1, VOCAB, (batch, S), generator=g)
    return torch.cat([torch.zeros(batch, 1, dtype=torch.long), half, half], dim=1)  # [batch, 1 + 2S]


def masked(model: GPT2LMHeadModel, layer: int, head: int) -> dict[str, torch.Tensor]:
    """The gradient of every parameter (reverse mode on the whole model), zero outside the head: its
    q, k, v columns of c_attn, written out here rather than taken from head_slices, and its c_proj rows."""
    cols = [part * D_MODEL + head * D_HEAD + i for part in range(3) for i in range(D_HEAD)]
    out = {}
    for name, p in model.named_parameters():
        g = p.grad if p.grad is not None else torch.zeros_like(p)
        mask = torch.zeros_like(p, dtype=torch.bool)
        if name == f"transformer.h.{layer}.attn.c_attn.weight":
            mask[:, cols] = True
        elif name == f"transformer.h.{layer}.attn.c_attn.bias":
            mask[cols] = True
        elif name == f"transformer.h.{layer}.attn.c_proj.weight":
            mask[head * D_HEAD : (head + 1) * D_HEAD] = True
        out[name] = g * mask
    return out


def restricted_as_full(model, layer, head, grads) -> dict[str, torch.Tensor]:
    """A head-restricted gradient scattered back into full-size zero tensors."""
    full = {name: torch.zeros_like(p) for name, p in model.named_parameters()}
    for (name, (dim, idx)), g in zip(influence.head_slices(model.config, layer, head).items(), grads):
        full[name] = full[name].index_copy(dim, idx, g)
    return full


@pytest.mark.parametrize("layer, head", [(1, 2), (0, 0), (1, 3)])
def test_score_gradient_restricted_to_a_head_equals_the_masked_full_gradient(layer, head):
    model, tokens = tiny(layer * 10 + head), repeated(3, 1)
    score, grads = influence.score_gradient(model, influence.head_slices(model.config, layer, head), tokens, layer, head, S)
    model.zero_grad()
    pattern = model(tokens, output_attentions=True).attentions[layer][:, head]  # [batch, q, k]
    q = torch.arange(S + 1, 2 * S + 1)
    expected = pattern[:, q, q - S + 1].mean()  # the induction score, written out
    expected.backward()
    assert score == pytest.approx(expected.item(), abs=1e-7)
    full, ours = masked(model, layer, head), restricted_as_full(model, layer, head, grads)
    assert sum(g.abs().sum() for g in full.values()) > 1e-4  # the score does depend on the head
    for name in full:
        torch.testing.assert_close(ours[name], full[name], rtol=1e-5, atol=1e-8, msg=name)


def test_loss_gradient_restricted_to_a_head_equals_the_masked_full_gradient():
    model, x = tiny(3), torch.randint(0, VOCAB, (2, 20), generator=torch.Generator().manual_seed(0))
    grads = influence.loss_gradient(model, influence.head_slices(model.config, 1, 1), x)
    model.zero_grad()
    logits = model(x).logits
    torch.nn.functional.cross_entropy(logits[:, :-1].reshape(-1, VOCAB), x[:, 1:].reshape(-1)).backward()
    full, ours = masked(model, 1, 1), restricted_as_full(model, 1, 1, grads)
    assert full["transformer.h.1.attn.c_proj.weight"].abs().sum() > 0  # W_O is part of it for a loss
    for name in full:
        torch.testing.assert_close(ours[name], full[name], rtol=1e-5, atol=1e-8, msg=name)


def test_per_token_derivatives_are_gradient_dot_products():
    """One JVP gives ⟨g, ∇ℓ_t(row)⟩ for every row and target: each row's mean equals the dot product of
    g with that row's loss gradient taken by reverse mode."""
    model, x = tiny(5), torch.randint(0, VOCAB, (3, 16), generator=torch.Generator().manual_seed(2))
    slices = influence.head_slices(model.config, 1, 0)
    _, g = influence.score_gradient(model, slices, repeated(4, 0), 1, 0, S)
    d = influence.loss_derivatives(model, slices, x, g)  # [row, pos - 1]
    dots = torch.stack([sum((a * b).sum() for a, b in zip(g, influence.loss_gradient(model, slices, x[i : i + 1]))) for i in range(3)])
    assert dots.abs().min() > 1e-7
    torch.testing.assert_close(d.mean(1), dots, rtol=1e-4, atol=1e-10)


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    """Two checkpoints of a tiny GPT-2 (different seeds), saved as fp16 like the zoo's."""
    root, paths = tmp_path_factory.mktemp("ckpts"), {}
    for step, seed in ((0, 11), (100, 12)):
        tiny(seed).half().save_pretrained(root / str(step))
        paths[step] = root / str(step) / "model.safetensors"
    return paths


def test_a_duplicated_example_scores_the_same_as_its_copy(checkpoints):
    x = torch.randint(0, VOCAB, (5, 16), generator=torch.Generator().manual_seed(4))
    x = torch.cat([x, x[2:3]])  # row 5 is a copy of row 2
    params = DataAttributionParams(layer=1, head=2, seq_len=S)
    lrs = {0: 1e-3, 100: 3e-3}
    contributions, scores = tracin(tiny(0), checkpoints, x, repeated(4, 3), lrs.__getitem__, params)
    influence_ = contributions.sum(1)
    assert torch.equal(contributions[5], contributions[2]) and influence_[5] == influence_[2]
    assert len(set(influence_[:5].tolist())) == 5 and (contributions[:, 0] == 0).all()  # distinct rows differ; BOS is 0
    # TracIn by hand: −Σ_c η_c ⟨∇score, ∇loss⟩ with both gradients by reverse mode at each checkpoint
    expected = torch.zeros(len(x))
    for step, path in checkpoints.items():
        from safetensors.torch import load_file

        model = tiny(0)
        model.load_state_dict({k: v.float() for k, v in load_file(path).items()}, strict=False)
        slices = influence.head_slices(model.config, 1, 2)
        _, g = influence.score_gradient(model, slices, repeated(4, 3), 1, 2, S)
        for i in range(len(x)):
            expected[i] -= lrs[step] * sum((a * b).sum() for a, b in zip(g, influence.loss_gradient(model, slices, x[i : i + 1])))
    torch.testing.assert_close(influence_, expected, rtol=1e-4, atol=1e-12)


def test_sampled_steps_are_distinct_and_seeded():
    steps = sampled_steps(100, 10, 3)
    assert steps == sorted(set(steps)) and len(steps) == 10 and all(0 <= s < 100 for s in steps)
    assert sampled_steps(100, 10, 3) == steps != sampled_steps(100, 10, 4)
    assert sampled_steps(5, 10, 0) == [0, 1, 2, 3, 4]


def test_training_data_is_a_zoo_capability_only(tmp_path, model_dir):
    """Declared in loupe.json, `training_data` is offered for the zoo's final weights only, and only where
    the script it names is a `train_*` module of the zoo package (a local folder's script is never imported)."""
    zoo = tmp_path / "zoo"
    (zoo / "m").mkdir(parents=True)
    for f in (model_dir / "gpt2tiny").iterdir():
        if f.is_file():
            (zoo / "m" / f.name).write_bytes(f.read_bytes())

    def entry(script: str, source: str = "zoo"):
        (zoo / "m" / "loupe.json").write_text(json.dumps({"training_data": {"script": script, "seed": 0}}))
        return _entry_from_dir("m" if source == "zoo" else "local/m", source, zoo / "m")

    assert "training_data" not in entry("train_x").capabilities  # no such file yet
    (zoo / "train_x.py").write_text("")
    assert "training_data" not in entry("train_x").capabilities  # the folder is no package
    (zoo / "__init__.py").write_text("")
    assert "training_data" in entry("train_x").capabilities
    assert "training_data" not in entry("../zoo/train_x").capabilities and "training_data" not in entry("os").capabilities
    local = entry("train_x", "local")
    assert "training_data" not in local.capabilities and local.refusal("training_data").code == "no_training_data"
