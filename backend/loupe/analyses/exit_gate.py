"""`exit_gate`: where a looped model with an exit gate (Ouro) would stop looping, token by token.

Ouro reads a gate after every loop step: λ_t, the probability of stopping at step t if it got there.
The probability of exiting at step t is then λ_t · Π_{s<t} (1 − λ_s), the last step taking what is
left; its mean is the expected exit step, and at inference the model stops at the first step whose
cumulative probability reaches `early_exit_threshold` (as published, in the model's own dtype: at
1.0 a token whose probabilities already sum to 1 in that dtype stops early). All of these are computed by the model's
own code (architectures/ouro.py). Beside them, what the model would answer after each step (its own
per-step exit) and the step from which that answer no longer changes: does the gate stop the loop
where the answer is already there?
"""

import torch
from pydantic import BaseModel, Field

from ..loops import LoopSpec, looping
from ..model_store import LoadedModel
from .registry import AnalysisOutput, Inputs, register, require_text, rounded


class ExitGateParams(BaseModel):
    loop: LoopSpec | None = Field(None, description="Loop count: the gate is read after every step.")


class ExitGate(BaseModel):
    tokens: list[str]
    token_ids: list[int]
    n_iterations: int
    # [iteration][pos]
    exit_lambda: list[list[float]] = Field(description="λ: the gate's probability of stopping at a step, having got there.")
    exit_pdf: list[list[float]] = Field(description="The probability of exiting at each step (the last step takes the rest).")
    exit_cdf: list[list[float]] = Field(description="The probability of having exited by each step.")
    # [pos]
    expected_exit_step: list[float] = Field(description="Σ_t t · pdf_t, steps counted from 1.")
    threshold: float | None = Field(description="The model's early_exit_threshold (None: it always runs every step).")
    output_step: list[int] = Field(
        description="The step (from 1) the model's own output comes from: the first whose cdf reaches the threshold "
        "(or the model's fixed exit step), by its own rule and in its own dtype."
    )
    # [iteration][pos]: the model's own answer after each step
    top_tokens: list[list[str]]
    top_probs: list[list[float]]
    settled_step: list[int] = Field(description="The first step (from 1) from which the top token equals the last step's.")


def gate_of(model: LoadedModel, tokens: torch.Tensor, loop: LoopSpec | None) -> dict[str, torch.Tensor]:
    """The model's own exit gate over tokens [batch, pos]: `exit_lambda`, `exit_pdf` [iteration,
    batch, pos], `expected_exit_step` and `exit_iteration` [batch, pos] (architectures/ouro.py).
    Caller holds the lock."""
    with torch.inference_mode(), looping(model, loop):
        return {name: value.float() for name, value in model.bridge.original_model.exit_gate(tokens).items()}


def settled(top: torch.Tensor) -> torch.Tensor:
    """[pos] the first step (from 1) from which the top token [iteration, pos] equals the last step's."""
    same = top == top[-1]  # [iteration, pos]
    # a suffix of agreeing steps: scan from the end while they agree
    agreeing_suffix = same.flip(0).cumprod(0).flip(0)  # [iteration, pos]: 1 where every later step agrees too
    return top.shape[0] - agreeing_suffix.sum(0) + 1


@register("exit_gate", version=1, params=ExitGateParams, needs=("text", "exit_gate", "loop"))
def exit_gate(model: LoadedModel, params: ExitGateParams, inputs: Inputs) -> AnalysisOutput:
    """Per token and loop step: the exit gate's probability of stopping, the probability of
    exiting there, the expected exit step and the step Ouro's output comes from, beside the
    model's own answer after each step and the step from which it stops changing."""
    tokens = model.tokenize(require_text(inputs), inputs.max_tokens)  # [1, pos]
    inputs.progress("gate", 0.1)
    gate = gate_of(model, tokens, params.loop)
    pdf = gate["exit_pdf"][:, 0]  # [iteration, pos]
    threshold = getattr(model.bridge.original_model, "early_exit_threshold", None)
    inputs.progress("exits", 0.5)
    with torch.inference_mode(), looping(model, params.loop):
        probs = model.bridge.original_model.exit_logits(tokens)[:, 0].float().softmax(-1)  # [iteration, pos, d_vocab]
    top = probs.max(-1)  # [iteration, pos]
    decode = model.tokenizer.decode
    return AnalysisOutput(
        result=ExitGate(
            tokens=model.str_tokens(tokens[0]),
            token_ids=tokens[0].tolist(),
            n_iterations=pdf.shape[0],
            exit_lambda=rounded(gate["exit_lambda"][:, 0]),
            exit_pdf=rounded(pdf),
            exit_cdf=rounded(pdf.cumsum(0)),
            expected_exit_step=rounded(gate["expected_exit_step"][0]),
            threshold=None if threshold is None else float(threshold),
            output_step=(gate["exit_iteration"][0].long() + 1).tolist(),
            top_tokens=[[decode([i]) for i in row] for row in top.indices.tolist()],
            top_probs=rounded(top.values),
            settled_step=settled(top.indices).tolist(),
        )
    )
