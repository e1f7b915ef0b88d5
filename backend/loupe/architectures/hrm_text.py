"""HRM-Text (Sapient Intelligence's hierarchical reasoning model), in transformers' own classes.

Two stacks of `num_layers_per_stack` layers with their own weights: a fast one (L) and a slow one
(H). Per forward, H_cycles times: the L stack runs L_cycles times on (z_L + z_H), then the H stack
once on (z_H + z_L). Loupe numbers the layers L stack first, then H (`L_blocks.{i}`, then
`H_blocks.{i}` in TransformerLens' bridge), and counts an iteration per run of the L stack: the H
stack runs in the last iteration of each H cycle, and its layers show nothing in the others
(loops.by_iteration). So n_iterations = H_cycles x L_cycles. transformers' config rewrites
`num_hidden_layers` to the KV-cache slot count, which is no layer count.

Its output is the unembedding of the H stack's output (z_H, normed by the stack's final norm), so
its own exit after an H cycle is that of the z_H the cycle leaves: read where the H stack ran, at
the last layer, and nowhere else (`exit_logits`).
"""

from pathlib import Path
from typing import Any

import torch

from . import Facts


def facts(config: dict) -> Facts:
    per_stack = int(config["num_layers_per_stack"])
    return Facts(
        n_layers=2 * per_stack,
        n_heads=int(config["num_attention_heads"]),
        n_iterations=int(config.get("H_cycles", 2)) * int(config.get("L_cycles", 2)),
        n_ctx=int(config.get("max_position_embeddings", 0)),
        fixed_loop=True,
        own_exit=True,
    )


def exit_logits(hf: Any, input_ids: torch.Tensor) -> torch.Tensor:
    """[iteration, batch, pos, d_vocab]: the model's output had it stopped after each H cycle (its
    LM head on the z_H that cycle leaves), at the iteration ending that cycle; NaN at the others."""
    config = hf.config
    states: list[torch.Tensor] = []
    handle = hf.model.H_module.register_forward_hook(lambda module, args, output: states.append(output))
    try:
        hf(input_ids, use_cache=False)
    finally:
        handle.remove()
    per_cycle = torch.stack([hf.lm_head(state) for state in states])  # [H_cycles, batch, pos, d_vocab]
    exits = per_cycle.new_full((config.H_cycles * config.L_cycles, *per_cycle.shape[1:]), float("nan"))
    exits[config.L_cycles - 1 :: config.L_cycles] = per_cycle
    return exits


def boot(path: Path, device: str = "cpu") -> Any:
    """transformers' HrmTextForCausalLM wrapped by TransformerLens' HRM-Text adapter."""
    from transformer_lens.model_bridge import TransformerBridge

    return TransformerBridge.boot_transformers(str(path), device=device)
