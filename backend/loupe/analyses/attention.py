"""`attention`: every layer's and head's attention pattern on a text, with per-head summary stats."""

import torch
from pydantic import BaseModel, Field

from ..attention_rule import NotModelled, Rows, unsupported_long
from ..capture import runs_natively, summarize_and_keep, summarize_and_store
from ..fused import LayerRows
from ..loops import LoopSpec, stack_by_iteration
from ..model_store import LoadedModel
from .registry import AnalysisOutput, Inputs, register, require_text, rounded


class AttentionParams(BaseModel):
    loop: LoopSpec | None = Field(None, description="Loop count, or a retrofit loop of a plain model.")


class Attention(BaseModel):
    tokens: list[str]
    token_ids: list[int]
    n_iterations: int
    n_layers: int
    n_heads: int
    attention_layers: list[int] = Field(description="The layers with attention (others, in a hybrid stack, are null).")
    pattern_source: str = Field(
        description="`stored`: every head's pattern was stored (16-bit); `recomputed`: each layer's queries, keys and "
        "attention rule were kept and a head's pattern is recomputed exactly, in float32, when it is served."
    )
    # stat name -> [iteration][layer][head]; for the overview grid
    head_stats: dict[str, list[list[list[float | None]]]]
    stat_labels: dict[str, str] = Field(description="What each stat is called, as it measures on this text.")
    stat_descriptions: dict[str, str]


STAT_LABELS = {"bos": "First token (BOS)", "previous_token": "Previous token", "self": "Self", "entropy": "Entropy"}
STAT_DESCRIPTIONS = {
    "bos": "Mean attention to the first token (BOS), over query positions 1…T−1.",
    "previous_token": "Mean attention to the previous token, over query positions 2…T−1.",
    "self": "Mean attention of each query to its own position.",
    "entropy": "Mean entropy of each query's attention, divided by log(number of visible keys): 1 is uniform.",
}


def position_stats(pattern: torch.Tensor, bidirectional: bool = False) -> dict[str, torch.Tensor]:
    """Each query's value of every stat, patterns [..., head, query_pos, key_pos] -> each [..., head,
    query_pos]: attention to the first token, to the previous token, to itself, and its entropy over
    log(visible keys). A stat is defined from query FIRST_QUERY[name] on; the entries before are not
    the stat (NaN or a raw value: mask them). `bidirectional` (an encoder): every query sees all T
    keys, so entropy is divided by log T. First token and self are views of `pattern`."""
    n_pos = pattern.shape[-1]
    pos = torch.arange(n_pos)
    previous = pattern.new_full(pattern.shape[:-1], float("nan"))  # [..., head, query_pos]
    previous[..., 2:] = pattern[..., pos[2:], pos[2:] - 1]
    visible = torch.log(torch.full((n_pos,), float(n_pos)) if bidirectional else pos.float() + 1)
    entropy = torch.cat([previous[..., :1], -_sum_plogp(pattern)[..., 1:] / visible[1:]], -1)
    return {"bos": pattern[..., :, 0], "previous_token": previous, "self": pattern.diagonal(dim1=-2, dim2=-1), "entropy": entropy}


# The first query at which each stat is defined (position_stats is NaN before it).
FIRST_QUERY = {"bos": 1, "previous_token": 2, "self": 0, "entropy": 1}


def head_stats(pattern: torch.Tensor, bidirectional: bool = False) -> dict[str, torch.Tensor]:
    """Per-head summaries of patterns [..., head, query_pos, key_pos] -> each [..., head]: the mean
    of position_stats over the queries that define it (0 where none does: a text of one or two tokens)."""
    n_pos = pattern.shape[-1]
    return {
        name: values[..., FIRST_QUERY[name] :].mean(-1) if n_pos > FIRST_QUERY[name] else pattern.new_zeros(pattern.shape[:-2])
        for name, values in position_stats(pattern, bidirectional).items()
    }


# From this many tokens on, a model whose attention AttentionRule models keeps queries and keys
# instead of patterns. Measured on the bench's GPT-2 small (d_head 64), analysis and encoding, best
# of 3, the kept path through the compiled kernel: it is faster from 256 tokens on (0.76x at 512,
# 0.63x at 1,024) but stores more below about 1,000 (36 MiB against the patterns' 21 MiB at 512, 72
# against 78 at 1,024), and below 512 the page reads whole stored patterns; beyond, patterns grow as
# T^2 and the kept form as T.
KEPT_FROM_TOKENS = 1024


class StreamedStats:
    """head_stats of every firing from its rows as the kept path streams them (capture.OnRows),
    equal to head_stats of the whole patterns: sums over each stat's defined queries, divided once
    the pass is over."""

    def __init__(self, n_pos: int, bidirectional: bool = False) -> None:
        self.n_pos, self.bidirectional = n_pos, bidirectional
        self.sums: dict[tuple[int, int], dict[str, torch.Tensor]] = {}  # -> stat -> float64 [head]

    def add(self, iteration: int, layer: int, rows: "Rows | LayerRows") -> None:
        n_heads, n_rows = rows.entropy.shape
        pos = torch.arange(n_rows, device=rows.entropy.device) + rows.start
        at = rows.at  # [head, n]: each row's weight on a key position [n]
        visible = torch.log(torch.full_like(pos, self.n_pos, dtype=torch.float32) if self.bidirectional else pos.float() + 1)
        values = {
            "bos": at(torch.zeros_like(pos)), "previous_token": at(pos - 1), "self": at(pos),
            "entropy": rows.entropy / visible.clamp(min=1e-30),
        }
        sums = self.sums.setdefault((iteration, layer), {name: torch.zeros(n_heads, dtype=torch.float64) for name in values})
        for name, value in values.items():
            sums[name] += value[:, pos >= FIRST_QUERY[name]].double().sum(-1).cpu()

    def stacked(self, n_layers: int) -> dict[str, torch.Tensor]:
        """stat -> [iteration, layer, head], as summarize_and_store gives them."""
        means = {
            key: {name: (total / (self.n_pos - FIRST_QUERY[name]) if self.n_pos > FIRST_QUERY[name] else total * 0).float().tolist()
                  for name, total in sums.items()}
            for key, sums in self.sums.items()
        }
        return stack_by_iteration(means, n_layers)


def _sum_plogp(pattern: torch.Tensor) -> torch.Tensor:
    """sum over keys of p log p (0 log 0 = 0): [..., query_pos] of patterns [..., query_pos, key_pos],
    one matrix at a time into one scratch, so memory stays at one matrix whatever the batch."""
    matrices = pattern.reshape(-1, *pattern.shape[-2:])
    scratch = matrices.new_empty(matrices.shape[1:])
    sums = torch.stack([torch.xlogy(matrix, matrix, out=scratch).sum(-1) for matrix in matrices])
    return sums.reshape(pattern.shape[:-1])


def first_token_names(model: LoadedModel, tokens: torch.Tensor) -> tuple[dict[str, str], dict[str, str]]:
    """(labels, descriptions) of the stats for this text: the first-token stat says "BOS" only when
    the model prepended its BOS token (many tokenizers, e.g. Qwen's, have none: then it is the
    text's first word)."""
    bos = model.tokenizer.bos_token_id
    if model.entry.encoder:  # [CLS] (<s>) first; every query sees every key
        first = model.str_tokens(tokens[0, :1])[0]
        return {**STAT_LABELS, "bos": f"First token ({first})"}, {
            **STAT_DESCRIPTIONS,
            "bos": f"Mean attention to the first token ({first!r}), over query positions 1…T−1.",
            "entropy": "Mean entropy of each query's attention, divided by log T (an encoder's query sees all T keys): 1 is uniform.",
        }
    if bos is not None and int(tokens[0, 0]) == bos:
        return STAT_LABELS, STAT_DESCRIPTIONS
    first = model.str_tokens(tokens[0, :1])[0]
    labels = {**STAT_LABELS, "bos": "First token"}
    description = f"Mean attention to the first token ({first!r}: this model prepends no BOS), over query positions 1…T−1."
    return labels, {**STAT_DESCRIPTIONS, "bos": description}


@register("attention", version=4, params=AttentionParams, needs=("text", "attention"), stores_patterns=True)
def attention(model: LoadedModel, params: AttentionParams, inputs: Inputs) -> AnalysisOutput:
    """Attention pattern of every iteration, layer and head on the text (BOS prepended as the
    model expects), equal to the model's own attention probabilities. Patterns are stored per
    head and served by GET /api/analyses/{id}/attention; the summary holds per-head stats.
    Everything is taken from each layer's probabilities inside the one forward pass."""
    tokens = model.tokenize(require_text(inputs), inputs.max_tokens)  # [1, pos]
    n_pos = tokens.shape[-1]
    inputs.progress("forward", 0.1)
    # stat -> [iteration, layer, head]
    encoder = model.entry.encoder
    why = "it is not run by Loupe's own attention function" if not runs_natively(model) else None
    if why is None and n_pos >= KEPT_FROM_TOKENS:
        try:
            stats = StreamedStats(n_pos, encoder)
            patterns = summarize_and_keep(model, tokens, stats.add, params.loop)
            stacked, source = stats.stacked(model.n_layers), "recomputed"
        except NotModelled as exc:
            why = str(exc)
    if why is not None or n_pos < KEPT_FROM_TOKENS:
        if n_pos > inputs.max_stored_tokens:
            raise unsupported_long(model.id, n_pos, inputs.max_stored_tokens, why)
        stacked, patterns = summarize_and_store(model, tokens, lambda probs: head_stats(probs[0], encoder), params.loop)
        source = "stored"
    labels, descriptions = first_token_names(model, tokens)
    result = Attention(
        tokens=model.str_tokens(tokens[0]),
        token_ids=tokens[0].tolist(),
        n_iterations=next(iter(stacked.values())).shape[0],
        n_layers=model.n_layers,
        n_heads=model.n_heads,
        attention_layers=model.attention_layers,
        pattern_source=source,
        head_stats={name: rounded(value) for name, value in stacked.items()},
        stat_labels=labels,
        stat_descriptions=descriptions,
    )
    return AnalysisOutput(result=result, patterns=patterns)
