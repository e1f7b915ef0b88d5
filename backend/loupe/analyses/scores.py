"""Head-score formulas on attention patterns: tensor-only, testable without a model.

All patterns are indexed `[..., batch, head, query_pos, key_pos]` over a repeated random
sequence laid out as `BOS, t_1 .. t_S, t_1 .. t_S` (length 1 + 2S), so position p >= 1 holds
token t_((p-1) mod S + 1), and the second copy spans positions S+1 .. 2S.
"""

import torch

SCORE_NAMES = ("induction", "previous_token", "duplicate_token", "bos")

SCORE_FORMULAS = {
    "induction": "mean over batch and over query positions i in the second copy (S+1..2S) "
    "of pattern[i, i-S+1]: attention to the token right after the earlier occurrence of the current token",
    "previous_token": "mean over batch and over query positions i = 2..2S of pattern[i, i-1]: "
    "attention to the immediately preceding token (BOS excluded as a target)",
    "duplicate_token": "mean over batch and over query positions i in the second copy (S+1..2S) "
    "of pattern[i, i-S]: attention to the earlier occurrence of the current token",
    "bos": "mean over batch and over query positions i = 1..2S of pattern[i, 0]: the share of attention "
    "that sinks into the first token (BOS)",
}


def _mean_diagonal(pattern: torch.Tensor, queries: torch.Tensor, offset: int) -> torch.Tensor:
    """Mean of pattern[..., q, q - offset] over the given query positions, batch and queries."""
    keys = queries - offset
    picked = pattern[..., queries, keys]  # [..., batch, head, n_queries]
    return picked.float().mean(dim=-1).mean(dim=-2)  # [..., batch, head] -> [..., head]


def score_heads(pattern: torch.Tensor, seq_len: int) -> dict[str, torch.Tensor]:
    """Induction, previous-token, duplicate-token and BOS-sink score of every head.

    pattern: [..., batch, head, query_pos, key_pos] with query_pos = key_pos = 1 + 2 * seq_len.
    Returns one tensor [..., head] per name in SCORE_NAMES, each in [0, 1].
    """
    n_pos = pattern.shape[-1]
    if n_pos != 1 + 2 * seq_len or pattern.shape[-2] != n_pos:
        raise ValueError(f"pattern has {n_pos} positions; expected 1 + 2 * {seq_len}")
    second_copy = torch.arange(seq_len + 1, 2 * seq_len + 1)
    return {
        "induction": _mean_diagonal(pattern, second_copy, seq_len - 1),
        "previous_token": _mean_diagonal(pattern, torch.arange(2, 2 * seq_len + 1), 1),
        "duplicate_token": _mean_diagonal(pattern, second_copy, seq_len),
        "bos": pattern[..., 1:, 0].float().mean(dim=-1).mean(dim=-2),  # [..., batch, head] -> [..., head]
    }


def repeated_random_tokens(
    vocab: torch.Tensor, batch: int, seq_len: int, bos_token_id: int, seed: int
) -> torch.Tensor:
    """[batch, 1 + 2 * seq_len] token ids: BOS then a random sequence drawn from `vocab`, twice."""
    generator = torch.Generator().manual_seed(seed)
    picks = torch.randint(0, len(vocab), (batch, seq_len), generator=generator)
    half = vocab[picks]  # [batch, seq_len]
    bos = torch.full((batch, 1), bos_token_id, dtype=torch.long)
    return torch.cat([bos, half, half], dim=1)  # [batch, 1 + 2 * seq_len]
