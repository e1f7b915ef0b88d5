"""`logit_lens`: the tokens each iteration's (and each layer's) residual would say, through the early-exit readout."""

import torch
from pydantic import BaseModel, Field

from ..errors import InvalidInput, TooLong
from ..loops import LoopSpec, by_iteration, capture_residuals, exit_logits, loop_layers, looping, readout, resid_hook_names, run_recording
from ..model_store import LoadedModel
from .registry import AnalysisOutput, Inputs, register, require_text, rounded

GRID_K = 5  # tokens kept per cell of the every-position grid
LOGIT_BUDGET = 1 << 22  # floats of logits decoded at once (16 MB): positions are read in chunks of this
OWN_EXIT_BUDGET = 1 << 27  # floats of a whole own-exit pass (iteration x pos x d_vocab) read at every position


class LogitLensParams(BaseModel):
    position: int = Field(-1, ge=-4096, le=4096, description="Token position read; negative counts from the end.")
    top_k: int = Field(5, ge=1, le=20, description="Tokens listed per iteration and layer.")
    loop: LoopSpec | None = Field(None, description="Loop count, or a retrofit loop of a plain model.")
    all_positions: bool = Field(
        False, description=f"Read every position: a position x layer grid per iteration of the top {GRID_K} tokens."
    )


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
    # every position (all_positions): [iteration][layer][pos][k], the top GRID_K; [] where the layer is not read
    grid_ids: list[list[list[list[int]]]] | None = None
    grid_probs: list[list[list[list[float]]]] | None = None
    grid_tokens: dict[int, str] | None = Field(None, description="The text of every token id in `grid_ids`.")


def _where_read(grid: list[list], read: list[list[bool]], empty: object) -> list[list]:
    """[iteration][layer] cells of `grid`, `empty` where the layer is not read."""
    return [[cell if ok else empty for cell, ok in zip(row, oks)] for row, oks in zip(grid, read)]


@register("logit_lens", version=2, params=LogitLensParams, needs=("text", "readout", "unembedding", "causal_lm"))
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
    if params.all_positions:
        return _every_position(model, tokens, index, params, (start, end), inputs)
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


def _top(logits: torch.Tensor) -> torch.Tensor:
    """[..., GRID_K, 2] float64 (token id, probability) of the top tokens of logits [..., d_vocab]."""
    top = logits.float().softmax(-1).topk(GRID_K, dim=-1)
    return torch.stack([top.indices.double(), top.values.double()], -1)


def every_position_top(model: LoadedModel, tokens: torch.Tensor, loop: LoopSpec | None) -> torch.Tensor:
    """[iteration, layer, pos, GRID_K, 2] (id, probability) of the early exit's top tokens at every
    position after every layer of every iteration; NaN where a layer is not read. Each firing is read
    out inside its hook, a chunk of positions at a time, and only its top tokens are kept: memory is
    one chunk of logits, not positions x layers x iterations x d_vocab."""
    n_pos, d_vocab = tokens.shape[1], model.bridge.cfg.d_vocab
    if model.entry.own_exit:  # the model's own exit, at the exit layer only
        n_iterations = model.n_iterations if loop is None or loop.times is None else loop.times
        if n_iterations * n_pos * d_vocab > OWN_EXIT_BUDGET:
            raise TooLong(
                f"{model.id}'s own exit gives all its logits at once: {n_iterations} iterations x {n_pos} tokens x "
                f"{d_vocab} is past the {OWN_EXIT_BUDGET} floats read at every position; shorten the text or the loop."
            )
        exits = _top(exit_logits(model, tokens, torch.arange(n_pos), loop)[:, 0])  # [iteration, pos, k, 2]
        grid = torch.full((exits.shape[0], model.n_layers, *exits.shape[1:]), float("nan"), dtype=torch.float64)
        grid[:, loop_layers(model, loop)[1]] = exits
        return grid
    chunk = max(1, LOGIT_BUDGET // d_vocab)

    def keep(resid: torch.Tensor, name: str) -> torch.Tensor:  # resid: [1, pos, d_model]
        return torch.cat([_top(readout(model, resid[0, at : at + chunk].float())) for at in range(0, n_pos, chunk)])

    names = resid_hook_names(model)
    with looping(model, loop):
        _, firings = run_recording(model, tokens, names, keep=keep)
    kept = {(firing, layer): value for layer, name in enumerate(names) for firing, value in enumerate(firings[name])}
    return torch.stack([torch.stack(row) for row in by_iteration(kept, len(names))])  # [iteration, layer, pos, k, 2]


def _every_position(
    model: LoadedModel, tokens: torch.Tensor, index: int, params: LogitLensParams, layers: tuple[int, int], inputs: Inputs
) -> AnalysisOutput:
    """The lens at every position; the single-position fields read from the grid at `index` (its
    top GRID_K at most; the next token's probability and rank are not kept)."""
    grid = every_position_top(model, tokens, params.loop)  # [iteration, layer, pos, k, 2]
    inputs.progress("decoding", 0.9)
    read = (~grid[:, :, 0, 0, 0].isnan()).tolist()  # [iteration][layer]
    ids = grid[..., 0].nan_to_num(0).long()  # [iteration, layer, pos, k]
    probs = grid[..., 1]
    k = min(params.top_k, GRID_K)
    at_ids = _where_read(ids[:, :, index, :k].tolist(), read, [])
    at_probs = _where_read(rounded(probs[:, :, index, :k], 5), read, [])
    decode = model.tokenizer.decode
    vocab = {int(i): decode([int(i)]) for i in ids[grid[..., 0].isnan().logical_not()].unique().tolist()}
    return AnalysisOutput(
        result=LogitLens(
            tokens=model.str_tokens(tokens[0]),
            token_ids=tokens[0].tolist(),
            position=index,
            n_iterations=grid.shape[0],
            n_layers=grid.shape[1],
            loop_layers=list(layers),
            top_tokens=[[[vocab[i] for i in cell] for cell in row] for row in at_ids],
            top_token_ids=at_ids,
            top_probs=at_probs,
            next_token=None,
            next_token_prob=None,
            next_token_rank=None,
            exit_only=model.entry.own_exit,
            grid_ids=_where_read(ids.tolist(), read, []),
            grid_probs=_where_read(rounded(probs, 5), read, []),
            grid_tokens=vocab,
        )
    )
