"""The layers Loupe's own looped architectures share: float32 RMSNorm, eager grouped-query attention
(the function Loupe's capture calls where it needs a model's own math), and RoPE frequencies."""

from typing import Any

import torch
from torch import nn


class RMSNorm(nn.Module):
    """x / rms(x) in float32, cast back, times the weight (no +1 offset)."""

    def __init__(self, d_model: int, eps: float = 1e-6):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(d_model))
        self.variance_epsilon = eps  # the name transformers' norms and TransformerLens' norm bridge read

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x32 = x.float()
        return self.weight * (x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + self.variance_epsilon)).to(x.dtype)


def eager_attention_forward(
    module: nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    scaling: float,
    dropout: float = 0.0,
    pattern_fn: Any = None,
    **kwargs: Any,
) -> tuple[torch.Tensor, torch.Tensor]:
    """softmax(q k^T * scaling + mask) v over query [batch, head, q, d_head], key/value [batch,
    kv_head, k, d_head], each key/value head serving `module.num_key_value_groups` query heads.
    Returns (output [batch, q, head, d_head], probabilities [batch, head, q, k]); `pattern_fn` (a
    bridge's hook_pattern) may replace the probabilities before they weight the values."""
    groups = module.num_key_value_groups  # query heads per key/value head
    if groups != 1:
        key, value = key.repeat_interleave(groups, dim=1), value.repeat_interleave(groups, dim=1)  # [batch, head, k, d_head]
    scores = torch.matmul(query, key.transpose(2, 3)) * scaling  # [batch, head, q, k]
    if attention_mask is not None:
        scores = scores + attention_mask[..., : key.shape[-2]]
    elif query.shape[2] > 1:  # sdpa's mask is None (causal by flag); a bridge's hook_pattern runs this instead
        n_q, n_k = query.shape[2], key.shape[2]
        future = torch.ones(n_q, n_k, dtype=torch.bool, device=scores.device).triu(n_k - n_q + 1)
        scores = scores.masked_fill(future, torch.finfo(scores.dtype).min)
    probs = nn.functional.softmax(scores, dim=-1, dtype=torch.float32).to(query.dtype)
    probs = nn.functional.dropout(probs, p=dropout, training=module.training)
    if pattern_fn is not None:
        probs = pattern_fn(probs)
    return torch.matmul(probs, value).transpose(1, 2).contiguous(), probs  # [batch, q, head, d_head]


def rope_inverse_frequencies(head_dim: int, base: float, device: Any = None) -> torch.Tensor:
    """[head_dim / 2] float32: base^(-2i / head_dim), the angle per position of each rotated pair
    (both architectures' RoPE; they lay the pairs out differently)."""
    return 1.0 / (base ** (torch.arange(0, head_dim, 2, dtype=torch.float32, device=device) / head_dim))
