"""`ablation`: how a metric of the prompt changes when heads are knocked out (zeroed, or set to a mean), at one iteration or each."""

import math
import re
from collections.abc import Callable
from typing import Literal

import torch
from pydantic import BaseModel, Field

from ..capture import summarize_and_store
from ..errors import InvalidInput, TooLong
from ..loops import LoopSpec, firing_at, iterations_of, looping
from ..model_store import LoadedModel
from ..progress import checkpoint
from .head_scores import _bos_id, _candidate_vocab
from .registry import MAX_SEED, AnalysisOutput, Inputs, register, require_text, rounded
from .scores import repeated_random_tokens

LOGIT_BUDGET = 1 << 23  # floats of logits per forward batch (32 MB): bounds memory on large vocabularies
MAX_BATCH = 32  # ablations per forward pass
MAX_REFERENCE = 64
BUILT_IN_REFERENCE = 16  # texts of the built-in English corpus when mode `reference` is given none
BUILT_IN_REFERENCE_TOKENS = 64  # the most tokens each (within the model's limit)
HEAD = re.compile(r"L(\d+)\s*H(\d+)", re.IGNORECASE)

Mode = Literal["zero", "mean", "reference"]
Metric = Literal["loss", "logit_diff", "prob"]

MODE_TEXT = {
    "zero": "the head's output (hook_z) set to zero",
    "mean": "the head's output (hook_z) set to its mean over the positions of the same sequence",
    "reference": "the head's output (hook_z) set to its mean over every position of the reference texts",
}


class AblationParams(BaseModel):
    heads: list[str] | None = Field(
        None, max_length=1024, description="Heads knocked out together, as 'L1H0'; none: the sweep, every head alone."
    )
    mode: Mode = Field("zero", description="What the head's output becomes: zero, its mean over positions, or the reference texts' mean.")
    reference: list[str] | None = Field(
        None, max_length=MAX_REFERENCE,
        description=f"The reference texts of mode `reference`; none: the first {BUILT_IN_REFERENCE} texts of the built-in "
        f"English corpus of at most {BUILT_IN_REFERENCE_TOKENS} tokens each (head_metrics' corpus).",
    )  # fmt: skip
    metric: Metric = Field("loss", description="Next-token loss, logit(target) - logit(other), or p(target), at `position`.")
    target: str | None = Field(None, max_length=200, description="The token of logit_diff and prob (exactly one token).")
    other: str | None = Field(None, max_length=200, description="logit_diff's second token (exactly one token).")
    position: int = Field(-1, ge=-4096, le=4095, description="Where logit_diff and prob read the logits (negative: from the end).")
    iteration: int | None = Field(None, ge=0, description="Knock out at this iteration only; none: each iteration on its own.")
    sequence: Literal["text", "repeated_random"] = Field(
        "text", description="The prompt, or head_scores' test: BOS and S random tokens, repeated (loss on the second copy)."
    )
    seq_len: int = Field(20, ge=4, le=256, description="S of sequence `repeated_random`.")
    batch: int = Field(4, ge=1, le=16, description="Random sequences of `repeated_random`, averaged over.")
    seed: int = Field(0, ge=0, le=MAX_SEED, description="Seed of the random tokens.")
    loop: LoopSpec | None = Field(None, description="Loop count, or a retrofit loop of a plain model.")


class Ablation(BaseModel):
    tokens: list[str] = Field(description="The (first) sequence; its clean attention patterns are stored.")
    token_ids: list[int]
    n_iterations: int
    n_layers: int
    n_heads: int
    attention_layers: list[int] = Field(description="The layers with attention (others, in a hybrid stack, are null).")
    mode: Mode
    metric: Metric
    heads: list[str] | None = Field(description="The set knocked out together; null: the sweep.")
    iteration: int | None
    clean: float = Field(description="The metric of the model as it is.")
    ablated: float | None = Field(description="The metric with the whole set knocked out together (null in a sweep).")
    delta: list[list[list[float | None]]] = Field(description="[iteration][layer][head]: metric with that head alone knocked out - clean.")
    formula: str
    patterns: bool = Field(True, description="Whether the clean run's patterns are stored (not in rows migrated from head_ablation).")
    reference_texts: list[str] | None = Field(None, description="Mode `reference`: the texts whose mean output replaced the heads'.")


def built_in_reference(model: LoadedModel, inputs: Inputs) -> list[str]:
    """Mode `reference` given no texts: the first texts of the built-in English corpus, each within
    BUILT_IN_REFERENCE_TOKENS tokens (and the model's limit)."""
    from .head_metrics import corpus_texts

    limit = min(BUILT_IN_REFERENCE_TOKENS, model.token_limit(inputs.max_tokens))
    return list(corpus_texts(model, BUILT_IN_REFERENCE, limit))


def _heads(model: LoadedModel, names: list[str] | None) -> list[tuple[int, int]] | None:
    """(layer, head) of each name 'L<layer>H<head>', in order, once each; None for the sweep."""
    if names is None:
        return None
    heads: list[tuple[int, int]] = []
    for name in names:
        match = HEAD.fullmatch(name.strip())
        if match is None:
            raise InvalidInput(f"Head {name[:40]!r} is not of the form L<layer>H<head> (e.g. L1H0).")
        layer, head = int(match[1]), int(match[2])
        if layer not in model.attention_layers or head >= model.n_heads:
            raise InvalidInput(
                f"{model.id} has no attention head L{layer}H{head}: layers with attention {model.attention_layers}, "
                f"heads 0..{model.n_heads - 1}."
            )
        if (layer, head) not in heads:
            heads.append((layer, head))
    if not heads:
        raise InvalidInput("`heads` is empty; leave it out to sweep every head.")
    return heads


def _one_token(model: LoadedModel, text: str | None, what: str) -> int:
    if text is None:
        raise InvalidInput(f"This metric needs `{what}`: a token.")
    ids = model.tokenizer(text, add_special_tokens=False)["input_ids"]
    if len(ids) != 1:
        raise InvalidInput(f"`{what}` {text[:40]!r} is {len(ids)} tokens for {model.id}; it must be exactly one.")
    return int(ids[0])


def _sequences(model: LoadedModel, params: AblationParams, inputs: Inputs) -> torch.Tensor:
    """[sequence, pos] token ids: the prompt, or `batch` random sequences of S repeated once after BOS."""
    if params.sequence == "text":
        return model.tokenize(require_text(inputs), inputs.max_tokens)
    if 1 + 2 * params.seq_len > model.n_ctx:
        raise TooLong(f"1 + 2 * seq_len = {1 + 2 * params.seq_len} exceeds {model.id}'s context of {model.n_ctx}.")
    return repeated_random_tokens(_candidate_vocab(model), params.batch, params.seq_len, _bos_id(model), params.seed)


def _metric(model: LoadedModel, params: AblationParams, tokens: torch.Tensor) -> tuple[Callable[[torch.Tensor], torch.Tensor], str]:
    """(metric of logits [rows, pos, d_vocab] -> [rows] (row r reads sequence r % n_seq), its formula)."""
    n_seq, n_pos = tokens.shape
    if params.metric == "loss":
        # the second copy's predictable tokens (S+2..2S, read at S+1..2S-1), or the whole prompt
        queries = torch.arange(params.seq_len + 1, 2 * params.seq_len) if params.sequence == "repeated_random" else torch.arange(n_pos - 1)
        where = "the second copy's tokens after its first" if params.sequence == "repeated_random" else "the text"
        if not len(queries):
            raise InvalidInput("The loss needs at least two tokens: one to read, one to predict.")

        def loss(logits: torch.Tensor) -> torch.Tensor:
            targets = tokens[:, queries + 1].repeat(logits.shape[0] // n_seq, 1)  # [rows, query]
            picked = logits[:, queries].float()  # [rows, query, d_vocab]
            return torch.nn.functional.cross_entropy(picked.transpose(1, 2), targets, reduction="none").mean(-1)

        return loss, f"mean next-token cross-entropy (nats) over {where}"
    position = params.position + n_pos if params.position < 0 else params.position
    if not 0 <= position < n_pos:
        raise InvalidInput(f"position {params.position} is outside the {n_pos} tokens.")
    target = _one_token(model, params.target, "target")
    if params.metric == "prob":
        return lambda logits: logits[:, position].float().softmax(-1)[:, target], f"p({params.target!r}) at position {position}"
    other = _one_token(model, params.other, "other")
    return (
        lambda logits: (logits[:, position, target] - logits[:, position, other]).float(),
        f"logit({params.target!r}) - logit({params.other!r}) at position {position}",
    )


def _hook_names(model: LoadedModel) -> dict[int, str]:
    return {layer: f"{model.block_names[layer]}.attn.hook_z" for layer in model.attention_layers}


def _mean_z(model: LoadedModel, texts: list[torch.Tensor], loop: LoopSpec | None) -> tuple[list[int], dict[tuple[int, int], torch.Tensor], torch.Tensor]:
    """(firings per layer, (firing, layer) -> z averaged over positions [sequence, head, d_head], logits of
    the first text [sequence, pos, d_vocab]): clean passes over token tensors [sequence, pos]."""
    counts = [0] * model.n_layers
    means: dict[tuple[int, int], torch.Tensor] = {}
    first: list[torch.Tensor] = []

    def record(layer: int) -> Callable:
        def hook(z: torch.Tensor, hook) -> torch.Tensor:  # z: [sequence, pos, head, d_head]
            means[counts[layer], layer] = z.float().mean(1)  # [sequence, head, d_head]
            counts[layer] += 1
            return z

        return hook

    per_text = []
    model.require_bridge()
    for tokens in texts:
        counts[:] = [0] * model.n_layers
        hooks = [(name, record(layer)) for layer, name in _hook_names(model).items()]
        with torch.inference_mode(), looping(model, loop):
            logits = model.bridge.run_with_hooks(tokens, fwd_hooks=hooks, reset_hooks_end=True, use_cache=False)
        first = first or [logits]
        per_text.append((tokens.shape[1], dict(means)))
    if len(texts) > 1:  # reference texts: the mean over every position of every text, weighted by length
        total = sum(n for n, _ in per_text)
        means = {key: sum(n * kept[key] for n, kept in per_text) / total for key in per_text[0][1]}
    return counts, means, first[0]


def _run(model: LoadedModel, tokens: torch.Tensor, loop: LoopSpec | None, units: list[frozenset], replace: Callable) -> torch.Tensor:
    """Logits [unit * sequence, pos, d_vocab]: tokens [sequence, pos] once per unit, each copy with its
    unit's (firing, layer, head)s knocked out in hook_z by replace(firing, layer, head) ([sequence or 1, d_head])."""
    n_seq = tokens.shape[0]
    fired = [0] * model.n_layers

    def ablate(layer: int) -> Callable:
        def hook(z: torch.Tensor, hook) -> torch.Tensor:  # z: [unit * sequence, pos, head, d_head]
            for row, unit in enumerate(units):
                for firing, at, head in unit:
                    if at == layer and firing == fired[layer]:
                        z[row * n_seq : (row + 1) * n_seq, :, head] = replace(firing, layer, head)[:, None]
            fired[layer] += 1
            return z

        return hook

    hooks = [(name, ablate(layer)) for layer, name in _hook_names(model).items()]
    with torch.inference_mode(), looping(model, loop):
        batch = tokens.repeat(len(units), 1)  # [unit * sequence, pos]
        return model.bridge.run_with_hooks(batch, fwd_hooks=hooks, reset_hooks_end=True, use_cache=False)


@register("ablation", version=2, params=AblationParams, needs=("text", "causal_lm", "attention"), stores_patterns=True)
def ablation(model: LoadedModel, params: AblationParams, inputs: Inputs) -> AnalysisOutput:
    """Knocks heads out (hook_z zeroed, or set to its mean over positions or over reference texts)
    and reports how a metric of the prompt changes: its next-token loss, a logit difference or a
    probability at one position. The sweep knocks every head out alone; a set of heads is knocked out
    together, and each of its heads alone. At one iteration (the k-th firing of a layer's hook) or
    at each. Copies of the sequence run in a batch, each with its own heads knocked out. The clean
    run's attention patterns are stored, so a head opens as in `attention`."""
    tokens = _sequences(model, params, inputs)  # [sequence, pos]
    n_seq = tokens.shape[0]
    metric, measured = _metric(model, params, tokens)
    chosen = _heads(model, params.heads)
    _, patterns = summarize_and_store(model, tokens[:1], lambda probs: {}, params.loop)
    counts, means, logits = _mean_z(model, [tokens], params.loop)
    clean = float(metric(logits).mean())
    n_iterations = iterations_of(counts)
    if params.iteration is not None and params.iteration >= n_iterations:
        raise InvalidInput(f"iteration {params.iteration} is out of range: {model.id} runs {n_iterations} iteration(s) here (0..{n_iterations - 1}).")
    reference = None
    if params.mode == "reference":
        reference = [text for text in (params.reference if params.reference is not None else built_in_reference(model, inputs)) if text.strip()]
        if not reference:
            raise InvalidInput("`reference` holds no non-empty text.")
        means = _mean_z(model, [model.tokenize(text, inputs.max_tokens) for text in reference], params.loop)[1]

    def replace(firing: int, layer: int, head: int) -> torch.Tensor:  # [sequence or 1, d_head]
        if params.mode == "zero":
            return torch.zeros(1, 1)
        return means[firing, layer][:, head]

    iterations = range(n_iterations) if params.iteration is None else [params.iteration]
    firings = {
        layer: sorted({f for it in iterations if (f := firing_at(counts[layer], n_iterations, it)) is not None})
        for layer in model.attention_layers
    }
    pairs = chosen or [(layer, head) for layer in model.attention_layers for head in range(model.n_heads)]
    alone = [frozenset({(firing, layer, head)}) for layer, head in pairs for firing in firings[layer]]
    together = [frozenset((firing, layer, head) for layer, head in chosen for firing in firings[layer])] if chosen else []
    units = alone + together
    size = max(1, min(MAX_BATCH, LOGIT_BUDGET // (n_seq * tokens.shape[1] * model.bridge.cfg.d_vocab)))
    values: list[float] = []
    for start in range(0, len(units), size):
        checkpoint()
        batch = units[start : start + size]
        per_row = metric(_run(model, tokens, params.loop, batch, replace))  # [unit * sequence]
        values += per_row.view(len(batch), n_seq).mean(-1).tolist()
        inputs.progress("ablating", (start + len(batch)) / len(units))
    delta = torch.full((n_iterations, model.n_layers, model.n_heads), math.nan)  # [iteration, layer, head]
    kept = {next(iter(unit)): value - clean for unit, value in zip(alone, values)}
    for it in iterations:
        for layer in model.attention_layers:
            firing = firing_at(counts[layer], n_iterations, it)
            for head in range(model.n_heads):
                if (firing, layer, head) in kept:
                    delta[it, layer, head] = kept[firing, layer, head]
    at = "each iteration on its own" if params.iteration is None else f"iteration {params.iteration} only"
    return AnalysisOutput(
        result=Ablation(
            tokens=model.str_tokens(tokens[0]),
            token_ids=tokens[0].tolist(),
            n_iterations=n_iterations,
            n_layers=model.n_layers,
            n_heads=model.n_heads,
            attention_layers=model.attention_layers,
            mode=params.mode,
            metric=params.metric,
            heads=[f"L{layer}H{head}" for layer, head in chosen] if chosen else None,
            iteration=params.iteration,
            clean=round(clean, 6),
            ablated=round(values[-1], 6) if chosen else None,
            delta=rounded(delta, 6),
            formula=f"{measured}" + (f", averaged over {n_seq} sequences" if n_seq > 1 else "")
            + f", with {MODE_TEXT[params.mode]} at {at}, minus the same of the model as it is",
            patterns=True,
            reference_texts=reference,
        ),
        patterns=patterns,
    )
