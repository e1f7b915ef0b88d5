"""Looped architectures that Loupe describes and boots itself: its own implementations of those
whose published code is remote code that transformers 5 no longer runs (Ouro, Huginn/Raven), and
transformers' own HRM-Text, whose two stacks and nested cycles its config does not spell out.

A folder or hub snapshot whose config.json names one of MODEL_TYPES loads with Loupe's classes,
written from the published equations and reading the published config keys and tensor names;
whatever its `auto_map` says, its own code never runs. Each module provides:

- `facts(config: dict) -> Facts`: what /api/models lists, from config.json alone;
- `boot(path: Path, device: str) -> TransformerBridge`: the model, wrapped by a bridge whose
  `blocks` are every layer in the order the forward runs them (so each block's hooks fire once per
  iteration, as loops.py counts them).

Its HF module may offer `exit_logits(input_ids, n_iterations=None)` ([iteration, batch, pos, d_vocab]:
its own output had it stopped after each iteration) and, with an exit gate (Ouro),
`exit_gate(input_ids, n_iterations=None)` (dict: `exit_lambda` and `exit_pdf` [iteration, batch, pos],
`expected_exit_step` [batch, pos]).

A model whose forward draws random numbers (Huginn's initial latent) reads the HF module attribute
`latent_seed`: Loupe sets it under the model's lock (loops.seeded), and every forward then draws
from a generator seeded with it, so the same request gives the same result.
"""

from dataclasses import dataclass
from importlib import import_module
from types import ModuleType

# config.json `model_type` -> the module of this package that implements it
MODEL_TYPES = {"ouro": "ouro", "huginn_raven": "huginn", "hrm_text": "hrm_text"}


@dataclass(frozen=True)
class Facts:
    """What a native architecture's config says, in Loupe's terms."""

    n_layers: int  # every layer the forward runs, in order (Huginn: prelude + core + coda)
    n_heads: int
    n_iterations: int  # the default loop count (Ouro: total_ut_steps; Huginn: mean_recurrence)
    n_ctx: int
    draws_random: bool = False  # the forward draws random numbers (seeded through `latent_seed`)
    own_exit: bool = False  # its own early exit is more than final norm + unembedding (Huginn: the coda): `exit_logits`
    fixed_loop: bool = False  # its loop is set by its config alone (HRM's cycles): no `loop.times`
    exit_gate: bool = False  # the model decides per token when to stop looping (Ouro): HF method `exit_gate`


def native(model_type: str) -> ModuleType | None:
    """The module implementing `model_type`, or None when transformers' own classes load it."""
    name = MODEL_TYPES.get(model_type)
    return import_module(f"{__name__}.{name}") if name else None
