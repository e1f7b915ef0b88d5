"""Per-iteration capture: hooks that append every firing instead of overwriting the last.

A looped model runs its weight-shared blocks K times per forward pass, so each block's hooks
fire K times; TransformerBridge's run_with_cache keeps only the last. Here every firing is kept
in order, and the k-th firing of a hook is iteration k. A plain model fires each hook once and
so has exactly one iteration: every analysis sees the same `[iteration, layer, ...]` layout.

Loops come from the model (Ouro, the embedded looped model: their HF forward loops, and the
count is the module attribute `total_ut_steps`) or from the user (a "retrofit loop": layers
start..end of a plain model repeated `times` times, by re-calling their blocks). `looping()`
sets either up for one forward pass. Early exit (`readout`) is the final norm and unembedding
applied to the residual after the last looped layer of each iteration.
"""

from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from functools import partial
from typing import Any, TypeVar

import torch
from pydantic import BaseModel, Field

from .architectures import native
from .errors import InvalidInput, Unsupported
from .model_store import LoadedModel
from .progress import checkpoint

# A per-firing transform, applied inside the hook: (activation, hook_name) -> what to keep.
Keep = Callable[[torch.Tensor, str], Any]

MAX_TIMES = 256  # the schema's bound; LOUPE_MAX_ITERATIONS sets the one a server accepts
MAX_SEED = 2**31 - 1

T = TypeVar("T")


class LoopSpec(BaseModel):
    """How to loop a model for one analysis. A natively looped model takes only `times` (its
    loop count, default the trained one); a plain model loops layers start..end `times` times."""

    start: int | None = Field(None, ge=0, description="First looped layer (plain models; default 0).")
    end: int | None = Field(None, ge=0, description="Last looped layer, inclusive (plain models; default the last).")
    times: int | None = Field(None, ge=1, le=MAX_TIMES, description="Iterations: how often the looped layers run.")
    seed: int | None = Field(
        None,
        ge=0,
        le=MAX_SEED,
        description="Seed of the model's own random draws (Huginn's initial latent), for models that make any "
        "(capability `seeded`); default 0, so the same request always gives the same result.",
    )


def _keep_detached(activation: torch.Tensor, name: str) -> torch.Tensor:
    return activation.detach()


def run_recording(
    model: LoadedModel,
    tokens: torch.Tensor,
    hook_names: Sequence[str],
    keep: Keep = _keep_detached,
    **forward_kwargs: Any,
) -> tuple[Any, dict[str, list[Any]]]:
    """One forward pass that records every firing of `hook_names`; returns (output, firings).

    firings[name] lists what `keep` returned for each firing, in firing order, under the name
    as requested (an alias such as `hook_resid_post` stays an alias). The caller must hold
    model.lock: hooks are global state on the model. Hooks are removed even on error.
    """
    model.require_bridge()
    if (refusal := model.entry.refusal("readout")) is not None:  # the residual path is verified with the readout (or own exit)
        raise refusal
    firings: dict[str, list[Any]] = {name: [] for name in hook_names}
    # TransformerBridge's attention modules keep their last float32 pattern in `_pattern` (all
    # layers: 576 MB at T=1024 on GPT-2 small) until the next forward. Dropping them at every
    # firing keeps at most one layer's alive (bench/RESULTS.md: memory 2.95x -> 1.16x of fp16).
    keepers = [module for module in model.bridge.modules() if hasattr(module, "_pattern")]

    def drop_kept_patterns() -> None:
        for module in keepers:
            module._pattern = None

    def recorder(name: str) -> Callable[[torch.Tensor, Any], torch.Tensor]:
        def record(activation: torch.Tensor, hook: Any) -> torch.Tensor:
            checkpoint()  # a job past its time limit stops here, within one layer
            drop_kept_patterns()
            firings[name].append(keep(activation, name))
            return activation

        return record

    try:
        with torch.inference_mode():
            output = model.bridge.run_with_hooks(
                tokens,
                fwd_hooks=[(name, recorder(name)) for name in hook_names],
                reset_hooks_end=True,
                use_cache=False,  # a KV cache would grow on every repeated layer call
                **forward_kwargs,
            )
    finally:
        drop_kept_patterns()
    return output, firings


def iterations_of(counts: Sequence[int]) -> int:
    """The iteration count of a pass from how often each layer's hook fired: layers in a loop
    fire K times; in a retrofit loop (or Huginn's prelude and coda) the layers outside it fire
    once (their single firing is the same activation at every iteration); a stack that runs once
    every few iterations (HRM's slow H stack, once per L_cycles runs of the fast L stack) fires a
    divisor of K times; a layer without attention in a hybrid stack never fires an attention hook.
    Any other unevenness is an error."""
    fired = [count for count in counts if count]
    n_iterations = max(fired, default=0)
    if n_iterations == 0 or any(n_iterations % count for count in fired):
        raise RuntimeError(f"hooks fired unevenly across layers: {sorted(set(counts))}")
    return n_iterations


def firing_at(count: int, n_iterations: int, iteration: int) -> int | None:
    """Which of a layer's `count` firings (see iterations_of) shows at `iteration`: the one of that
    iteration; a single firing at every iteration; for a stack that runs every `stride` iterations,
    its run at the end of each stride and None (nothing ran) in between."""
    if count in (n_iterations, 1):
        return iteration if count == n_iterations else 0
    stride = n_iterations // count
    return iteration // stride if (iteration + 1) % stride == 0 else None


def nan_like(value: Any) -> Any:
    """`value`'s shape filled with NaN (tensors, nested lists, mappings): what a layer that holds no
    attention (a state-space or convolution layer of a hybrid stack) shows where attention layers
    show a number. JSON turns it into null (registry.rounded)."""
    if isinstance(value, torch.Tensor):
        return torch.full_like(value, float("nan"))
    if isinstance(value, Mapping):
        return {key: nan_like(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [nan_like(item) for item in value]
    return float("nan")


def by_iteration(
    kept: Mapping[tuple[int, int], T], n_layers: int, missing: Callable[[T], Any] = nan_like
) -> list[list[T]]:
    """[iteration][layer] from values kept per (iteration, layer) firing; a layer that fired once
    in a multi-iteration pass contributes its one value at every iteration, and a layer that never
    fired (no attention) `missing(an example value)`."""
    counts = [0] * n_layers
    for _, layer in kept:
        counts[layer] += 1
    n_iterations = iterations_of(counts)
    example = next(iter(kept.values()))

    def cell(iteration: int, layer: int) -> T:
        firing = firing_at(counts[layer], n_iterations, iteration) if counts[layer] else None
        return missing(example) if firing is None else kept[firing, layer]

    return [[cell(iteration, layer) for layer in range(n_layers)] for iteration in range(n_iterations)]


def stack_by_iteration(kept: Mapping[tuple[int, int], Mapping[str, Any]], n_layers: int) -> dict[str, torch.Tensor]:
    """name -> [iteration, layer, ...] from named values (tensors or nested lists) kept per
    (iteration, layer) firing."""
    grid = by_iteration(kept, n_layers)
    return {name: torch.tensor([[cell[name] for cell in row] for row in grid]) for name in grid[0][0]}


def stack_iterations(firings: dict[str, list[torch.Tensor]], hook_names: Sequence[str]) -> torch.Tensor:
    """[iteration, layer, ...] from per-layer firing lists, placed as by_iteration places them (NaN
    where a layer's stack did not run)."""
    kept = {(firing, layer): value for layer, name in enumerate(hook_names) for firing, value in enumerate(firings[name])}
    grid = by_iteration(kept, len(hook_names))  # [iteration][layer]
    return torch.stack([torch.stack(row) for row in grid])  # [iteration, layer, ...]


def _native_loop_owner(model: LoadedModel) -> Any | None:
    """The submodule whose `total_ut_steps` sets the loop count (Ouro, the embedded model), if any."""
    for module in model.bridge.original_model.modules():
        if isinstance(getattr(module, "total_ut_steps", None), int):
            return module
    return None


def loop_layers(model: LoadedModel, spec: LoopSpec | None) -> tuple[int, int]:
    """(start, end) of the looped layers, inclusive: all layers for a plain model or one whose whole
    stack loops; a natively looped model with layers outside its loop (Huginn's prelude and coda)
    names them as its loop owner's `looped_layers`."""
    owner = _native_loop_owner(model)
    if owner is not None and getattr(owner, "looped_layers", None) is not None:
        start, end = owner.looped_layers
        return int(start), int(end)
    if spec is None or owner is not None:
        return 0, model.n_layers - 1
    start = 0 if spec.start is None else spec.start
    end = model.n_layers - 1 if spec.end is None else spec.end
    return start, end


def _validate(model: LoadedModel, spec: LoopSpec) -> None:
    native = _native_loop_owner(model) is not None
    if model.entry.fixed_loop and (spec.start, spec.end, spec.times) != (None, None, None):
        raise InvalidInput(f"{model.id}'s loop is set by its config ({model.n_iterations} iterations); run it without `loop`.")
    if native and (spec.start is not None or spec.end is not None):
        raise InvalidInput(f"{model.id} loops natively over all its layers; set only loop.times.")
    start, end = loop_layers(model, spec)
    if not start <= end < model.n_layers:
        raise InvalidInput(f"loop needs 0 <= start <= end < {model.n_layers}; got start={start}, end={end}.")


def _hidden_of(output: Any) -> torch.Tensor:
    return output[0] if isinstance(output, tuple) else output


def _with_hidden(args: tuple, kwargs: dict, hidden: torch.Tensor) -> tuple[tuple, dict]:
    if "hidden_states" in kwargs:
        return args, {**kwargs, "hidden_states": hidden}
    return (hidden, *args[1:]), kwargs


@contextmanager
def _retrofit(blocks: Sequence[torch.nn.Module], start: int, end: int, times: int) -> Iterator[None]:
    """Blocks start..end run `times` times in a row: when block `end` returns, the loop re-calls
    start..end with the arguments each received from the model's own forward. `blocks`: the
    bridge's block components, or the HF blocks they wrap when the HF model runs unwrapped."""
    calls: dict[int, tuple[tuple, dict]] = {}
    state = {"replaying": False}

    def patched(layer: int, original: Callable[..., Any]) -> Callable[..., Any]:
        def forward(*args: Any, **kwargs: Any) -> Any:
            if not state["replaying"]:
                calls[layer] = (args, kwargs)
            output = original(*args, **kwargs)
            if layer != end or state["replaying"]:
                return output
            state["replaying"] = True
            try:
                for _ in range(times - 1):
                    for again in range(start, end + 1):
                        again_args, again_kwargs = _with_hidden(*calls[again], _hidden_of(output))
                        output = blocks[again](*again_args, **again_kwargs)
            finally:
                state["replaying"] = False
            return output

        return forward

    # object.__setattr__: a bridge component would forward a plain setattr to the wrapped HF module.
    saved = {layer: vars(blocks[layer]).get("forward") for layer in range(start, end + 1)}
    for layer in range(start, end + 1):
        object.__setattr__(blocks[layer], "forward", patched(layer, blocks[layer].forward))
    try:
        yield
    finally:
        for layer, forward in saved.items():
            if forward is None:
                object.__delattr__(blocks[layer], "forward")  # the class's forward shows through again
            else:
                object.__setattr__(blocks[layer], "forward", forward)


def seed_of(params: Any) -> int:
    """The seed of a request's model-side random draws: its `loop.seed`, else 0."""
    loop = getattr(params, "loop", None)
    return 0 if loop is None or loop.seed is None else loop.seed


@contextmanager
def seeded(model: LoadedModel, seed: int) -> Iterator[None]:
    """Every forward in the block draws the model's random numbers (Huginn's initial latent) from
    a generator seeded with `seed` afresh per forward (architectures/__init__.py: `latent_seed`),
    so an analysis' passes (an ablation's clean and ablated runs) share one draw. The caller holds
    model.lock. A model that draws nothing is left as it is."""
    owners = [module for module in model.bridge.original_model.modules() if hasattr(module, "latent_seed")]
    saved = [owner.latent_seed for owner in owners]
    for owner in owners:
        owner.latent_seed = seed
    try:
        yield
    finally:
        for owner, value in zip(owners, saved):
            owner.latent_seed = value


@contextmanager
def looping(model: LoadedModel, spec: LoopSpec | None, native: bool = False) -> Iterator[None]:
    """Apply `spec` to the model for the duration of the block; the caller holds model.lock.

    Natively looped model: `times` replaces the loop count. Plain model: a retrofit loop of
    layers start..end, `times` times (times None or 1: the model as it is), on the bridge's
    blocks, or with `native` on the HF blocks they wrap (capture.py runs those unwrapped)."""
    if spec is None:
        yield
        return
    _validate(model, spec)
    owner = _native_loop_owner(model)
    if owner is not None:
        saved = owner.total_ut_steps
        owner.total_ut_steps = spec.times or saved
        try:
            yield
        finally:
            owner.total_ut_steps = saved
        return
    if not spec.times or spec.times == 1:
        yield
        return
    start, end = loop_layers(model, spec)
    blocks = [block.original_component for block in model.blocks] if native else model.blocks
    with _retrofit(blocks, start, end, spec.times):
        yield


def resid_hook_names(model: LoadedModel) -> list[str]:
    return [f"{name}.hook_resid_post" for name in model.block_names]


def capture_residuals(
    model: LoadedModel, tokens: torch.Tensor, positions: torch.Tensor, loop: LoopSpec | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """The residual stream after every layer at every iteration, kept only at `positions`.

    tokens: [batch, pos]; positions: [n] indices into pos. Returns (logits [batch, pos, d_vocab],
    resid [iteration, layer, batch, n, d_model] float32). Slicing inside the hook keeps memory
    at n positions whatever the text length.
    """
    names = resid_hook_names(model)
    with looping(model, loop):
        logits, firings = run_recording(model, tokens, names, keep=lambda act, name: act[:, positions].detach().clone())
    return logits, stack_iterations(firings, names).float()  # [iteration, layer, batch, n, d_model]


def exit_logits(model: LoadedModel, tokens: torch.Tensor, positions: torch.Tensor, loop: LoopSpec | None = None) -> torch.Tensor:
    """[iteration, batch, n, d_vocab] float32: what the model would say at `positions` had it stopped
    after each iteration: its own exit (`exit_logits` of a model whose early exit is more than norm
    and unembedding, as Huginn's coda, or of its architecture module, as HRM's; NaN after an
    iteration it does not exit from), else the early exit (`readout`) of the last looped layer."""
    if model.entry.own_exit:
        hf = model.bridge.original_model
        own = getattr(hf, "exit_logits", None) or partial(native(model.entry.model_type).exit_logits, hf)
        with torch.inference_mode(), looping(model, loop):
            return own(tokens)[:, :, positions].float()
    name = f"{model.block_names[loop_layers(model, loop)[1]]}.hook_resid_post"
    with looping(model, loop):
        _, firings = run_recording(model, tokens, [name], keep=lambda act, _: act[:, positions].detach().clone())
    return readout(model, torch.stack(firings[name]))


def readout(model: LoadedModel, resid: torch.Tensor) -> torch.Tensor:
    """Early exit: logits [..., d_vocab] from residuals [..., d_model] through the model's own
    final norm and unembedding (the model's output when given its last layer's residual).
    Unsupported (422) for a model type on which that is not verified to be its own head."""
    if (refusal := model.entry.refusal("readout")) is not None:
        raise refusal
    if model.entry.own_exit:
        raise Unsupported(
            f"{model.id}'s early exit is more than its final norm and unembedding (Huginn runs its coda after "
            "the recurrence), so a single layer's residual is not read out; its own exit after each iteration is.",
            code="unverified_readout",
        )
    with torch.inference_mode():
        if model.entry.encoder:  # the whole MLM head (dense, activation, norm, decoder): the bridge's ln_final is only its norm
            return _mlm_head(model.bridge.original_model)(resid.to(model.bridge.cfg.dtype)).float()
        return model.bridge.unembed(model.bridge.ln_final(resid.to(model.bridge.cfg.dtype))).float()


def _mlm_head(hf: torch.nn.Module) -> torch.nn.Module:
    """An encoder's masked-LM head, from its last hidden state to logits (BERT's cls.predictions,
    RoBERTa's lm_head)."""
    head = getattr(getattr(hf, "cls", None), "predictions", None) or getattr(hf, "lm_head", None)
    if head is None:
        raise ValueError(f"{type(hf).__name__} has no masked-LM head")
    return head
