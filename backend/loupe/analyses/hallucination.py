"""`hallucination`: per generated token, how much the model's retrieval heads park attention on BOS.

Heads that copy from the context (induction / retrieval heads) attend to the token that matches
what should come next; when nothing in the context supports the next token they rest on the first
token (BOS, an attention sink). So their attention to BOS while generating signals a made-up token.
The signal functions here are tensor-only; the analysis generates with the KV cache
(loupe.generation) and applies them.
"""

import torch
from pydantic import BaseModel, Field

from ..generation import Generation, generate_with_attention
from ..loops import LoopSpec
from ..model_store import LoadedModel
from .head_scores import HeadScoreParams
from .registry import MAX_SEED, AnalysisOutput, Inputs, register, require_text, required_result, rounded, tensor_of

SIGNAL_FORMULAS = {
    "signal": "attention to BOS (key 0) of the query that predicts the token, averaged over the retrieval heads: "
    "the top-k heads by induction score (Loupe's head_scores) among those scoring at least min_induction",
    "bos_all": "attention to BOS of the query that predicts the token, averaged over every head",
    "lookback_ratio": "Lookback Lens (Chuang et al. 2024), averaged over every head: mean attention per prompt "
    "token (BOS excluded) / (that + mean attention per generated token so far); 1 for the first "
    "generated token (nothing generated to look back at), 0.5 for a head whose attention is all on BOS",
    "flagged": "signal >= threshold",
    "signal_by_iteration": "at each loop iteration, attention to BOS of the query that predicts the token, averaged "
    "over the retrieval heads' (layer, head) positions at that iteration",
    "bos_by_iteration": "at each loop iteration, attention to BOS of the query that predicts the token, averaged "
    "over every head of that iteration",
}


class HallucinationParams(BaseModel):
    max_new_tokens: int = Field(16, ge=1, le=256, description="How many tokens to generate at most (stops at EOS)")
    sample: bool = Field(False, description="Sample (seeded) instead of taking the most likely token")
    temperature: float = Field(1.0, gt=0, le=10, description="Sampling temperature (sampling only)")
    seed: int = Field(0, ge=0, le=MAX_SEED, description="Seed of the sampler (sampling only)")
    top_k: int = Field(4, ge=1, le=256, description="At most this many retrieval heads (by induction score) are averaged")
    min_induction: float = Field(
        0.1, ge=0, le=1, description="Retrieval heads need at least this induction score (the best head always counts)"
    )
    threshold: float = Field(0.5, ge=0, le=1, description="A token is flagged when its signal reaches this")
    loop: LoopSpec | None = Field(None, description="Loop count while generating, or a retrofit loop of a plain model.")


class Hallucination(BaseModel):
    params: HallucinationParams
    formulas: dict[str, str]
    prompt_tokens: list[str]
    prompt_ids: list[int]
    tokens: list[str]  # generated
    token_ids: list[int]
    n_iterations: int
    n_layers: int
    n_heads: int
    heads: list[str] = Field(description="Head labels, `L{layer}H{head}` (`I{iteration}L{layer}H{head}` when looped)")
    induction_scores: list[float | None]  # per head, in `heads` order; null: a layer without attention
    retrieval_heads: list[int]  # indices into `heads`, best first
    warning: str | None = Field(None, description="Set when no head qualifies as a retrieval head: then no signal")
    # per generated token
    signal: list[float] | None = Field(description="None when there are no retrieval heads (see `warning`)")
    bos_all: list[float]
    lookback_ratio: list[float]
    flagged: list[bool] | None
    # [token][head] in `heads` order
    bos_by_head: list[list[float | None]]
    lookback_by_head: list[list[float | None]]
    # [token][iteration]: the loop as an axis
    signal_by_iteration: list[list[float | None]] | None = Field(description="None when there are no retrieval heads")
    bos_by_iteration: list[list[float | None]]


def head_labels(n_iterations: int, n_layers: int, n_heads: int) -> list[str]:
    """Labels of the flattened [iteration, layer, head] axis."""
    prefix = (lambda i: f"I{i}") if n_iterations > 1 else (lambda i: "")
    return [f"{prefix(i)}L{l}H{h}" for i in range(n_iterations) for l in range(n_layers) for h in range(n_heads)]


def lookback_ratio(generation: Generation) -> torch.Tensor:
    """[new, iteration, layer, head] Lookback Lens ratio of every head for every generated token.

    Generated token i is predicted by a query that sees P-1 prompt tokens after BOS and i
    generated tokens; the ratio compares the mean attention per token of the two spans."""
    n_new = generation.bos.shape[0]
    seen = torch.arange(n_new, dtype=torch.float32).view(-1, 1, 1, 1)  # generated keys visible to token i
    prompt_mean = generation.prompt / (generation.n_prompt - 1)
    generated_mean = generation.generated / seen.clamp_min(1)
    total = prompt_mean + generated_mean
    ratio = torch.where(total > 0, prompt_mean / total.clamp_min(1e-12), torch.full_like(total, 0.5))
    return torch.where(seen == 0, torch.ones_like(ratio), ratio)


def induction_by_head(model: LoadedModel, inputs: Inputs, loop: LoopSpec | None = None) -> torch.Tensor:
    """Every head's induction score, flattened over [iteration, layer, head], from Loupe's head_scores
    on repeated random tokens (as long as the context allows, up to the default length): the
    cached head_scores analysis of those params, itself a permalink."""
    seq_len = min(HeadScoreParams().seq_len, (model.n_ctx - 1) // 2)
    result = required_result(model, inputs, "head_scores", HeadScoreParams(seq_len=seq_len, loop=loop))
    return tensor_of(result["scores"]["induction"]).flatten()  # [iteration * layer * head]; NaN: no attention


def top_heads(induction: torch.Tensor, k: int, min_score: float = 0.0) -> torch.Tensor:
    """Indices of the (at most) k highest-scoring heads scoring at least min_score, best first
    (ties: lower index first); empty when no head reaches min_score."""
    scored = [i for i in range(len(induction)) if not torch.isnan(induction[i])]  # a head of a layer without attention has none
    order = sorted(scored, key=lambda i: (-float(induction[i]), i))
    return torch.tensor([i for i in order[:k] if float(induction[i]) >= min_score], dtype=torch.long)


def no_retrieval_heads(induction: torch.Tensor, labels: list[str], min_score: float) -> str:
    """Why there is no retrieval-head signal: the best head's induction score is under the bar."""
    best = int(torch.nan_to_num(induction, nan=-1.0).argmax())
    return (
        f"No head has an induction score of at least {min_score:g} (the best, {labels[best]}, scores "
        f"{float(induction[best]):.3f}): this model has no retrieval heads by that bar, so there is no "
        "retrieval-head signal and nothing is flagged. The all-heads BOS attention and the lookback ratio "
        "are shown; lower min_induction to choose heads by hand."
    )


def token_signals(generation: Generation, heads: torch.Tensor) -> dict[str, torch.Tensor | None]:
    """Per generated token: BOS attention on `heads` (flat indices; None when there are none) and
    on all heads, and the all-heads lookback ratio, each [new]; plus per-head BOS and lookback,
    each [new, heads]."""
    n_new, n_iterations = generation.bos.shape[:2]
    bos = generation.bos.reshape(n_new, -1)  # [new, iteration * layer * head]
    lookback = lookback_ratio(generation).reshape(n_new, -1)  # [new, iteration * layer * head]
    per_iteration = generation.bos.reshape(n_new, n_iterations, -1)  # [new, iteration, layer * head]
    positions = (heads % per_iteration.shape[-1]).unique()  # the retrieval heads' (layer, head), any iteration
    return {
        "signal": bos[:, heads].mean(-1) if len(heads) else None,
        "signal_by_iteration": per_iteration[..., positions].mean(-1) if len(heads) else None,  # [new, iteration]
        "bos_by_iteration": per_iteration.nanmean(-1),  # [new, iteration]
        "bos_all": bos.nanmean(-1),  # NaN: heads of layers without attention (hybrid stacks)
        "lookback_ratio": lookback.nanmean(-1),
        "bos_by_head": bos,
        "lookback_by_head": lookback,
    }


@register("hallucination", version=3, params=HallucinationParams, needs=("text", "generating_lm", "causal_lm", "attention"))
def hallucination(model: LoadedModel, params: HallucinationParams, inputs: Inputs) -> AnalysisOutput:
    """Generates from the text (the prompt: context and question) with the KV cache and reports, for
    every generated token, the retrieval heads' attention to BOS (the signal; heads chosen by
    induction score), the all-heads BOS attention, the Lookback Lens ratio and a flag when the
    signal reaches the threshold; per head, the token x head BOS and lookback matrices."""
    prompt_ids = model.tokenize(require_text(inputs), inputs.max_tokens)  # [1, prompt_pos]
    inputs.progress("scoring heads", 0.05)
    induction = induction_by_head(model, inputs, params.loop)
    heads = top_heads(induction, params.top_k, params.min_induction)
    inputs.progress("generating", 0.3)
    eos = model.tokenizer.eos_token_id
    generation = generate_with_attention(
        model,
        prompt_ids,
        params.max_new_tokens,
        temperature=params.temperature if params.sample else None,
        seed=params.seed,
        stop_ids=() if eos is None else (eos,),
        loop=params.loop,
    )
    signals = token_signals(generation, heads)
    n_iterations, n_layers, n_heads = generation.bos.shape[1:]
    labels = head_labels(n_iterations, n_layers, n_heads)
    signal = signals["signal"]
    result = Hallucination(
        params=params,
        formulas=SIGNAL_FORMULAS,
        prompt_tokens=model.str_tokens(generation.prompt_ids),
        prompt_ids=generation.prompt_ids.tolist(),
        tokens=model.str_tokens(generation.new_ids),
        token_ids=generation.new_ids.tolist(),
        n_iterations=n_iterations,
        n_layers=n_layers,
        n_heads=n_heads,
        heads=labels,
        induction_scores=rounded(induction),
        retrieval_heads=heads.tolist(),
        warning=None if signal is not None else no_retrieval_heads(induction, labels, params.min_induction),
        signal=None if signal is None else rounded(signal),
        bos_all=rounded(signals["bos_all"]),
        lookback_ratio=rounded(signals["lookback_ratio"]),
        flagged=None if signal is None else (signal >= params.threshold).tolist(),
        bos_by_head=rounded(signals["bos_by_head"]),
        lookback_by_head=rounded(signals["lookback_by_head"]),
        signal_by_iteration=None if signal is None else rounded(signals["signal_by_iteration"]),
        bos_by_iteration=rounded(signals["bos_by_iteration"]),
    )
    return AnalysisOutput(result=result)
