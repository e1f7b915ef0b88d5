"""`logit_lens`: the tokens each iteration's (and each layer's) residual would say, through the early-exit readout."""

import torch
from pydantic import BaseModel, Field

from ..errors import InvalidInput
from ..loops import LoopSpec, capture_residuals, exit_logits, loop_layers, readout
from ..model_store import LoadedModel
from .registry import AnalysisOutput, Inputs, register, require_text, rounded


class LogitLensParams(BaseModel):
    position: int = Field(-1, ge=-4096, le=4096, description="Token position read; negative counts from the end.")
    top_k: int = Field(5, ge=1, le=20, description="Tokens listed per iteration and layer.")
    loop: LoopSpec | None = Field(None, description="Loop count, or a retrofit loop of a plain model.")


class LogitLens(BaseModel):
    tokens: list[str]
    token_ids: list[int]
    position: int = Field(description="The index read, in `tokens`.")
    n_iterations: int
    n_layers: int
    loop_layers: list[int] = Field(description="[start, end]: the looped layers; `end` is the early-exit layer.")
    # [iteration][layer][k]
    top_tokens: list[list[list[str]]]
    top_token_ids: list[list[list[int]]]
    top_probs: list[list[list[float]]]
    # what the text itself continues with, when `position` is not the last token
    next_token: str | None
    next_token_prob: list[list[float | None]] | None = Field(description="[iteration][layer] probability of `next_token`.")
    next_token_rank: list[list[int | None]] | None = Field(description="[iteration][layer] its rank, 0 = top.")
    exit_only: bool = Field(
        False,
        description="Only the exit layer is read (the model's own exit is more than norm and unembedding, as "
        "Huginn's coda); the other layers' cells are empty.",
    )


def _where_read(grid: list[list], read: list[list[bool]], empty: object) -> list[list]:
    """[iteration][layer] cells of `grid`, `empty` where the layer is not read."""
    return [[cell if ok else empty for cell, ok in zip(row, oks)] for row, oks in zip(grid, read)]


@register("logit_lens", version=1, params=LogitLensParams, needs=("text", "readout", "unembedding", "causal_lm"))
def logit_lens(model: LoadedModel, params: LogitLensParams, inputs: Inputs) -> AnalysisOutput:
    """Top tokens decoded from the residual stream at one position after every layer of every
    iteration, through the model's own final norm and unembedding (early exit). The last looped
    layer's row is what the model would answer if it stopped after that iteration; for a natively
    looped model at its last iteration it is the model's output."""
    tokens = model.tokenize(require_text(inputs), inputs.max_tokens)  # [1, pos]
    n_pos = tokens.shape[1]
    if not -n_pos <= params.position < n_pos:
        raise InvalidInput(f"position {params.position} is outside the text's {n_pos} tokens.")
    index = params.position % n_pos
    inputs.progress("forward", 0.1)
    start, end = loop_layers(model, params.loop)
    if model.entry.own_exit:  # the model's own exit, at the exit layer only: NaN elsewhere
        exits = exit_logits(model, tokens, torch.tensor([index]), params.loop)[:, 0, 0]  # [iteration, d_vocab]
        probs = torch.full((exits.shape[0], model.n_layers, exits.shape[-1]), float("nan"))
        probs[:, end] = exits.softmax(-1)
    else:
        _, resid = capture_residuals(model, tokens, torch.tensor([index]), params.loop)  # [iteration, layer, 1, 1, d_model]
        inputs.progress("decoding", 0.7)
        probs = readout(model, resid[:, :, 0, 0]).softmax(-1)  # [iteration, layer, d_vocab]
    read = (~probs[..., 0].isnan()).tolist()  # [iteration][layer]: False where the layer is not read
    top = probs.topk(params.top_k, dim=-1)  # each [iteration, layer, k]
    ids = top.indices.tolist()
    next_token = next_prob = next_rank = None
    if index + 1 < n_pos:
        target = int(tokens[0, index + 1])
        next_token = model.str_tokens(tokens[0, index + 1 : index + 2])[0]
        target_prob = probs[..., target]  # [iteration, layer]
        next_prob = rounded(target_prob, 5)
        next_rank = _where_read((probs > target_prob[..., None]).sum(-1).tolist(), read, None)
    ids, values = _where_read(ids, read, []), _where_read(rounded(top.values, 5), read, [])
    decode = model.tokenizer.decode
    return AnalysisOutput(
        result=LogitLens(
            tokens=model.str_tokens(tokens[0]),
            token_ids=tokens[0].tolist(),
            position=index,
            n_iterations=probs.shape[0],
            n_layers=probs.shape[1],
            loop_layers=[start, end],
            top_tokens=[[[decode([i]) for i in layer] for layer in iteration] for iteration in ids],
            top_token_ids=ids,
            top_probs=values,
            next_token=next_token,
            next_token_prob=next_prob,
            next_token_rank=next_rank,
            exit_only=model.entry.own_exit,
        )
    )
