"""`patching`: activation patching from a clean prompt into a corrupted one, per head and per (layer, position)."""

from collections.abc import Callable
from typing import Literal

import torch
from pydantic import BaseModel, Field

from ..errors import InvalidInput
from ..loops import LoopSpec, by_iteration, looping
from ..model_store import LoadedModel
from ..progress import checkpoint
from .registry import AnalysisOutput, Inputs, register, require_text, rounded

LOGIT_BUDGET = 1 << 23  # floats of logits per forward batch (32 MB), as ablation
MAX_BATCH = 32
# Below this gap (nats) between the clean and the corrupted logit difference the metric divides by
# rounding: float32 noise across batch sizes (~1e-5) would be a visible part of every cell.
MIN_GAP = 1e-3

FORMULA = (
    "(LD_patched - LD_corrupted) / (LD_clean - LD_corrupted), LD = logit(correct) - logit(wrong) at the last "
    "position; the corrupted prompt runs with one activation replaced by the clean prompt's at that iteration: "
    "1 = the clean answer restored, 0 = no effect"
)


class PatchingParams(BaseModel):
    corrupted: str = Field(min_length=1, max_length=65536, description="The corrupted prompt: as many tokens as the text (the clean prompt).")
    correct: str = Field(min_length=1, max_length=256, description="The clean prompt's answer: exactly one token (mind a leading space).")
    wrong: str = Field(min_length=1, max_length=256, description="The corrupted prompt's answer: exactly one token.")
    residual: Literal["pre", "post"] = Field("pre", description="The residual stream patched per (layer, position): hook_resid_pre or hook_resid_post.")
    loop: LoopSpec | None = Field(None, description="Loop count, or a retrofit loop of a plain model.")


class Patching(BaseModel):
    tokens: list[str] = Field(description="The clean prompt's tokens.")
    corrupted_tokens: list[str]
    token_ids: list[int]
    corrupted_token_ids: list[int]
    correct: str
    wrong: str
    correct_id: int
    wrong_id: int
    residual_hook: str = Field(description="hook_resid_pre or hook_resid_post: what the residual sweep patches.")
    n_iterations: int
    n_layers: int
    n_heads: int
    attention_layers: list[int] = Field(description="The layers with attention (others, in a hybrid stack, are null).")
    logit_diff_clean: float = Field(description="LD of the clean prompt, in nats.")
    logit_diff_corrupted: float = Field(description="LD of the corrupted prompt, in nats.")
    heads: list[list[list[float | None]]] = Field(description="[iteration][layer][head]: the metric with that head's hook_z patched.")
    resid: list[list[list[float | None]]] = Field(description="[iteration][layer][pos]: the metric with that residual position patched.")
    formula: str


def logit_diff(logits: torch.Tensor, correct: int, wrong: int) -> torch.Tensor:
    """[batch] logit(correct) - logit(wrong) at the last position of logits [batch, pos, d_vocab]."""
    last = logits[:, -1].float()  # [batch, d_vocab]
    return last[:, correct] - last[:, wrong]


def restored(patched: torch.Tensor, clean: float, corrupted: float) -> torch.Tensor:
    """The normalised logit difference: 1 where a patch gives the clean LD back, 0 where it leaves the corrupted one."""
    return (patched - corrupted) / (clean - corrupted)


def answer_id(model: LoadedModel, what: str, text: str) -> int:
    """The one token id `text` is, or InvalidInput naming it and what it splits into."""
    ids = model.tokenizer(text, add_special_tokens=False)["input_ids"]
    if len(ids) != 1:
        pieces = ", ".join(repr(piece) for piece in model.str_tokens(torch.tensor(ids[:8])))
        raise InvalidInput(
            f"The {what} answer {text!r} is {len(ids)} tokens of {model.id} ({pieces}), not one; give a single token "
            "(mind a leading space)."
        )
    return int(ids[0])


# A patch: (kind, firing, layer, index): kind "z" patches head `index`, "resid" position `index`.
Patch = tuple[str, int, int, int]


def _hook_names(model: LoadedModel, residual: str) -> dict[str, tuple[str, int]]:
    """Hook name -> (kind, layer) of every activation the sweeps patch."""
    names = {f"{model.block_names[layer]}.attn.hook_z": ("z", layer) for layer in model.attention_layers}
    names |= {f"{model.block_names[layer]}.hook_resid_{residual}": ("resid", layer) for layer in range(model.n_layers)}
    return names


def _run(model: LoadedModel, tokens: torch.Tensor, loop: LoopSpec | None, names: dict, hook: Callable) -> torch.Tensor:
    """Logits [batch, pos, d_vocab] of one pass with `hook(kind, layer)` on every hook in `names`."""
    model.require_bridge()
    hooks = [(name, hook(kind, layer)) for name, (kind, layer) in names.items()]
    with torch.inference_mode(), looping(model, loop):
        return model.bridge.run_with_hooks(tokens, fwd_hooks=hooks, reset_hooks_end=True, use_cache=False)


@register("patching", version=1, params=PatchingParams, needs=("text", "causal_lm", "attention"))
def patching(model: LoadedModel, params: PatchingParams, inputs: Inputs) -> AnalysisOutput:
    """Activation patching: runs the corrupted prompt with one activation of the clean prompt (the
    text) put back, one head's output (hook_z) or one residual position, at one iteration (the
    k-th firing of a layer's hook), and reports how much of the clean logit difference between two
    answer tokens that restores. A batch of copies of the corrupted prompt runs in one pass, each
    with a different patch."""
    clean_tokens = model.tokenize(require_text(inputs), inputs.max_tokens)  # [1, pos]
    corrupted_tokens = model.tokenize(params.corrupted, inputs.max_tokens)  # [1, pos]
    if clean_tokens.shape[1] != corrupted_tokens.shape[1]:
        raise InvalidInput(
            f"The clean text is {clean_tokens.shape[1]} tokens and the corrupted one {corrupted_tokens.shape[1]} "
            "(BOS included); patching pairs their positions, so they must be equally long."
        )
    correct, wrong = answer_id(model, "correct", params.correct), answer_id(model, "wrong", params.wrong)
    if correct == wrong:
        raise InvalidInput(f"The correct and the wrong answer are the same token ({params.correct!r}): their logit difference is 0.")
    names = _hook_names(model, params.residual)

    cache: dict[tuple[str, int, int], torch.Tensor] = {}  # (kind, firing, layer) -> the clean activation [1, pos, ...]
    counts: dict[tuple[str, int], int] = {}

    def record(kind: str, layer: int) -> Callable:
        def hook(activation: torch.Tensor, hook) -> torch.Tensor:
            checkpoint()
            firing = counts.get((kind, layer), 0)
            cache[kind, firing, layer] = activation.detach().clone()
            counts[kind, layer] = firing + 1
            return activation

        return hook

    clean = float(logit_diff(_run(model, clean_tokens, params.loop, names, record), correct, wrong)[0])
    corrupted = float(logit_diff(_run(model, corrupted_tokens, params.loop, {}, record), correct, wrong)[0])
    if abs(clean - corrupted) < MIN_GAP:
        raise InvalidInput(
            f"The logit difference {params.correct!r} - {params.wrong!r} is {clean:.6g} on the clean text and {corrupted:.6g} "
            "on the corrupted one: with nothing to restore, the normalised metric is undefined."
        )

    n_pos = clean_tokens.shape[1]
    patches: list[Patch] = [
        (kind, firing, layer, index)
        for (kind, layer), fired in sorted(counts.items(), key=lambda item: (item[0][1], item[0][0]))
        for firing in range(fired)
        for index in range(model.n_heads if kind == "z" else n_pos)
    ]
    size = max(1, min(MAX_BATCH, LOGIT_BUDGET // (n_pos * model.bridge.cfg.d_vocab)))
    values: list[float] = []
    for start in range(0, len(patches), size):
        checkpoint()
        batch = patches[start : start + size]
        fired: dict[tuple[str, int], int] = {}

        def patch(kind: str, layer: int) -> Callable:
            rows = [(row, firing, index) for row, (k, firing, at, index) in enumerate(batch) if (k, at) == (kind, layer)]

            def hook(activation: torch.Tensor, hook) -> torch.Tensor:  # z: [batch, pos, head, d_head]; resid: [batch, pos, d_model]
                firing_now = fired.get((kind, layer), 0)
                fired[kind, layer] = firing_now + 1
                mine = [(row, index) for row, firing, index in rows if firing == firing_now]
                if not mine:
                    return activation
                activation = activation.clone()
                source = cache[kind, firing_now, layer][0]  # [pos, head, d_head] or [pos, d_model]
                for row, index in mine:
                    if kind == "z":
                        activation[row, :, index] = source[:, index]
                    else:
                        activation[row, index] = source[index]
                return activation

            return hook

        logits = _run(model, corrupted_tokens.expand(len(batch), -1).contiguous(), params.loop, names, patch)
        values += restored(logit_diff(logits, correct, wrong), clean, corrupted).tolist()
        inputs.progress("patching", (start + len(batch)) / len(patches))

    heads: dict[tuple[int, int], list[float]] = {}
    resid: dict[tuple[int, int], list[float]] = {}
    for (kind, firing, layer, index), value in zip(patches, values):
        kept, width = (heads, model.n_heads) if kind == "z" else (resid, n_pos)
        kept.setdefault((firing, layer), [0.0] * width)[index] = value
    head_grid = torch.tensor(by_iteration(heads, model.n_layers))  # [iteration, layer, head]
    resid_grid = torch.tensor(by_iteration(resid, model.n_layers))  # [iteration, layer, pos]
    if head_grid.shape[0] != resid_grid.shape[0]:
        raise RuntimeError(f"hook_z and the residual fired {head_grid.shape[0]} and {resid_grid.shape[0]} iterations")
    return AnalysisOutput(
        result=Patching(
            tokens=model.str_tokens(clean_tokens[0]),
            corrupted_tokens=model.str_tokens(corrupted_tokens[0]),
            token_ids=clean_tokens[0].tolist(),
            corrupted_token_ids=corrupted_tokens[0].tolist(),
            correct=params.correct,
            wrong=params.wrong,
            correct_id=correct,
            wrong_id=wrong,
            residual_hook=f"hook_resid_{params.residual}",
            n_iterations=head_grid.shape[0],
            n_layers=model.n_layers,
            n_heads=model.n_heads,
            attention_layers=model.attention_layers,
            logit_diff_clean=round(clean, 6),
            logit_diff_corrupted=round(corrupted, 6),
            heads=rounded(head_grid, 6),
            resid=rounded(resid_grid, 6),
            formula=FORMULA,
        )
    )
