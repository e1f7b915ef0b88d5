"""`data_attribution`: training examples ranked by their influence on one head's induction score (TracIn-CP).

Pruthi et al. (2020), "Estimating Training Data Influence by Tracing Gradient Descent": a step of
gradient descent on example z changes a quantity f by about −η ⟨∇f, ∇ℓ(z)⟩; summed over saved
checkpoints this estimates how much training on z moved f. Here f is one head's induction score and
the gradients are restricted to that head's own parameters (`influence.head_slices`), as MDA restricts
EK-FAC to a head's subspace. Only a model whose training data Loupe can regenerate is offered it: a
zoo model whose loupe.json names its training script (`training_data`), which rebuilds any step's batch.
"""

import importlib
import sys
from pathlib import Path

import torch
from pydantic import BaseModel, Field
from safetensors.torch import load_file

from ..errors import InvalidInput, Unsupported
from ..model_store import LoadedModel
from ..tokens import decoder_kind, token_texts
from . import influence
from .head_scores import _bos_id, _candidate_vocab
from .registry import MAX_SEED, AnalysisOutput, Inputs, register, rounded
from .scores import repeated_random_tokens

FORMULAS = {
    "influence": "−Σ over the checkpoints c used of η_c · ⟨∇_θh score_h(θ_c), ∇_θh loss(z; θ_c)⟩, where θh are "
    "the head's own parameters (its query, key and value columns of c_attn, weight and bias, and its rows of "
    "c_proj), η_c the training script's learning rate at step c, score_h the head's induction score on the "
    "test below and loss(z) the mean next-token cross-entropy of training row z: the first-order change of the "
    "score that one SGD step on z at each checkpoint would make (positive: training on z raises the score). "
    "TracIn-CP: it ignores the optimiser's momentum, Adam scaling, clipping and weight decay.",
    "contribution": "per token position t of the row: the same sum with loss(z) replaced by ℓ_t(z)/T (the loss "
    "of predicting token t from the ones before it, T = row length − 1), computed exactly by one Jacobian-vector "
    "product per checkpoint; the contributions of a row sum to its influence (BOS predicts nothing: 0)",
    "score": "the head's induction score (scores.py: mean attention from each second-copy token to the token after "
    "its earlier occurrence) on `batch` random sequences of length seq_len repeated once, as head_scores computes it",
}


class DataAttributionParams(BaseModel):
    layer: int = Field(1, ge=0, le=1024, description="The head's layer")
    head: int = Field(1, ge=0, le=1024, description="The head")
    until_step: int | None = Field(None, ge=1, le=10_000_000, description="Candidate examples and checkpoints from steps before this one (default: the phase change the model declares)")
    n_steps: int = Field(16, ge=1, le=256, description="Training steps sampled (uniformly, without replacement) whose every row is a candidate example")
    n_checkpoints: int = Field(6, ge=1, le=64, description="Checkpoints up to until_step, evenly spaced by index, that TracIn sums over")
    top_k: int = Field(8, ge=1, le=64, description="How many top and bottom examples are shown with their tokens")
    seq_len: int = Field(20, ge=4, le=512, description="S of the score's repeated random tokens")
    batch: int = Field(10, ge=1, le=64, description="Random sequences the score averages over")
    seed: int = Field(0, ge=0, le=MAX_SEED, description="Seed of the sampled steps and the score's random tokens")


class Example(BaseModel):
    step: int
    row: int
    kind: str
    influence: float
    tokens: list[str]
    contributions: list[float] = Field(description="Per token position; sums to `influence`.")


class KindSummary(BaseModel):
    kind: str
    count: int
    sum: float
    mean: float
    positive: int = Field(description="How many of its examples raise the score (influence > 0).")


class DataAttribution(BaseModel):
    params: DataAttributionParams
    formulas: dict[str, str]
    layer: int
    head: int
    n_head_params: int
    until_step: int
    checkpoints: list[int]
    learning_rates: list[float]
    scores: list[float] = Field(description="The head's induction score at each checkpoint used.")
    steps: list[int] = Field(description="The sampled training steps.")
    examples: list[list] = Field(description="Every candidate: [step, row, kind, influence], ranked by influence.")
    top: list[Example]
    bottom: list[Example]
    by_kind: list[KindSummary]


def training_script(model: LoadedModel):
    """The training script module that the model's loupe.json declares, imported from the zoo package:
    only a zoo model's final weights, only a `train_*` module of the package its folder is in
    (ModelEntry.training_script), and only one offering batch(), row_kinds(), training_stream(), lr_at()."""
    path = model.entry.training_script
    if model.entry.training_data is None or path is None:
        raise Unsupported(model.entry.refusal("training_data").message, code="no_training_data")
    if str(path.parent.parent) not in sys.path:  # the zoo is a package (`models`) of the repository root
        sys.path.append(str(path.parent.parent))
    module = importlib.import_module(f"{path.parent.name}.{path.stem}")
    missing = [f for f in ("batch", "row_kinds", "training_stream", "lr_at") if not callable(getattr(module, f, None))]
    if missing:
        raise Unsupported(f"{path.stem} lacks {', '.join(missing)}: Loupe cannot regenerate its training data.", code="no_training_data")
    return module


def eager_gpt2(model: LoadedModel):
    """A float32 copy of the model as Hugging Face's GPT-2 with eager attention (its pattern is a
    differentiable output), into which checkpoints are loaded."""
    from transformers import GPT2LMHeadModel

    if model.entry.model_type != "gpt2":
        raise Unsupported(f"data_attribution slices a head's parameters out of GPT-2's fused c_attn; {model.id} is "
                          f"{model.entry.model_type or 'another architecture'}.", code="unsupported_architecture")  # fmt: skip
    return GPT2LMHeadModel.from_pretrained(model.entry.location, attn_implementation="eager", dtype=torch.float32).eval()


def load_checkpoint(hf, path: Path) -> None:
    """Loads a checkpoint's weights (fp16 on disk) into `hf` in float32; every saved tensor must fit."""
    state = {k: v.float() for k, v in load_file(path).items()}
    result = hf.load_state_dict(state, strict=False)
    missing = [k for k in result.missing_keys if k != "lm_head.weight" and not k.endswith((".attn.bias", ".attn.masked_bias"))]
    if result.unexpected_keys or missing:
        raise InvalidInput(f"checkpoint {path} does not match the model: {(result.unexpected_keys + missing)[:3]}")


def sampled_steps(until_step: int, n_steps: int, seed: int) -> list[int]:
    """n_steps training steps of [0, until_step), uniform without replacement, ascending."""
    g = torch.Generator().manual_seed(seed)
    return sorted(torch.randperm(until_step, generator=g)[: min(n_steps, until_step)].tolist())


def tracin(hf, checkpoints: dict[int, Path], x: torch.Tensor, score_tokens: torch.Tensor, lr_at, params, progress=None):
    """(contributions [example, pos] whose rows sum to each example's influence, score at each checkpoint):
    TracIn-CP on the head's parameters over rows x [example, pos]."""
    slices = influence.head_slices(hf.config, params.layer, params.head)
    total, scores = torch.zeros(x.shape[0], x.shape[1]), []
    for i, (step, path) in enumerate(checkpoints.items()):
        if progress:
            progress(f"checkpoint {step}", i / len(checkpoints))
        load_checkpoint(hf, path)
        score, grad = influence.score_gradient(hf, slices, score_tokens, params.layer, params.head, params.seq_len)
        scores.append(float(score))
        d = torch.cat([influence.loss_derivatives(hf, slices, chunk, grad) for chunk in x.split(64)])  # [example, pos - 1]
        total[:, 1:] -= lr_at(step) * d / d.shape[1]  # position t's target loss; BOS (position 0) predicts nothing
    return total, scores


@register("data_attribution", version=1, params=DataAttributionParams, needs=("tokenizer", "checkpoints", "training_data"))
def data_attribution(model: LoadedModel, params: DataAttributionParams, inputs: Inputs) -> AnalysisOutput:
    """Ranks training examples (the rows of sampled training steps, regenerated by the model's own
    training script) by their TracIn influence on one head's induction score, summed over checkpoints
    up to the phase change, with gradients restricted to the head's own parameters; the top and bottom
    rows with each token's share, and the influence by data kind."""
    script = training_script(model)
    hf = eager_gpt2(model)
    if not (0 <= params.layer < hf.config.n_layer and 0 <= params.head < hf.config.n_head):
        raise InvalidInput(f"{model.id} has {hf.config.n_layer} layers of {hf.config.n_head} heads; no L{params.layer}H{params.head}.")
    if 1 + 2 * params.seq_len > hf.config.n_positions:
        raise InvalidInput(f"1 + 2 * seq_len must fit {model.id}'s context of {hf.config.n_positions}.")
    declared = model.entry.training_data
    until = params.until_step or int(declared.get("phase_change_step") or declared.get("steps") or model.entry.checkpoints[-1])
    if declared.get("steps") and until > int(declared["steps"]):
        raise InvalidInput(f"{model.id} was trained for {declared['steps']} steps; until_step {until} is past them.")
    usable = [s for s in model.entry.checkpoints if s < until]
    if not usable:
        raise InvalidInput(f"{model.id} has no checkpoint before step {until}.")
    picks = torch.linspace(0, len(usable) - 1, min(params.n_checkpoints, len(usable))).round().long().unique().tolist()
    checkpoints = {usable[i]: model.entry.at(usable[i]).checkpoint_weights for i in picks}
    seed = int(declared.get("seed", 0))
    stream = script.training_stream(model.tokenizer)
    steps = sampled_steps(until, params.n_steps, params.seed)
    kinds_of_row = script.row_kinds()
    x = torch.cat([script.batch(step, seed, stream) for step in steps])  # [example, pos]
    ids = [(step, row, kinds_of_row[row]) for step in steps for row in range(len(kinds_of_row))]
    score_tokens = repeated_random_tokens(_candidate_vocab(model), params.batch, params.seq_len, _bos_id(model), params.seed)
    contributions, scores = tracin(hf, checkpoints, x, score_tokens, script.lr_at, params, inputs.progress)
    inputs.progress("ranking", 1.0)
    values = contributions.sum(1)  # [example]
    order = values.argsort(descending=True).tolist()
    kind = decoder_kind(model.tokenizer)

    def example(i: int) -> Example:
        step, row, row_kind = ids[i]
        return Example(step=step, row=row, kind=row_kind, influence=float(values[i]),
                       tokens=token_texts(model.tokenizer, kind, x[i].tolist()), contributions=rounded(contributions[i], 10))  # fmt: skip

    k = min(params.top_k, len(order))
    by_kind = []
    for name in dict.fromkeys(kinds_of_row):
        v = values[[i for i, (_, _, kd) in enumerate(ids) if kd == name]]
        by_kind.append(KindSummary(kind=name, count=len(v), sum=float(v.sum()), mean=float(v.mean()), positive=int((v > 0).sum())))
    return AnalysisOutput(
        result=DataAttribution(
            params=params,
            formulas=FORMULAS,
            layer=params.layer,
            head=params.head,
            n_head_params=sum(len(idx) * (hf.config.n_embd if name.endswith("weight") else 1)
                              for name, (_, idx) in influence.head_slices(hf.config, params.layer, params.head).items()),  # fmt: skip
            until_step=until,
            checkpoints=list(checkpoints),
            learning_rates=[float(script.lr_at(s)) for s in checkpoints],
            scores=scores,
            steps=steps,
            examples=[[*ids[i][:3], float(values[i])] for i in order],
            top=[example(i) for i in order[:k]],
            bottom=[example(i) for i in order[::-1][:k]],
            by_kind=by_kind,
        )
    )
