"""Attention capture inside the model's own forward pass.

TransformerBridge recomputes attention in Python so that every intermediate has a hook; that
costs 1.3-1.8x the model's own SDPA forward at T = 1024 before any pattern is kept (bench/RESULTS.md).
Patterns need none of those intermediates. So for a pattern capture the bridge's components are
swapped back to the HF modules they wrap, and the HF model runs with Loupe's attention function,
registered through transformers' AttentionInterface: the same computation as the model's eager
attention (scores, its own mask, softmax, weights x values), in one buffer reused by every layer
(scores, then in place their softmax), and every layer's probabilities handed to a callback while
they exist. Nothing else is kept unless the callback keeps it, and the logits of all but the last
position are not computed unless asked for.

Models whose HF class does not route attention through the AttentionInterface fall back to the
bridge's `hook_pattern` (slower, same values). Either way the callback sees
`(iteration, layer, probs [batch, head, query_pos, key_pos] float32)`, iteration being the
how-many-th firing of that layer in this forward pass (loops: see loops.py). `probs` is valid only
during the call and must not be modified.
"""

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any

import torch

from . import fused
from .attention_rule import AttentionRule, NotModelled, Rows
from .codec import THUMBNAIL_SIZE, KeptAttention, PatternStore
from .loops import LoopSpec, by_iteration, looping, stack_by_iteration
from .errors import Unsupported
from .model_store import LoadedModel
from .progress import checkpoint
from .verified import NATIVE_MODEL_TYPES

ATTENTION = "loupe_capture"
KEPT = "loupe_kept"  # the same function under SDPA's boolean masks: the kept path (no T x T float mask)

OnPattern = Callable[[int, int, torch.Tensor], None]
OnRows = Callable[[int, int, "Rows | fused.LayerRows"], None]  # (iteration, layer, a chunk of query rows, or all of them)
OnKept = Callable[[int, int, torch.Tensor, torch.Tensor, AttentionRule], None]  # (..., query [head, T, d], key [kv_head, T, d], rule)

# Keyword arguments of an attention call that the plain computation below models: bookkeeping,
# or masking that the eager mask it is given already holds (a sliding window). Any other with a
# value (soft-capping, sinks, sparse indices, anything new) runs the model's own eager function.
_MODELLED = frozenset(
    {"sliding_window", "position_ids", "cache_position", "is_causal", "use_cache", "output_attentions",
     "past_key_value", "past_key_values", "layer_idx", "cu_seq_lens_q", "cu_seq_lens_k", "max_length_q",
     "max_length_k", "head_mask", "position_embeddings", "token_type_ids"}
)


# What the kept path models besides: the arguments a mixture-of-experts model passes down to every
# module, which say what to return, not how attention computes (the pattern path hands such calls to
# the model's own function), and the soft-cap and sinks AttentionRule applies itself.
_KEPT_MODELLED = _MODELLED | {"output_router_logits", "softcap", "s_aux"}


@dataclass
class _Recording:
    layer_of: dict[int, int]  # id(HF attention module) -> layer
    on_pattern: OnPattern
    counts: list[int]
    probs: torch.Tensor | None = None
    n_keys: int | None = None  # what every layer attends over in a pass without a KV cache
    to_cpu: bool = False  # a model spread over devices: every layer's pattern comes back to the CPU as it fires
    kept: tuple[OnRows, OnKept] | None = None  # the kept path: rows of every layer, then its queries and keys

    def check_keys(self, layer: int, probs: torch.Tensor) -> None:
        """Unsupported where a layer attends over other keys than the tokens (a compressed or extra
        memory, as DeepSeek-V4's): its pattern would not be a token x token map."""
        if self.n_keys is not None and probs.shape[-1] != self.n_keys:
            raise Unsupported(
                f"Layer {layer} attends over {probs.shape[-1]} keys for {self.n_keys} tokens (a compressed or "
                "added memory), so its pattern is no token x token map; Loupe cannot show it as one.",
                code="unsupported_attention",
            )

    def buffer(self, like: torch.Tensor, shape: tuple[int, ...]) -> torch.Tensor:
        """The [batch, head, q, k] buffer every layer of a pass reuses. A fresh one per layer costs
        its page faults every time: at T = 1024 a softmax into a new tensor takes 18 ms, in place 4 ms."""
        if self.probs is None or self.probs.shape != shape or self.probs.device != like.device:  # a spread model's next device
            self.probs = like.new_empty(shape)
        return self.probs

    def fire(self, module: torch.nn.Module, probs: torch.Tensor) -> None:
        self.deliver(self.layer_of[id(module)], probs)

    def attend_kept(
        self, module: torch.nn.Module, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
        mask: torch.Tensor | None, scaling: float | None, dropout: float, kwargs: dict[str, Any],
    ) -> torch.Tensor:
        """The kept path's attention (output [1, q, head, d]) through the layer's AttentionRule: in one
        compiled pass (fused.py) whose summary of every row goes to on_rows, or, without the kernel,
        chunk by chunk of query rows, each chunk to on_rows; then the layer's queries, keys and rule
        to on_kept. NotModelled where the rule does not model the call."""
        unmodelled = sorted(name for name, value in kwargs.items() if value is not None and name not in _KEPT_MODELLED)
        why = [why for why, off in (
            (f"its attention takes {', '.join(unmodelled)}", unmodelled), (f"it computes in {query.dtype}", query.dtype != torch.float32),
            ("it applies dropout", dropout), (f"a batch of {query.shape[0]}", query.shape[0] != 1), ("it is spread over devices", self.to_cpu),
        ) if off]  # fmt: skip
        if why:
            raise NotModelled("; ".join(why))
        rule = AttentionRule.of_call(module, query, key, mask, scaling, kwargs.get("softcap"), kwargs.get("s_aux"), kwargs.get("is_causal"))
        layer = self.layer_of[id(module)]
        checkpoint()
        self.counts[layer] += 1
        iteration = self.counts[layer] - 1
        on_rows, on_kept = self.kept
        query, key, value = query[0], key[0], value[0]  # [head, T, d], [kv_head, T, d]
        compiled = fused.kernel() if query.device.type == "cpu" else None
        if compiled is not None:  # one pass, no block of weights written out (fused.py)
            output, rows = fused.attend(compiled, rule, query, key, value, min(THUMBNAIL_SIZE, rule.n_pos))
            on_rows(iteration, layer, rows)
            on_kept(iteration, layer, query, key, rule)
            return output[None]  # [1, T, head, d]
        values_keys = torch.cat([value, key], -1)  # [kv_head, T, d_v + d]: one product gives the output and the entropy
        if rule.groups > 1:
            values_keys = values_keys.repeat_interleave(rule.groups, 0)  # [head, T, d_v + d]
        keys = values_keys[..., value.shape[-1] :]
        n_heads, n_pos, _ = query.shape
        output = query.new_empty((n_heads, n_pos, value.shape[-1]))  # [head, T, d_v]
        step = rule.chunk_rows(n_heads)
        scratch = self.buffer(query, (n_heads * step * n_pos,))
        for start in range(0, n_pos, step):
            checkpoint()
            rows = rule.rows(query[:, start : start + step], keys, start, out=scratch, values=values_keys)
            output[:, start : start + step] = rows.output
            on_rows(iteration, layer, rows)
        on_kept(iteration, layer, query, key, rule)
        return output.transpose(0, 1)[None].contiguous()  # [1, T, head, d]

    def deliver(self, layer: int, probs: torch.Tensor) -> None:
        """Hand one firing of a layer to on_pattern: float32, on the CPU for a spread model (one
        layer at a time, never a stack gathered on one device)."""
        checkpoint()  # a job past its time limit stops here, within one layer
        self.check_keys(layer, probs)
        self.counts[layer] += 1
        self.on_pattern(self.counts[layer] - 1, layer, probs.to("cpu", torch.float32) if self.to_cpu else probs.float())


_active: ContextVar[_Recording | None] = ContextVar("loupe_attention_recording", default=None)


def _eager_of(module: torch.nn.Module) -> Callable[..., Any]:
    """The model's own eager attention function (its modeling module's `eager_attention_forward`)."""
    import importlib

    return importlib.import_module(type(module).__module__).eager_attention_forward


def capture_attention(
    module: torch.nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    scaling: float | None = None,
    dropout: float = 0.0,
    **kwargs: Any,
) -> tuple[torch.Tensor, None]:
    """Eager attention (query [batch, head, q, d], key/value [batch, kv_head, k, d]) that hands
    its probabilities to the active recording. Returns (output [batch, q, head, d], None)."""
    recording = _active.get()
    if recording is not None and recording.kept is not None:
        return recording.attend_kept(module, query, key, value, attention_mask, scaling, dropout, kwargs), None
    # The model's own function where its math may differ from the plain one below: an argument it
    # does not model, dropout, half precision (models such as Llama take the softmax in float32 there).
    unmodelled = any(value is not None and name not in _MODELLED for name, value in kwargs.items())
    exact = unmodelled or dropout or query.dtype != torch.float32
    if recording is None or exact:
        output, probs = _eager_of(module)(module, query, key, value, attention_mask, scaling=scaling, dropout=dropout, **kwargs)
        if recording is not None:
            recording.fire(module, probs)
        return output, None
    if key.shape[1] != query.shape[1]:  # grouped-query attention: each kv head serves several query heads
        repeats = query.shape[1] // key.shape[1]
        key, value = key.repeat_interleave(repeats, dim=1), value.repeat_interleave(repeats, dim=1)
    scale = query.shape[-1] ** -0.5 if scaling is None else scaling
    probs = recording.buffer(query, (*query.shape[:-1], key.shape[-2]))  # [batch, head, q, k]
    torch.matmul(query * scale, key.transpose(-1, -2), out=probs)  # the scores
    if attention_mask is not None:
        probs.add_(attention_mask[..., : key.shape[-2]])
    torch._softmax(probs, -1, False, out=probs)  # in place: row by row, bitwise equal to torch.softmax
    output = torch.matmul(probs, value).transpose(1, 2).contiguous()  # models call .view() on it, as on eager's
    recording.fire(module, probs)
    return output, None


def _register() -> None:
    from transformers import AttentionInterface, AttentionMaskInterface
    from transformers.masking_utils import eager_mask, sdpa_mask

    AttentionInterface.register(ATTENTION, capture_attention)
    AttentionMaskInterface.register(ATTENTION, eager_mask)  # the additive float mask eager attention gets
    AttentionInterface.register(KEPT, capture_attention)
    AttentionMaskInterface.register(KEPT, sdpa_mask)  # boolean, or None where plainly causal or bidirectional


_register()


def require_attention(model: LoadedModel) -> None:
    """Unsupported (422, its reason as the code) when Loupe cannot capture the model's attention."""
    if (refusal := model.attention_refusal) is not None:
        raise Unsupported(refusal.message, code=refusal.code)


def runs_natively(model: LoadedModel) -> bool:
    """Whether the fast path computes this model's attention exactly: an allow-listed model type
    whose HF classes call attention through the AttentionInterface."""
    hf = model.bridge.original_model
    return model.entry.model_type in NATIVE_MODEL_TYPES and bool(getattr(hf, "_supports_attention_backend", False)) and all(
        module is not None for module in model.attention_modules.values()
    )


@contextmanager
def _unwrapped(hf: torch.nn.Module) -> Iterator[None]:
    """Within the block the HF model holds its own modules again: every TransformerBridge component
    placed in its tree is swapped back to the module it wraps (restored afterwards, even on error)."""
    from transformer_lens.model_bridge.generalized_components.base import GeneralizedComponent

    swapped: list[tuple[torch.nn.Module, str, torch.nn.Module]] = []

    def unwrap(parent: torch.nn.Module) -> None:
        for name, child in list(parent._modules.items()):
            if isinstance(child, GeneralizedComponent):
                # a component wrapping nothing stands where the HF model has None (a NoPE model's rotary_emb)
                parent._modules[name] = child._modules.get("_original_component")
                swapped.append((parent, name, child))
                child = parent._modules[name]
            if child is not None:
                unwrap(child)

    try:
        unwrap(hf)
        yield
    finally:
        for parent, name, child in reversed(swapped):
            parent._modules[name] = child


@contextmanager
def _attention_implementation(hf: torch.nn.Module, name: str) -> Iterator[None]:
    # HF configs only: a TransformerLens component left in the tree may hold the bridge's own config
    configs = {id(module.config): module.config for module in hf.modules() if hasattr(getattr(module, "config", None), "_attn_implementation")}
    saved = {key: config._attn_implementation for key, config in configs.items()}
    try:
        for config in configs.values():
            config._attn_implementation = name
        yield
    finally:
        for key, config in configs.items():
            config._attn_implementation = saved[key]


def _map_inner_modules(layer_of: dict[int, int], model: LoadedModel) -> None:
    """Map every module inside a layer's wrapped attention module to that layer too: the attention
    function is called with the module that computes it, which may sit inside the one the bridge
    wraps (BERT's BertSelfAttention inside BertAttention)."""
    for layer, attention in model.attention_modules.items():
        for module in attention.modules():
            layer_of.setdefault(id(module), layer)


class AttentionRecorder:
    """Forward passes that hand every layer's attention probabilities to `on_pattern`.

    `forward(tokens)` runs one pass and returns the logits: of the last position only, unless
    `all_logits`; `past` and `use_cache` give KV-cached generation. `native` says which path runs.
    """

    def __init__(self, model: LoadedModel, on_pattern: OnPattern, native: bool):
        self.model = model
        self.native = native
        self.recording = _Recording(
            {id(module): layer for layer, module in model.attention_modules.items()},
            on_pattern,
            [0] * model.n_layers,
            to_cpu=model.spread,
        )

    @property
    def counts(self) -> list[int]:
        """How often each layer fired in the last forward pass."""
        return list(self.recording.counts)

    def forward(
        self, tokens: torch.Tensor, *, all_logits: bool = False, past: Any = None, use_cache: bool = False
    ) -> tuple[torch.Tensor, Any]:
        """(logits [batch, pos or 1, d_vocab], the KV cache or None) of one pass over tokens [batch, pos]."""
        self.recording.counts[:] = [0] * self.model.n_layers
        self.recording.n_keys = tokens.shape[1] if past is None else None
        tokens = tokens.to(self.model.input_device)  # the input embedding's device (a spread model's first)
        if self.native and self.model.entry.encoder:  # no KV cache and no logits_to_keep: an encoder reads every position
            return self.model.bridge.original_model(tokens).logits, None
        if self.native:
            output = self.model.bridge.original_model(
                tokens, past_key_values=past, use_cache=use_cache, logits_to_keep=0 if all_logits else 1
            )
            return output.logits, output.past_key_values if use_cache else None
        if use_cache:
            logits, cache = self.model.bridge(
                tokens, return_type="logits_and_cache", use_cache=True, **({"past_key_values": past} if past is not None else {})
            )
            return (logits if all_logits else logits[:, -1:]), cache
        logits = self.model.bridge(tokens, use_cache=False)
        return (logits if all_logits else logits[:, -1:]), None


@contextmanager
def recording_attention(
    model: LoadedModel, on_pattern: OnPattern, loop: LoopSpec | None = None, native: bool | None = None,
    kept: tuple[OnRows, OnKept] | None = None,
) -> Iterator[AttentionRecorder]:
    """An AttentionRecorder for the duration of the block (`loop` applied); the caller holds
    model.lock. `native` None: the model's own forward where it can, else the bridge's hooks.
    `kept`: the kept path (on the model's own forward only): no pattern is made whole, every layer
    hands its rows and then its queries, keys and rule (Recording.attend_kept)."""
    require_attention(model)
    native = runs_natively(model) if native is None else native
    if kept is not None and not native:
        raise NotModelled("the model's attention is not run by Loupe's own function")
    recorder = AttentionRecorder(model, on_pattern, native)
    recorder.recording.kept = kept
    with torch.inference_mode():
        if native:
            hf = model.bridge.original_model
            _map_inner_modules(recorder.recording.layer_of, model)
            token = _active.set(recorder.recording)
            try:
                # looping first: it finds the HF blocks through the bridge's components
                with looping(model, loop, native=True), _unwrapped(hf), _attention_implementation(hf, KEPT if kept else ATTENTION):
                    yield recorder
            finally:
                _active.reset(token)
                recorder.recording.probs = None
            return

        def hook(layer: int) -> Callable[[torch.Tensor, Any], torch.Tensor]:
            def record(pattern: torch.Tensor, hook: Any) -> torch.Tensor:
                recorder.recording.deliver(layer, pattern)
                return pattern

            return record

        model.require_bridge()
        names = model.pattern_hook_names()  # layer -> hook, attention layers only
        if missing := [name for name in names.values() if name not in model.bridge.hook_dict]:
            raise Unsupported(
                f"{model.entry.model_type or model.id}'s attention is not among those Loupe's own capture is "
                f"verified on, and TransformerLens exposes no pattern hook for it ({missing[0]}).",
                code="unsupported_attention",
            )
        hooks = [(name, hook(layer)) for layer, name in names.items()]
        with model.bridge.hooks(fwd_hooks=hooks), looping(model, loop):
            yield recorder


def summarize_and_store(
    model: LoadedModel,
    tokens: torch.Tensor,
    summarize: Callable[[torch.Tensor], dict[str, torch.Tensor]],
    loop: LoopSpec | None = None,
) -> tuple[dict[str, torch.Tensor], PatternStore]:
    """One forward pass over tokens [batch, pos] that keeps, per (iteration, layer), the named
    per-head summaries `summarize(probs)` of probs [batch, head, query_pos, key_pos] (each
    [head]) and the first sequence's patterns in stored form. Returns (name -> [iteration,
    layer, head], the PatternStore). What `attention` and `head_scores` are made of."""
    patterns = PatternStore(model.n_layers)
    summaries: dict[tuple[int, int], dict[str, list[float]]] = {}

    def keep(iteration: int, layer: int, probs: torch.Tensor) -> None:
        # plain lists: small tensors kept across the pass would pin the allocator's heap (see PatternStore)
        summaries[iteration, layer] = {name: value.tolist() for name, value in summarize(probs).items()}
        patterns.add(iteration, layer, probs[0])

    with recording_attention(model, keep, loop) as recorder:
        recorder.forward(tokens)
    return stack_by_iteration(summaries, model.n_layers), patterns


def summarize_and_keep(model: LoadedModel, tokens: torch.Tensor, on_rows: OnRows, loop: LoopSpec | None = None) -> KeptAttention:
    """One forward pass over tokens [1, pos] on the kept path: on_rows sees every (iteration, layer)'s
    rows (the kernel's summary of them all, or their probabilities a chunk at a time), and the
    returned KeptAttention holds each firing's queries, keys, rule and thumbnails. NotModelled
    (before or during the pass) where the model's attention is not what AttentionRule computes: the
    caller stores patterns instead."""
    kept = KeptAttention(model.n_layers)

    def rows(iteration: int, layer: int, chunk: "Rows | fused.LayerRows") -> None:
        kept.pool(iteration, layer, chunk)
        on_rows(iteration, layer, chunk)

    with recording_attention(model, lambda *_: None, loop, kept=(rows, kept.add)) as recorder:
        recorder.forward(tokens)
    return kept


def capture_patterns(
    model: LoadedModel, tokens: torch.Tensor, loop: LoopSpec | None = None, native: bool | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Logits and every attention pattern of one forward pass, all in float32 (for tests and
    small inputs; analyses keep only what they need from inside the pass).

    tokens: [batch, pos]. Returns (logits [batch, pos, d_vocab],
    pattern [iteration, layer, batch, head, query_pos, key_pos])."""
    kept: dict[tuple[int, int], torch.Tensor] = {}

    def keep(iteration: int, layer: int, probs: torch.Tensor) -> None:
        kept[iteration, layer] = probs.clone()

    with recording_attention(model, keep, loop, native) as recorder:
        logits, _ = recorder.forward(tokens, all_logits=True)
    grid = by_iteration(kept, model.n_layers)  # [iteration][layer] -> [batch, head, query_pos, key_pos]
    return logits.float(), torch.stack([torch.stack(row) for row in grid])
