"""HRM-Text (Sapient Intelligence's hierarchical reasoning model), in transformers' own classes.

Two stacks of `num_layers_per_stack` layers with their own weights: a fast one (L) and a slow one
(H). Per forward, H_cycles times: the L stack runs L_cycles times on (z_L + z_H), then the H stack
once on (z_H + z_L). Loupe numbers the layers L stack first, then H (`L_blocks.{i}`, then
`H_blocks.{i}` in TransformerLens' bridge), and counts an iteration per run of the L stack: the H
stack runs in the last iteration of each H cycle, and its layers show nothing in the others
(loops.by_iteration). So n_iterations = H_cycles x L_cycles. transformers' config rewrites
`num_hidden_layers` to the KV-cache slot count, which is no layer count.
"""

from pathlib import Path
from typing import Any

from . import Facts


def facts(config: dict) -> Facts:
    per_stack = int(config["num_layers_per_stack"])
    return Facts(
        n_layers=2 * per_stack,
        n_heads=int(config["num_attention_heads"]),
        n_iterations=int(config.get("H_cycles", 2)) * int(config.get("L_cycles", 2)),
        n_ctx=int(config.get("max_position_embeddings", 0)),
        fixed_loop=True,
    )


def boot(path: Path, device: str = "cpu") -> Any:
    """transformers' HrmTextForCausalLM wrapped by TransformerLens' HRM-Text adapter."""
    from transformer_lens.model_bridge import TransformerBridge

    return TransformerBridge.boot_transformers(str(path), device=device)
