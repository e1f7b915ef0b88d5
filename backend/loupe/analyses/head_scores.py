"""`head_scores`: induction, previous-token, duplicate-token and BOS-sink score of every head, on repeated random tokens."""

import torch
from pydantic import BaseModel, Field

from ..capture import summarize_and_store
from ..errors import TooLong
from ..loops import LoopSpec
from ..model_store import LoadedModel
from .registry import MAX_SEED, AnalysisOutput, Inputs, register, rounded
from .scores import SCORE_FORMULAS, repeated_random_tokens, score_heads


class HeadScoreParams(BaseModel):
    seq_len: int = Field(50, ge=4, le=512, description="S: length of the random sequence, which is repeated once")
    batch: int = Field(10, ge=1, le=64, description="How many random sequences are averaged over")
    seed: int = Field(0, ge=0, le=MAX_SEED, description="Seed of the random tokens")
    loop: LoopSpec | None = Field(None, description="Loop count, or a retrofit loop of a plain model.")


class HeadScores(BaseModel):
    params: HeadScoreParams
    formulas: dict[str, str]
    # score name -> [iteration][layer][head]
    scores: dict[str, list[list[list[float | None]]]]  # null: a layer without attention (hybrid stacks)
    attention_layers: list[int] = Field(default_factory=list, description="The layers with attention.")
    # the first test sequence, whose patterns are stored for the heatmap view
    tokens: list[str]
    token_ids: list[int]
    n_iterations: int
    n_layers: int
    n_heads: int


def _candidate_vocab(model: LoadedModel) -> torch.Tensor:
    """Token ids that random sequences may use: everything but the tokenizer's special tokens."""
    special = set(model.tokenizer.all_special_ids)
    return torch.tensor([i for i in range(model.bridge.cfg.d_vocab) if i not in special])


# On an encoder every query sees both copies whole: a head that attends to i-S+1 may do so, but not
# as the causal induction mechanism (attending to what followed an earlier occurrence in order to
# predict the next token), which needs a model that cannot see ahead. The score is kept, marked so.
ENCODER_INDUCTION = (
    " — on this encoder (bidirectional attention, every query sees both copies) it measures where the head "
    "attends, not the causal induction mechanism: the model sees the token itself and predicts no next one"
)


def formulas_for(model: LoadedModel) -> dict[str, str]:
    """The score formulas, the induction one marked on an encoder (previous- and duplicate-token
    mean the same on either)."""
    if not model.entry.encoder:
        return SCORE_FORMULAS
    return {**SCORE_FORMULAS, "induction": SCORE_FORMULAS["induction"] + ENCODER_INDUCTION}


def _bos_id(model: LoadedModel) -> int:
    """The first token of each sequence: BOS, an encoder's [CLS], else EOS."""
    tokenizer = model.tokenizer
    cls = tokenizer.cls_token_id if model.entry.encoder else None
    for candidate in (tokenizer.bos_token_id, cls, tokenizer.eos_token_id, 0):
        if candidate is not None:
            return int(candidate)
    return 0


@register("head_scores", version=3, params=HeadScoreParams, needs=("attention",), stores_patterns=True)
def head_scores(model: LoadedModel, params: HeadScoreParams, inputs: Inputs) -> AnalysisOutput:
    """Scores every head on `batch` random sequences of length S repeated twice after BOS
    (positions 1..S, then S+1..2S). Induction: mean attention from i in the second copy to
    i-S+1, the token after the earlier occurrence. Previous-token: mean attention from i to i-1
    (i >= 2). Duplicate-token: mean attention from i in the second copy to i-S, the earlier
    occurrence itself. BOS sink: mean attention from i >= 1 to position 0. One forward pass; the first sequence's patterns are kept for the heatmap."""
    if 1 + 2 * params.seq_len > model.n_ctx:
        raise TooLong(f"1 + 2 * seq_len = {1 + 2 * params.seq_len} exceeds {model.id}'s context of {model.n_ctx}.")
    tokens = repeated_random_tokens(_candidate_vocab(model), params.batch, params.seq_len, _bos_id(model), params.seed)
    inputs.progress("forward", 0.1)  # tokens: [batch, 1 + 2 * seq_len]
    # score -> [iteration, layer, head]; the first sequence's patterns are stored
    stacked, patterns = summarize_and_store(model, tokens, lambda probs: score_heads(probs, params.seq_len), params.loop)
    return AnalysisOutput(
        result=HeadScores(
            params=params,
            formulas=formulas_for(model),
            scores={name: rounded(value) for name, value in stacked.items()},
            tokens=model.str_tokens(tokens[0]),
            token_ids=tokens[0].tolist(),
            n_iterations=next(iter(stacked.values())).shape[0],
            n_layers=model.n_layers,
            n_heads=model.n_heads,
            attention_layers=model.attention_layers,
        ),
        patterns=patterns,
    )
