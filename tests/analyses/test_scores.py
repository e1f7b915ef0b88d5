"""The head-score formulas on hand-built patterns with known answers."""

import pytest
import torch

from loupe.analyses.scores import repeated_random_tokens, score_heads

S = 5
T = 1 + 2 * S


def _pattern_attending(offset_for_query) -> torch.Tensor:
    """[batch=2, head=1, T, T]: each query q attends fully to key offset_for_query(q) (or BOS)."""
    pattern = torch.zeros(2, 1, T, T)
    for q in range(T):
        key = offset_for_query(q)
        pattern[:, 0, q, key if 0 <= key <= q else 0] = 1.0
    return pattern


def test_perfect_induction_head_scores_one_on_induction_only():
    pattern = _pattern_attending(lambda q: q - S + 1 if q > S else 0)
    scores = score_heads(pattern, S)
    assert scores["induction"].item() == pytest.approx(1.0)
    assert scores["duplicate_token"].item() == pytest.approx(0.0)
    assert scores["previous_token"].item() < 0.2


def test_previous_token_head():
    scores = score_heads(_pattern_attending(lambda q: q - 1), S)
    assert scores["previous_token"].item() == pytest.approx(1.0)
    assert scores["induction"].item() == pytest.approx(0.0)
    assert scores["duplicate_token"].item() == pytest.approx(0.0)


def test_duplicate_token_head():
    scores = score_heads(_pattern_attending(lambda q: q - S if q > S else 0), S)
    assert scores["duplicate_token"].item() == pytest.approx(1.0)
    assert scores["induction"].item() == pytest.approx(0.0)


def test_uniform_attention_gives_mean_of_one_over_visible_keys():
    pattern = torch.tril(torch.ones(T, T))
    pattern = (pattern / pattern.sum(-1, keepdim=True))[None, None]  # [1, 1, T, T]
    scores = score_heads(pattern, S)
    second_copy = torch.arange(S + 1, 2 * S + 1).float()
    assert scores["induction"].item() == pytest.approx((1 / (second_copy + 1)).mean().item())


def test_leading_axes_are_kept():
    pattern = _pattern_attending(lambda q: q - 1)[None, None].expand(3, 2, 2, 1, T, T)  # [iter, layer, batch, head, T, T]
    assert score_heads(pattern, S)["previous_token"].shape == (3, 2, 1)


def test_wrong_length_is_rejected():
    with pytest.raises(ValueError):
        score_heads(torch.zeros(1, 1, T + 1, T + 1), S)


def test_repeated_random_tokens_layout():
    tokens = repeated_random_tokens(torch.arange(10, 20), batch=3, seq_len=S, bos_token_id=0, seed=1)
    assert tokens.shape == (3, T)
    assert (tokens[:, 0] == 0).all()
    assert torch.equal(tokens[:, 1 : S + 1], tokens[:, S + 1 :])
    assert ((tokens[:, 1:] >= 10) & (tokens[:, 1:] < 20)).all()
    assert torch.equal(tokens, repeated_random_tokens(torch.arange(10, 20), 3, S, 0, seed=1))


def test_bos_sink_is_the_mean_attention_to_position_zero():
    scores = score_heads(_pattern_attending(lambda q: 0 if q % 2 else q - 1), S)  # odd queries sink into BOS
    assert scores["bos"].item() == pytest.approx(S / (2 * S))  # queries 1..2S: S of them odd
