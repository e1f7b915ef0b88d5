"""`head_ablation`: how much the text's next-token loss rises when one head is zeroed at one iteration."""

from collections.abc import Callable

import torch
from pydantic import BaseModel, Field

from ..loops import LoopSpec, by_iteration, looping
from ..model_store import LoadedModel
from ..progress import checkpoint
from .registry import AnalysisOutput, Inputs, register, require_text, rounded

LOGIT_BUDGET = 1 << 23  # floats of logits per forward batch (32 MB): bounds memory on large vocabularies
MAX_BATCH = 32

FORMULA = (
    "mean next-token cross-entropy (nats) over the text with the head's output (hook_z) set to zero at "
    "that iteration, minus the same loss of the model as it is; positive: the head helps predict the text"
)


class HeadAblationParams(BaseModel):
    loop: LoopSpec | None = Field(None, description="Loop count, or a retrofit loop of a plain model.")


class HeadAblation(BaseModel):
    tokens: list[str]
    token_ids: list[int]
    n_iterations: int
    n_layers: int
    n_heads: int
    loss: float = Field(description="Mean next-token loss of the model as it is, in nats.")
    attention_layers: list[int] = Field(description="The layers with attention (others, in a hybrid stack, are null).")
    delta_loss: list[list[list[float | None]]] = Field(description="[iteration][layer][head]: ablated loss - loss.")
    formula: str


def next_token_loss(logits: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
    """[batch] mean cross-entropy of logits [batch, pos, d_vocab] predicting tokens [1, pos] one ahead."""
    targets = tokens[0, 1:].expand(logits.shape[0], -1)  # [batch, pos - 1]
    return torch.nn.functional.cross_entropy(logits[:, :-1].transpose(1, 2).float(), targets, reduction="none").mean(-1)


def _run(model: LoadedModel, tokens: torch.Tensor, loop: LoopSpec | None, hook: Callable) -> torch.Tensor:
    """Logits [batch, pos, d_vocab] of one pass with `hook(layer)` on every layer's hook_z."""
    model.require_bridge()
    hooks = [(f"{model.block_names[layer]}.attn.hook_z", hook(layer)) for layer in model.attention_layers]
    with torch.inference_mode(), looping(model, loop):
        return model.bridge.run_with_hooks(tokens, fwd_hooks=hooks, reset_hooks_end=True, use_cache=False)


@register("head_ablation", version=1, params=HeadAblationParams, needs=("text", "causal_lm", "attention"))
def head_ablation(model: LoadedModel, params: HeadAblationParams, inputs: Inputs) -> AnalysisOutput:
    """Zero-ablates every head at every iteration, one at a time, and reports how much the mean
    next-token loss on the text rises. A batch of copies of the text runs in one forward pass,
    each copy with a different (iteration, layer, head) zeroed in its hook_z; a layer that fires
    once in a looped pass (outside a retrofit loop) is ablated at that one firing."""
    tokens = model.tokenize(require_text(inputs), inputs.max_tokens)  # [1, pos]
    counts = [0] * model.n_layers

    def count(layer: int) -> Callable:
        def hook(z: torch.Tensor, hook) -> torch.Tensor:  # z: [batch, pos, head, d_head]
            counts[layer] += 1
            return z

        return hook

    clean = float(next_token_loss(_run(model, tokens, params.loop, count), tokens)[0])
    ablations = [(firing, layer, head) for layer in range(model.n_layers) for firing in range(counts[layer]) for head in range(model.n_heads)]
    size = max(1, min(MAX_BATCH, LOGIT_BUDGET // (tokens.shape[1] * model.bridge.cfg.d_vocab)))
    losses: list[float] = []
    for start in range(0, len(ablations), size):
        checkpoint()
        batch = ablations[start : start + size]
        fired = [0] * model.n_layers

        def ablate(layer: int) -> Callable:
            def hook(z: torch.Tensor, hook) -> torch.Tensor:
                for row, (firing, at, head) in enumerate(batch):
                    if at == layer and firing == fired[layer]:
                        z[row, :, head] = 0.0
                fired[layer] += 1
                return z

            return hook

        logits = _run(model, tokens.expand(len(batch), -1).contiguous(), params.loop, ablate)  # [batch, pos, d_vocab]
        losses += next_token_loss(logits, tokens).tolist()
        inputs.progress("ablating", (start + len(batch)) / len(ablations))
    kept: dict[tuple[int, int], list[float]] = {}
    for (firing, layer, head), loss in zip(ablations, losses):
        kept.setdefault((firing, layer), [0.0] * model.n_heads)[head] = loss - clean
    delta = torch.tensor(by_iteration(kept, model.n_layers))  # [iteration, layer, head]
    return AnalysisOutput(
        result=HeadAblation(
            tokens=model.str_tokens(tokens[0]),
            token_ids=tokens[0].tolist(),
            n_iterations=delta.shape[0],
            n_layers=model.n_layers,
            n_heads=model.n_heads,
            attention_layers=model.attention_layers,
            loss=round(clean, 6),
            delta_loss=rounded(delta, 6),
            formula=FORMULA,
        )
    )
