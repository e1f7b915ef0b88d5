"""The kept path's rule and its rows against attention written out in plain torch, for every rule it
models (causal, sliding window, chunks, bidirectional, soft-cap, sinks, GQA), and its refusals."""

import math

import pytest
import torch

from loupe import attention_rule
from loupe.attention_rule import AttentionRule, Block, NotModelled, _intervals
from loupe.tiles import tile

T, D = 37, 8


def plain_attention(query, key, scaling, allowed, softcap=None, sinks=None):
    """Eager attention as HF writes it: [head, q, k] probabilities of query [head, T, d], key [head, T, d]."""
    scores = query @ key.transpose(-1, -2) * scaling
    if softcap is not None:
        scores = torch.tanh(scores / softcap) * softcap
    scores = scores.masked_fill(~allowed, -math.inf)
    if sinks is None:
        return scores.softmax(-1)
    combined = torch.cat([scores, sinks.view(-1, 1, 1).expand(-1, scores.shape[1], 1)], -1)
    return combined.softmax(-1)[..., :-1]


def masks() -> dict[str, torch.Tensor]:
    """[q, k] boolean masks of every shape the kept path models."""
    return masks_of(T)


def masks_of(n_pos: int) -> dict[str, torch.Tensor]:
    q, k = torch.arange(n_pos)[:, None], torch.arange(n_pos)[None]
    return {
        "causal": k <= q,
        "sliding window 5": (k <= q) & (q - k < 5),
        "chunks of 8": (k <= q) & (q // 8 == k // 8),
        "bidirectional": torch.ones(n_pos, n_pos, dtype=torch.bool),
        "bidirectional window 4": (q - k).abs() < 4,
    }


@pytest.fixture(autouse=True)
def small_chunks(monkeypatch):
    monkeypatch.setattr(attention_rule, "CHUNK_BYTES", 1)  # 16 rows a chunk: every rule is applied across chunks


@pytest.mark.parametrize("mask_name", list(masks()))
@pytest.mark.parametrize("extra", ["plain", "softcap", "sinks", "gqa"])
def test_rows_equal_plain_attention(mask_name, extra):
    generator = torch.Generator().manual_seed(20261201)
    n_heads, n_kv = 4, 2 if extra == "gqa" else 4
    query = torch.randn(1, n_heads, T, D, generator=generator) * 3  # sharp: weights from ~0 to ~1
    key = torch.randn(1, n_kv, T, D, generator=generator) * 3
    allowed = masks()[mask_name]
    softcap = 2.5 if extra == "softcap" else None
    sinks = torch.randn(n_heads, generator=generator) if extra == "sinks" else None
    rule = AttentionRule.of_call(torch.nn.Module(), query, key, allowed[None, None], 0.3, softcap, sinks, None)
    expanded = key[0].repeat_interleave(n_heads // n_kv, 0)
    want = plain_attention(query[0], expanded, 0.3, allowed, softcap, sinks)  # [head, q, k]
    for head in range(n_heads):
        got = torch.cat([block.full(T) for block in rule.of_head(head).head(query[0, head], key[0, head // rule.groups])])
        assert (got - want[head]).abs().max() < 1e-6
    rows = rule.rows(query[0, :, 20:36], expanded, 20)  # a block of rows of every head, with its entropy
    block = torch.zeros(n_heads, 16, T)
    block[..., rows.key_start : rows.key_start + rows.probs.shape[-1]] = rows.probs
    assert (block - want[:, 20:36]).abs().max() < 1e-6
    entropy = -torch.special.xlogy(want[:, 20:36], want[:, 20:36]).sum(-1)
    assert (rows.entropy - entropy).abs().max() < 1e-4


def test_a_missing_mask_is_causal_or_bidirectional_as_the_module_says():
    query = torch.randn(1, 2, T, D)
    causal, bidirectional = torch.nn.Module(), torch.nn.Module()
    bidirectional.is_causal = False
    assert torch.equal(AttentionRule.of_call(causal, query, query, None, None, None, None, None).hi, torch.arange(1, T + 1))
    assert torch.equal(AttentionRule.of_call(bidirectional, query, query, None, None, None, None, None).hi, torch.full((T,), T))
    assert AttentionRule.of_call(causal, query, query, None, None, None, None, None).scaling == D**-0.5


@pytest.mark.parametrize(
    "why, mask",
    [
        ("a hole in a row", masks()["causal"] & (torch.arange(T)[None] != 3)),
        ("a row that sees nothing", masks()["causal"] & (torch.arange(T)[:, None] != 5)),
        ("an additive float mask", torch.zeros(T, T)),
    ],
)
def test_masks_it_does_not_model_are_declined(why, mask):
    with pytest.raises(NotModelled):
        AttentionRule.of_call(torch.nn.Module(), torch.randn(1, 2, T, D), torch.randn(1, 2, T, D), mask[None, None], None, None, None, None)


def test_a_rule_survives_its_stored_form():
    query = torch.randn(1, 2, T, D)
    rule = AttentionRule.of_call(torch.nn.Module(), query, query[:, :1], masks()["sliding window 5"][None, None], 0.2, 3.0, torch.randn(2), None)
    back = AttentionRule.from_bytes(rule.to_bytes())
    assert (back.scaling, back.groups, back.softcap) == (0.2, 2, 3.0)
    assert torch.equal(back.lo, rule.lo) and torch.equal(back.hi, rule.hi) and torch.equal(back.sinks, rule.sinks)


def test_intervals_read_every_row():
    lo, hi = _intervals(masks()["chunks of 8"][None, None])
    assert lo.tolist() == [pos // 8 * 8 for pos in range(T)] and hi.tolist() == list(range(1, T + 1))


TILE_CASES = [
    ((0, T, 0, T), 512, False), ((3, 30, 2, 20), 7, False), ((0, T, 0, T), 10, True), ((5, 6, 0, T), 4, True),
    ((0, 36, 0, 36), 12, False), ((1, 36, 1, 25), 8, True), ((0, 36, 6, 36), 5, False),  # equal column bins
]


@pytest.mark.parametrize("region, size, per_row", TILE_CASES)
@pytest.mark.parametrize("window", [False, True])
def test_a_tile_is_the_max_pool_of_its_region(region, size, per_row, window):
    pattern = torch.rand(T, T, generator=torch.Generator().manual_seed(7)).tril()
    if window:
        pattern = pattern.triu(-9)  # a sliding window: each block holds only its rows' last 10 keys
    pattern /= pattern.sum(-1, keepdim=True)
    pattern[:, :2] = 0  # blocks hold keys 2.. only: the rest must read as 0
    q0, q1, k0, k1 = region

    def block(start: int) -> Block:
        end = min(q1, start + 6)
        first = max(2, start - 9) if window else 2
        return Block(start, first, pattern[start:end, first:end])

    blocks = [block(start) for start in range(q0, q1, 6)]  # rows come in blocks
    got = torch.from_numpy(tile(blocks, region, size, per_row).astype("float32")) / 65535
    source = pattern / pattern.amax(-1, keepdim=True).clamp(min=1e-30) if per_row else pattern  # a row of zeros stays 0
    want = torch.nn.functional.adaptive_max_pool2d(source[q0:q1, k0:k1][None], (min(size, q1 - q0), min(size, k1 - k0)))[0]
    assert got.shape == want.shape and (got - want).abs().max() <= 0.5 / 65535 + 1e-7


def test_the_entropy_holds_where_a_rows_own_previous_and_first_weights_underflow():
    """log Z is read off a weight the row holds (its own, previous or first key's); where all three are
    0 in float32 (one key takes everything by e^200) the row's denominator is summed again."""
    n_pos = 9
    query = torch.ones(1, 1, n_pos, 1)
    key = torch.zeros(1, 1, n_pos, 1)
    key[0, 0, 4] = 200.0  # every query from 4 on puts all its weight on key 4
    rule = AttentionRule.of_call(torch.nn.Module(), query, key, None, 1.0, None, None, None)
    rows = rule.rows(query[0], key[0], 0)
    want = plain_attention(query[0], key[0], 1.0, masks_of(n_pos)["causal"])
    assert (rows.probs - want).abs().max() < 1e-6 and want[0, 8, 6:].max() == 0  # underflowed, as in HF eager
    assert (rows.entropy - -torch.special.xlogy(want, want).sum(-1)).abs().max() < 1e-4


@pytest.mark.parametrize(
    "change, reason",
    [
        ({"dtype": torch.float16}, "it computes in torch.float16"),
        ({"kwargs": {"position_bias": torch.zeros(1)}}, "its attention takes position_bias"),
        ({"batch": 2}, "a batch of 2"),
        ({"dropout": 0.1}, "it applies dropout"),
    ],
)
def test_a_call_the_kept_path_does_not_model_is_declined_naming_why(change, reason):
    """The reason reaches the user: it is what 422 patterns_too_long names past the stored limit."""
    from loupe.capture import _Recording

    module = torch.nn.Module()
    recording = _Recording({id(module): 0}, lambda *_: None, [0], kept=(lambda *_: None, lambda *_: None))
    tensor = torch.randn(change.get("batch", 1), 2, T, D, dtype=change.get("dtype", torch.float32))
    with pytest.raises(NotModelled, match=reason):
        recording.attend_kept(module, tensor, tensor, tensor, None, None, change.get("dropout", 0.0), change.get("kwargs", {}))
    assert recording.counts == [0]  # declined before the layer counts as fired
