"""`emergence`: head scores, the loss on repeated random tokens and the in-context-learning score at
every training checkpoint of a model, with the phase change where induction and ICL jump.

Olsson et al. (2022), "In-context Learning and Induction Heads": induction heads form in a phase
change early in training, visible as a jump in the heads' induction score, a drop of the loss on the
second copy of a repeated random sequence, and a drop of the in-context-learning score (the loss of a
late token minus that of an early one). The head scores at each checkpoint are the `head_scores`
analysis of that checkpoint (`<model>@<step>`), asked of the run service, so each is cached and
stored as its own analysis.
"""

import json
from pathlib import Path

import torch
from pydantic import BaseModel, Field, model_validator

from ..errors import InvalidInput, TooLong
from ..model_store import LoadedModel
from .head_metrics import CORPUS, corpus_texts
from .head_scores import HeadScoreParams, _bos_id, _candidate_vocab, formulas_for
from .registry import MAX_SEED, REGISTRY, AnalysisOutput, Inputs, register
from .scores import repeated_random_tokens

LOSS_FORMULAS = {
    "repeated_first": "mean over batch of the cross-entropy of tokens 2..S of the first copy (positions 2..S, each "
    "predicted from the position before it): random tokens, so about log(vocabulary) before any learning",
    "repeated_second": "the same over tokens 2..S of the second copy (positions S+2..2S): low where the model "
    "copies from the first copy (induction)",
    "icl_score": "mean over n_texts windows of English (BOS, then icl_late consecutive tokens of the built-in "
    "corpus) of loss(token at icl_late) − loss(token at icl_early): Olsson et al.'s in-context-learning score "
    "(they take tokens 500 and 50); more negative: later tokens gain more from the context",
    "phase_change": "the checkpoint where the largest induction score of any head rises the most from the "
    "checkpoint before it (null with fewer than two points or no rise)",
    "icl_jump": "the checkpoint where the ICL score falls the most from the checkpoint before it",
    "train_loss": "the training loss at that step, as checkpoints/trajectory.json records it",
}


class EmergenceParams(BaseModel):
    seq_len: int = Field(20, ge=4, le=512, description="S: length of the random sequence, which is repeated once")
    batch: int = Field(10, ge=1, le=64, description="How many random sequences the head scores and losses average over")
    seed: int = Field(0, ge=0, le=MAX_SEED, description="Seed of the random tokens")
    n_texts: int = Field(16, ge=1, le=256, description="English windows the ICL score averages over")
    icl_early: int = Field(10, ge=1, le=4096, description="The early token of the ICL score")
    icl_late: int = Field(100, ge=2, le=4096, description="The late token of the ICL score (and each window's length)")

    @model_validator(mode="after")
    def _late_after_early(self) -> "EmergenceParams":
        if self.icl_late <= self.icl_early:
            raise ValueError("icl_late must be after icl_early")
        return self


class Jump(BaseModel):
    index: int = Field(description="Index into `points`.")
    step: int | None = Field(description="Its training step (null: the final weights).")
    change: float = Field(description="The rise (induction) or fall (ICL score) from the point before.")


class Emergence(BaseModel):
    params: EmergenceParams
    formulas: dict[str, str]
    points: list[str] = Field(description="The model id of each point: checkpoints by step, then the final weights.")
    steps: list[int | None] = Field(description="Each point's training step; null for the final weights.")
    n_iterations: int
    n_layers: int
    n_heads: int
    attention_layers: list[int]
    # score name -> [point][iteration][layer][head]: the head_scores result at each point
    scores: dict[str, list[list[list[list[float | None]]]]]
    head_scores_ids: list[str] = Field(description="The `head_scores` analysis at each point (its permalink id).")
    repeated_first: list[float]
    repeated_second: list[float]
    icl_score: list[float]
    train_loss: list[float | None] | None = Field(None, description="Per point, where checkpoints/trajectory.json records it.")
    phase_change: Jump | None
    icl_jump: Jump | None
    probe_text: str = Field(description="A text whose attention a clicked point opens: English, repeated once.")


def token_losses(model: LoadedModel, tokens: torch.Tensor) -> torch.Tensor:
    """[batch, pos - 1] cross-entropy of each token from position 1 on (index p-1: token p),
    predicted from the positions before it; tokens [batch, pos]."""
    logits = model.bridge(tokens.to(model.input_device), return_type="logits")  # [batch, pos, d_vocab]
    log_probs = logits[:, :-1].float().log_softmax(-1)
    targets = tokens[:, 1:, None].to(log_probs.device)
    return -log_probs.gather(-1, targets).squeeze(-1).cpu()  # [batch, pos - 1]


def english_windows(model: LoadedModel, n_texts: int, length: int, path: Path = CORPUS) -> torch.Tensor:
    """[n_texts, 1 + length]: BOS, then consecutive `length`-token runs of the built-in corpus,
    tokenized as one stream (no special tokens) from its start."""
    text, need = path.read_text(), n_texts * length
    chars = need * 8
    while True:  # tokenize a prefix long enough; the tokens near its cut are never used
        ids = model.tokenizer(text[:chars], add_special_tokens=False)["input_ids"]
        if len(ids) >= need + 64 or chars >= len(text):
            break
        chars *= 2
    if len(ids) < need:
        raise InvalidInput(f"The built-in corpus has {len(ids)} tokens on this model; {n_texts} windows of {length} need {need}.")
    runs = torch.tensor(ids[:need]).view(n_texts, length)
    return torch.cat([torch.full((n_texts, 1), _bos_id(model)), runs], dim=1)  # [n_texts, 1 + length]


def training_losses(path: Path | None) -> dict[int, float]:
    """step -> train_loss from checkpoints/trajectory.json: a list of {"step", "train_loss"} records
    (bare or under one key), or a {step: train_loss or {"train_loss": …}} mapping; {} if absent or unreadable."""
    if path is None:
        return {}
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    if isinstance(data, dict) and len(data) == 1 and isinstance(next(iter(data.values())), list):
        data = next(iter(data.values()))
    losses = {}
    if isinstance(data, list):
        for record in data:
            if isinstance(record, dict) and isinstance(record.get("step"), int) and isinstance(record.get("train_loss"), (int, float)):
                losses[record["step"]] = float(record["train_loss"])
    elif isinstance(data, dict):
        for step, value in data.items():
            value = value.get("train_loss") if isinstance(value, dict) else value
            if str(step).isdigit() and isinstance(value, (int, float)):
                losses[int(step)] = float(value)
    return losses


def largest_jump(values: list[float], steps: list[int | None], sign: float = 1.0) -> Jump | None:
    """The point whose value changes most in direction `sign` (+1 rise, -1 fall) from the one
    before; None with fewer than two points or no change that way."""
    changes = [sign * (values[i] - values[i - 1]) for i in range(1, len(values))]
    if not changes or max(changes) <= 0:
        return None
    index = 1 + changes.index(max(changes))
    return Jump(index=index, step=steps[index], change=values[index] - values[index - 1])


def _max_induction(scores: list) -> float:
    """The largest induction score of any head, iteration and layer (null layers skipped)."""
    flat = torch.tensor([v for it in scores for layer in it for v in layer if v is not None] or [0.0])
    return float(flat.max())


@register("emergence", version=1, params=EmergenceParams, needs=("attention", "tokenizer", "causal_lm", "checkpoints"))
def emergence(model: LoadedModel, params: EmergenceParams, inputs: Inputs) -> AnalysisOutput:
    """At every training checkpoint and the final weights: the head scores of `head_scores` (induction,
    previous-token, duplicate-token, BOS sink) on the same repeated random tokens, the loss on their
    first and second copy, Olsson et al.'s in-context-learning score on English (loss of token
    icl_late minus token icl_early), and the training loss where the folder records it; the phase
    change is the checkpoint where the largest induction score rises the most."""
    if 1 + 2 * params.seq_len > model.n_ctx or 1 + params.icl_late > model.n_ctx:
        raise TooLong(f"1 + 2 * seq_len and 1 + icl_late must fit {model.id}'s context of {model.n_ctx}.")
    steps: list[int | None] = [*model.entry.checkpoints, None]
    points = [model.id if step is None else f"{model.id}@{step}" for step in steps]
    head_params = HeadScoreParams(seq_len=params.seq_len, batch=params.batch, seed=params.seed)
    repeated = repeated_random_tokens(_candidate_vocab(model), params.batch, params.seq_len, _bos_id(model), params.seed)
    windows = english_windows(model, params.n_texts, params.icl_late)  # [n_texts, 1 + icl_late]
    if inputs.require is None or inputs.model_at is None:
        raise InvalidInput("emergence loads checkpoints and asks for head_scores through the run service; run it as an analysis.")
    S = params.seq_len
    scores: dict[str, list] = {}
    ids, first, second, icl = [], [], [], []
    for i, (step, point) in enumerate(zip(steps, points)):
        inputs.progress("final weights" if step is None else f"checkpoint {step}", i / len(points))
        with inputs.model_at(point) as at:
            result = inputs.require("head_scores", head_params, on=at)
            for name, values in result["scores"].items():
                scores.setdefault(name, []).append(values)
            ids.append(REGISTRY["head_scores"].key(at.id, at.revision, None, head_params))
            with torch.no_grad():
                losses = token_losses(at, repeated)  # [batch, 2S]; index p-1: token p
                first.append(float(losses[:, 1:S].mean()))  # tokens 2..S
                second.append(float(losses[:, S + 1 : 2 * S].mean()))  # tokens S+2..2S
                text_losses = token_losses(at, windows)  # [n_texts, icl_late]
                icl.append(float((text_losses[:, params.icl_late - 1] - text_losses[:, params.icl_early - 1]).mean()))
    inputs.progress("summarizing", 1.0)
    recorded = training_losses(model.entry.trajectory_path)
    train_loss = [recorded.get(step) if step is not None else None for step in steps] if recorded else None
    induction = [_max_induction(point) for point in scores["induction"]]
    sample = next(corpus_texts(model, 1, max(4, model.n_ctx // 2 - 1)), "")
    return AnalysisOutput(
        result=Emergence(
            params=params,
            formulas={**formulas_for(model), **LOSS_FORMULAS},
            points=points,
            steps=steps,
            n_iterations=len(scores["induction"][0]),
            n_layers=model.n_layers,
            n_heads=model.n_heads,
            attention_layers=model.attention_layers,
            scores=scores,
            head_scores_ids=ids,
            repeated_first=first,
            repeated_second=second,
            icl_score=icl,
            train_loss=train_loss,
            phase_change=largest_jump(induction, steps),
            icl_jump=largest_jump(icl, steps, sign=-1.0),
            probe_text=model.entry.loupe.get("prompt_hint") or f"{sample} {sample}",
        )
    )

