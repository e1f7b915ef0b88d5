"""The compiled kept-path attention (fused.py, kept_attention.cpp) against attention written out in
plain torch, for every rule the kept path models, and against the torch rows it replaces on real models."""

import math
import os
import subprocess
import sys

import pytest
import torch

from loupe import fused
from loupe.attention_rule import AttentionRule, bins

from .kept import keep
from .test_attention_rule import D, masks_of, plain_attention


@pytest.fixture(scope="module")
def kernel():
    built = fused.kernel()
    assert built is not None, "the kept-path kernel did not build (see the log): `make install` builds it"
    return built


def random_rule(n_pos: int, mask_name: str, extra: str, seed: int):
    """(query [head, T, d], key [kv_head, T, d], value, allowed [T, T], rule): sharp weights, from ~0 to ~1."""
    generator = torch.Generator().manual_seed(seed)
    n_heads, n_kv = 4, 2 if extra == "gqa" else 4
    query = torch.randn(1, n_heads, n_pos, D, generator=generator) * 3
    key = torch.randn(1, n_kv, n_pos, D, generator=generator) * 3
    value = torch.randn(n_kv, n_pos, 5, generator=generator)
    allowed = masks_of(n_pos)[mask_name]
    softcap = 2.5 if extra == "softcap" else None
    sinks = torch.randn(n_heads, generator=generator) if extra == "sinks" else None
    rule = AttentionRule.of_call(torch.nn.Module(), query, key, allowed[None, None], 0.3, softcap, sinks, None)
    return query[0], key[0], value, allowed, rule


def check(kernel, monkeypatch, rule, query, key, value, want, rows, keys, tolerance=1e-5):
    """The kernel's output, entropy, first/previous/own weights and thumbnail columns, in blocks of `rows`
    query rows and tiles of `keys` keys, against the probabilities `want` [head, q, k] of an attention
    computed independently (float32 scores of up to ~20: e^(s - log Z) to ~1e-6)."""
    monkeypatch.setattr(fused, "BLOCK_ROWS", rows)
    monkeypatch.setattr(fused, "TILE_KEYS", keys)
    n_pos, side = rule.n_pos, min(32, rule.n_pos)
    output, got = fused.attend(kernel, rule, query, key, value, side)  # output [T, head, d_v]
    want = want.double()
    assert (output.double().transpose(0, 1) - want @ value.double().repeat_interleave(rule.groups, 0)).abs().max() < tolerance
    assert (got.entropy.double() - -torch.special.xlogy(want, want).sum(-1)).abs().max() < 10 * tolerance
    pos = torch.arange(n_pos)
    heads = torch.arange(len(query))[:, None]
    for key_pos in (torch.zeros_like(pos), pos - 1, pos):
        wanted = torch.where((key_pos >= 0)[None], want[heads, pos, key_pos.clamp(min=0)], 0.0)
        assert (got.at(key_pos).double() - wanted).abs().max() < tolerance
    columns = torch.stack([want[..., start:end].amax(-1) for start, end in bins(n_pos, side)], -1)
    assert (got.column_max(side).double() - columns).abs().max() < tolerance


@pytest.mark.parametrize("n_pos, rows, keys", [(37, 16, 8), (70, 64, 512), (131, 5, 3)])
@pytest.mark.parametrize("mask_name", list(masks_of(8)))
@pytest.mark.parametrize("extra", ["plain", "softcap", "sinks", "gqa"])
def test_the_kernel_equals_plain_attention(kernel, monkeypatch, n_pos, rows, keys, mask_name, extra):
    """Blocks of rows and tiles of keys smaller and larger than the prompt, column bins that overlap
    (T = 37, 131 over 32 bins): the output, entropy, chosen weights and thumbnail columns are the plain ones."""
    query, key, value, allowed, rule = random_rule(n_pos, mask_name, extra, seed=n_pos)
    if rows == 5:  # laid out [T, head, d] as a model's projections leave them: strided heads, read in place
        query, key, value = (x.transpose(0, 1).contiguous().transpose(0, 1) for x in (query, key, value))
    want = plain_attention(query, key.repeat_interleave(rule.groups, 0), 0.3, allowed, rule.softcap, rule.sinks)  # [head, q, k]
    check(kernel, monkeypatch, rule, query, key, value, want, rows, keys)


def test_a_row_that_underflows_but_for_one_key_keeps_its_entropy_and_weights(kernel):
    """One key takes everything by e^200: every other weight is 0 in float32, as in HF eager."""
    n_pos = 9
    query, key = torch.ones(1, 1, n_pos, 1), torch.zeros(1, 1, n_pos, 1)
    key[0, 0, 4] = 200.0
    rule = AttentionRule.of_call(torch.nn.Module(), query, key, None, 1.0, None, None, None)
    output, got = fused.attend(kernel, rule, query[0], key[0], key[0], 9)
    want = plain_attention(query[0], key[0], 1.0, masks_of(n_pos)["causal"])
    assert (output[:, 0, 0] - want[0] @ key[0, 0, :, 0]).abs().max() < 1e-3  # values of 200
    assert (got.entropy - -torch.special.xlogy(want, want).sum(-1)).abs().max() < 1e-4
    assert (got.column_max(9) - want).abs().max() < 1e-6


def test_the_kernel_and_the_torch_rows_keep_the_same(tiny_model, looped_model):
    """The kept path with the kernel and with the torch rows, on GPT-2 and a looped Llama (every
    iteration): the same queries and keys, head stats and thumbnails."""
    for model in (tiny_model, looped_model):
        tokens = model.tokenize("The cat sat on the mat, and the dog sat by it.", 64)
        compiled, compiled_stats = keep(model, tokens, compiled=True)
        plain, plain_stats = keep(model, tokens, compiled=False)
        assert compiled.kept.keys() == plain.kept.keys()
        for key, (query, keys, _) in compiled.kept.items():
            assert (query - plain.kept[key][0]).abs().max() < 1e-5 and (keys - plain.kept[key][1]).abs().max() < 1e-5
            assert (compiled.pooled[key] - plain.pooled[key]).abs().max() < 1e-5
        want = plain_stats.stacked(model.n_layers)
        for stat, got in compiled_stats.stacked(model.n_layers).items():
            assert (got - want[stat]).abs().max() < 1e-5, stat


def test_without_a_compiler_the_torch_rows_run(tmp_path):
    """A machine without a C++ compiler (CXX that fails, an empty extensions folder): kernel() is None,
    with the reason logged, and the kept path runs the torch rows."""
    env = {**os.environ, "CXX": "/bin/false", "TORCH_EXTENSIONS_DIR": str(tmp_path)}
    code = "from loupe import fused; print('kernel', fused.kernel())"
    run = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    assert "kernel None" in run.stdout and "unavailable" in run.stderr


def test_exp_is_exact_to_float_precision_over_the_range_it_takes(kernel):
    """The kernel's e^x (a polynomial, vectorized) against torch's, through a row whose scores span 0..-70."""
    n_pos = 141
    query = torch.ones(1, 1, n_pos, 1)
    key = torch.linspace(0, -70, n_pos).flip(0).view(1, 1, n_pos, 1)  # the last key scores 0, the first -70
    rule = AttentionRule.of_call(torch.nn.Module(), query, key, None, 1.0, None, None, False)  # bidirectional
    _, got = fused.attend(kernel, rule, query[0], key[0], key[0], n_pos)
    weights = got.column_max(n_pos)[0, 0]  # one key a bin: the weights themselves
    want = torch.softmax(key[0, 0, :, 0].double(), -1)
    relative = ((weights.double() - want) / want).abs()
    assert relative[want > math.exp(-62)].max() < 2e-6


def test_the_kernel_refuses_column_bins_that_leave_a_key_out(kernel):
    """Every key a row sees must fall in a bin (the kernel's running maximum is the bins'): a gap is an error, not a wrong tile."""
    query, key, value, _, rule = random_rule(20, "causal", "plain", seed=1)
    with pytest.raises(RuntimeError, match="leave no key out"):
        kernel.kept_attention(query, key, value, rule.lo, rule.hi, 0.3, 0.0, torch.empty(0), torch.tensor([0, 12]), torch.tensor([10, 20]), 16, 8)
