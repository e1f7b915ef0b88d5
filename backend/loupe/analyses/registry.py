"""AnalysisSpec, @register and REGISTRY: how an analysis is known by its name everywhere.

The registry id is the URL value, part of the cache key, and the name of the frontend renderer.
"""

import math
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import Any

import torch
from pydantic import BaseModel

from ..errors import InvalidInput
from ..codec import KeptAttention, PatternStore
from ..hashing import content_key
from ..loops import MAX_SEED  # every seed param's bound (re-exported for the analyses)


@dataclass
class Inputs:
    """What a request gives an analysis besides its params."""

    text: str | None = None
    max_tokens: int = 1024
    max_stored_tokens: int = 2048  # longest prompt whose patterns are stored whole (where not recomputed)
    progress: Callable[[str, float], None] = field(default=lambda stage, fraction: None)
    # another analysis' JSON result by (registry name, params[, on]), from the run service's cache;
    # `on`: another loaded model (a checkpoint from `model_at`) instead of the analysis' own
    require: Callable[..., dict] | None = None
    # another model id (a checkpoint of this one): loaded for the caller, its lock held while inside
    model_at: Callable[[str], AbstractContextManager[Any]] | None = None


@dataclass
class AnalysisOutput:
    """A summary result (small, JSON) and optionally patterns to store per head."""

    result: BaseModel
    patterns: PatternStore | KeptAttention | None = None  # every (iteration, layer, head)'s pattern, or what recomputes it


# What an analysis can need. Inputs: `text` (a prompt), `labelled_data` (rows with labels, built in
# or uploaded). Model capabilities (ModelEntry.capabilities): `attention` (softmax attention Loupe
# captures exactly), `tokenizer`, `readout` (an early exit verified to be the model's own output
# head: verified.READOUT_MODEL_TYPES), `loop` (a natively looped model), `generating_lm` (a language
# model whose generations mean something), `causal_lm` (predicts the next token: every model but an
# encoder), `unembedding` (reads its residual out as tokens: all but an encoder without its MLM head),
# `exit_gate` (the model decides per token when to stop looping: Ouro), `checkpoints` (final weights
# with training checkpoints, `<id>@<step>`), `training_data` (a zoo model whose training script,
# named in its loupe.json, regenerates every step's batch).
INPUT_NEEDS = ("text", "labelled_data")
MODEL_NEEDS = ("attention", "tokenizer", "readout", "loop", "generating_lm", "causal_lm", "unembedding", "exit_gate", "checkpoints", "training_data")
# The model needs the server enforces, refusing with a 422 before computing: without them the
# analysis cannot be computed exactly. (`loop` and `generating_lm` only say where a view means
# something; the page shows the card where they hold.)
ENFORCED_NEEDS = ("attention", "tokenizer", "readout", "causal_lm", "unembedding", "exit_gate", "checkpoints", "training_data")


@dataclass(frozen=True)
class AnalysisSpec:
    name: str
    version: int
    params: type[BaseModel]
    fn: Callable[..., AnalysisOutput]
    needs: tuple[str, ...]
    stores_patterns: bool
    description: str

    @property
    def takes_text(self) -> bool:
        return "text" in self.needs

    @property
    def takes_loop(self) -> bool:
        """Whether the params take a `loop` (a loop count, or a retrofit loop of a plain model)."""
        return "loop" in self.params.model_fields

    @property
    def enforced_needs(self) -> tuple[str, ...]:
        return tuple(need for need in self.needs if need in ENFORCED_NEEDS)

    def applies_to(self, capabilities: tuple[str, ...] | list[str]) -> bool:
        """Whether a model with these capabilities has everything this analysis needs."""
        return all(need in capabilities for need in self.needs if need in MODEL_NEEDS)

    def key(self, model: str, revision: str, text: str | None, params: BaseModel) -> str:
        """The content key of a request: cache key and permalink id. Validated params (defaults
        filled in) are hashed, so `{}` and the explicit defaults give the same id."""
        return content_key(
            {
                "analysis": self.name,
                "version": self.version,
                "model": model,
                "revision": revision,
                "text": text,
                "params": params.model_dump(mode="json"),
            }
        )

    def public(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "version": self.version,
            "description": self.description,
            "needs": list(self.needs),
            "takes_text": self.takes_text,
            "takes_loop": self.takes_loop,
            "stores_patterns": self.stores_patterns,
            "params": self.params.model_json_schema(),
        }


REGISTRY: dict[str, AnalysisSpec] = {}



def register(
    name: str, *, version: int, params: type[BaseModel], needs: tuple[str, ...] = (), stores_patterns: bool = False
):
    """Register an analysis function under `name`. Raise `version` when its output would change.
    `needs` names its inputs and the model capabilities it requires (INPUT_NEEDS, MODEL_NEEDS);
    `stores_patterns`: its output holds per-head patterns, served by the slice routes."""

    def decorate(fn: Callable[..., AnalysisOutput]) -> Callable[..., AnalysisOutput]:
        if name in REGISTRY:
            raise ValueError(f"analysis {name!r} is registered twice")
        unknown = set(needs) - set(INPUT_NEEDS + MODEL_NEEDS)
        if unknown:
            raise ValueError(f"analysis {name!r} needs unknown {sorted(unknown)}")
        reads_text = any(need in INPUT_NEEDS for need in needs)  # text or rows of text: the tokenizer reads them
        declared = tuple(needs) + (("tokenizer",) if reads_text and "tokenizer" not in needs else ())
        description = " ".join((fn.__doc__ or "").split())
        REGISTRY[name] = AnalysisSpec(name, version, params, fn, declared, stores_patterns, description)
        return fn

    return decorate


def rounded(values: torch.Tensor, decimals: int = 4) -> list:
    """A tensor as nested JSON lists, rounded in float64 so the JSON carries no float32 noise; NaN
    (a layer without attention in a hybrid stack) becomes null."""
    return _nan_to_none(values.detach().double().round(decimals=decimals).tolist())


def _nan_to_none(value: Any) -> Any:
    if isinstance(value, list):
        return [_nan_to_none(item) for item in value]
    return None if isinstance(value, float) and math.isnan(value) else value


def tensor_of(values: list) -> torch.Tensor:
    """A float tensor from nested JSON lists (a stored result), null read back as NaN."""

    def fill(value: Any) -> Any:
        return [fill(item) for item in value] if isinstance(value, list) else float("nan") if value is None else value

    return torch.tensor(fill(values), dtype=torch.float32)


def required_result(model: Any, inputs: Inputs, name: str, params: BaseModel) -> dict:
    """The JSON result of analysis `name` on the same model: through the run service (cached and
    stored as its own analysis) or, outside one (tests, benchmarks), computed here."""
    if inputs.require is not None:
        return inputs.require(name, params)
    quiet = Inputs(max_tokens=inputs.max_tokens)
    return REGISTRY[name].fn(model, params, quiet).result.model_dump(mode="json")


def require_text(inputs: Inputs) -> str:
    if not inputs.text or not inputs.text.strip():
        raise InvalidInput("This analysis needs a non-empty `text`.")
    return inputs.text
