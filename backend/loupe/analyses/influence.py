"""TracIn on one attention head's own parameters: plain torch on a Hugging Face GPT-2, testable without Loupe.

A head's parameters in GPT-2 are slices of shared tensors: its columns of the fused `c_attn`
(query, key and value, weight and bias) and its rows of `c_proj` (W_O). The functions here put
separate leaf tensors in those slices (`with_head`), so a gradient or a forward-mode derivative is
taken with respect to the head's parameters only, never computed for the rest and then masked.
"""

import torch
import torch.nn.functional as F
from torch.func import functional_call, jvp

from .scores import score_heads

Slices = dict[str, tuple[int, torch.Tensor]]  # parameter name -> (dim, indices) of the head's part


def head_slices(config, layer: int, head: int) -> Slices:
    """Where head `head` of layer `layer` lives in a GPT-2's parameters: its query, key and value
    columns of c_attn (Conv1D weight [d_model, 3 * d_model], bias [3 * d_model]) and its rows of
    c_proj's weight ([d_model (head inputs), d_model]); c_proj's bias is shared by all heads."""
    d_model, d_head = config.n_embd, config.n_embd // config.n_head
    cols = torch.cat([torch.arange(k * d_model + head * d_head, k * d_model + (head + 1) * d_head) for k in range(3)])
    rows = torch.arange(head * d_head, (head + 1) * d_head)
    prefix = f"transformer.h.{layer}.attn"
    return {f"{prefix}.c_attn.weight": (1, cols), f"{prefix}.c_attn.bias": (0, cols), f"{prefix}.c_proj.weight": (0, rows)}


def head_values(model: torch.nn.Module, slices: Slices) -> tuple[torch.Tensor, ...]:
    """The head's parameters as separate tensors (copies), in `slices` order."""
    params = dict(model.named_parameters())
    return tuple(params[name].detach().index_select(dim, idx).clone() for name, (dim, idx) in slices.items())


def with_head(model: torch.nn.Module, slices: Slices, values: tuple[torch.Tensor, ...]) -> dict[str, torch.Tensor]:
    """The model's sliced parameters with `values` in the head's slices: differentiable in `values`
    only (the rest of each tensor is detached)."""
    params = dict(model.named_parameters())
    return {name: params[name].detach().index_copy(dim, idx, value) for (name, (dim, idx)), value in zip(slices.items(), values)}


def induction_score(model, slices: Slices, values, tokens: torch.Tensor, layer: int, head: int, seq_len: int) -> torch.Tensor:
    """[]: the head's induction score (scores.score_heads) on repeated random tokens [batch, 1 + 2S],
    from the model's eager attention pattern, differentiable in the head's `values`."""
    out = functional_call(model, with_head(model, slices, values), (tokens,), {"output_attentions": True})
    pattern = out.attentions[layer][:, head : head + 1]  # [batch, 1, query_pos, key_pos]
    return score_heads(pattern, seq_len)["induction"][0]


def token_losses(logits: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """[batch, pos - 1]: next-token cross-entropy; column j is the loss of target x[:, j + 1]."""
    return F.cross_entropy(logits[:, :-1].transpose(1, 2), x[:, 1:], reduction="none")


def score_gradient(model, slices: Slices, tokens: torch.Tensor, layer: int, head: int, seq_len: int):
    """(score, ∇ of the head's induction score w.r.t. the head's parameters, a tuple in `slices` order)."""
    values = tuple(v.requires_grad_() for v in head_values(model, slices))
    score = induction_score(model, slices, values, tokens, layer, head, seq_len)
    # W_O (c_proj) does not reach the head's own pattern: its gradient is zero, not absent
    return score.detach(), torch.autograd.grad(score, values, materialize_grads=True)


def loss_derivatives(model, slices: Slices, x: torch.Tensor, direction: tuple[torch.Tensor, ...]) -> torch.Tensor:
    """[batch, pos - 1]: ⟨direction, ∇_head ℓ_t(x_b)⟩ for every row b and target position t, one
    forward-mode pass (a Jacobian-vector product): each row's per-token loss along `direction`."""
    values = head_values(model, slices)

    def losses(*head):
        return token_losses(functional_call(model, with_head(model, slices, head), (x,)).logits, x)

    return jvp(losses, values, tuple(direction))[1].detach()


def loss_gradient(model, slices: Slices, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """∇ w.r.t. the head's parameters of the mean next-token loss of rows x [batch, pos] (reverse mode)."""
    values = tuple(v.requires_grad_() for v in head_values(model, slices))
    loss = token_losses(functional_call(model, with_head(model, slices, values), (x,)).logits, x).mean()
    return torch.autograd.grad(loss, values)
