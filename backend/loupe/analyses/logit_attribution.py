"""`logit_attribution`: direct logit attribution of one target token's logit (or of a logit difference
between two tokens) at one position, per head, MLP and iteration."""

from typing import Any

import torch
from pydantic import BaseModel, Field

from ..errors import InvalidInput, Unsupported
from ..loops import LoopSpec, by_iteration, looping, run_recording
from ..model_store import LoadedModel
from .registry import AnalysisOutput, Inputs, register, require_text, rounded

FORMULA = (
    "contribution of a component c (a head's output z_h W_O[h], an MLP's output, an embedding, an attention "
    "output bias) to the target's logit: centre(c) * s * w . W_U[:, target], with s the final norm's scale of "
    "the actual residual at the position in this run, frozen; w the norm's weight; centre() only for a "
    "LayerNorm. The residual, logit - sum of contributions, is the final norm's bias . W_U[:, target] + b_U[target]. "
    "With `other`, W_U[:, target] - W_U[:, other] and b_U[target] - b_U[other] in their place: the contributions to "
    "logit(target) - logit(other)."
)
# Relative errors past which a decomposition is not the model's own arithmetic (an architecture with
# post-block norms, scaled embeddings, a norm of another formula) rather than rounding.
TOLERANCE = {torch.float32: 1e-4, torch.float64: 1e-8}
HALF_TOLERANCE = 3e-2


class LogitAttributionParams(BaseModel):
    position: int = Field(-1, ge=-4096, le=4096, description="Token position read; negative counts from the end.")
    target: str | None = Field(
        None, max_length=200, description="The target token as text (exactly one token); default the model's top prediction."
    )
    other: str | None = Field(
        None, max_length=200,
        description="A second token (exactly one): attribute logit(target) - logit(other) instead of the target's logit.",
    )  # fmt: skip
    top_components: int = Field(20, ge=1, le=200, description="Components listed, by absolute contribution.")
    loop: LoopSpec | None = Field(None, description="Loop count, or a retrofit loop of a plain model.")


class Component(BaseModel):
    kind: str = Field(description="head | mlp | attn_bias | embed | pos_embed | residual")
    label: str
    layer: int | None = None
    head: int | None = None
    firing: int | None = Field(None, description="Which firing of the layer (its iteration, in a loop).")
    value: float


class LogitAttribution(BaseModel):
    tokens: list[str]
    token_ids: list[int]
    position: int = Field(description="The index read, in `tokens`.")
    target: str
    target_id: int
    target_logit: float = Field(description="The model's own logit of the target at the position.")
    target_prob: float
    other: str | None = Field(None, description="The second token of a logit difference; null: the target's own logit.")
    other_id: int | None = None
    logit_diff: float | None = Field(None, description="logit(target) - logit(other), the model's own; null without `other`.")
    n_iterations: int
    n_layers: int
    n_heads: int
    attention_layers: list[int]
    norm: str = Field(description="LayerNorm | RMSNorm: the final norm whose scale is frozen.")
    norm_scale: float = Field(description="s: the final norm's 1 / sqrt(var + eps) (or mean square) at the position.")
    heads: list[list[list[float | None]]] = Field(description="[iteration][layer][head] direct contribution to the logit.")
    mlp: list[list[float | None]] = Field(description="[iteration][layer] each MLP's contribution.")
    attn_bias: list[list[float | None]] | None = Field(description="[iteration][layer] the attention output bias's; null without one.")
    embed: float
    pos_embed: float | None
    residual: float = Field(description="What is attributed (target_logit, or logit_diff) - sum of every component: the final norm's bias and b_U.")
    sum_of_components: float
    components: list[Component] = Field(description="The largest components by |value|, then the residual.")
    formula: str


def direct_attribution(parts: torch.Tensor, direction: torch.Tensor, centre: bool) -> torch.Tensor:
    """[n] contributions of residual-stream parts [n, d_model] along `direction` [d_model] (s * w *
    W_U[:, target]): each part's share of the target logit with the final norm's scale frozen. A
    LayerNorm centres what it reads, a linear map, so each part is centred on its own."""
    if centre:
        parts = parts - parts.mean(-1, keepdim=True)
    return parts @ direction  # [n]


def _final_norm(model: LoadedModel) -> tuple[str, torch.Tensor, torch.Tensor | None, float]:
    """(kind, weight, bias, eps) of the final norm, or Unsupported when its scale cannot be frozen."""
    module = getattr(getattr(model.bridge, "ln_final", None), "original_component", None)
    name = type(module).__name__
    eps = getattr(module, "eps", None) or getattr(module, "variance_epsilon", None)
    weight = getattr(module, "weight", None)
    if isinstance(module, torch.nn.LayerNorm):
        kind = "LayerNorm"
    elif name.endswith("RMSNorm"):
        kind = "RMSNorm"
    else:
        kind = None
    if kind is None or eps is None or not isinstance(weight, torch.Tensor):
        raise Unsupported(
            f"{model.id}'s final norm ({name}) is not a LayerNorm or RMSNorm with a weight and an eps, so its scale "
            "cannot be frozen into a direct logit attribution.",
            code="no_frozen_norm",
        )
    bias = getattr(module, "bias", None)
    return kind, weight.detach().float(), None if bias is None else bias.detach().float(), float(eps)


def _check(model: LoadedModel, what: str, got: torch.Tensor, want: torch.Tensor, dtype: torch.dtype) -> float:
    """The relative error of `got` against `want`; Unsupported where it is more than rounding."""
    error = float((got - want).abs().max() / want.abs().max().clamp_min(1e-12))
    if error > TOLERANCE.get(dtype, HALF_TOLERANCE):
        raise Unsupported(
            f"On {model.id} {what} (relative error {error:.2g}): its residual stream is not the plain sum Loupe "
            "decomposes (post-block norms, scaled embeddings or an output head of another form), so a direct logit "
            "attribution would misstate it.",
            code="no_direct_attribution",
        )
    return error


def _target(model: LoadedModel, text: str | None, logits: torch.Tensor) -> int:
    if text is None:
        return int(logits.argmax())
    ids = model.tokenizer.encode(text, add_special_tokens=False)
    if len(ids) != 1:
        raise InvalidInput(f"The target {text!r} is {len(ids)} tokens for {model.id}'s tokenizer; give exactly one token.")
    return int(ids[0])


def _head_outputs(o_proj: torch.nn.Module, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(per-head outputs [head, d_model], bias [d_model]) of the attention output projection from one
    position's z [head, d_head]: the projection (its own module, whatever its weight layout) applied
    to z with every other head zeroed, less the projection of zero (its bias)."""
    n_heads, d_head = z.shape
    blocks = torch.zeros(n_heads + 1, n_heads, d_head, dtype=z.dtype, device=z.device)  # [head + 1, head, d_head]
    blocks[torch.arange(n_heads), torch.arange(n_heads)] = z
    out = o_proj(blocks.flatten(1)).float()  # [head + 1, d_model]: the last row projects zero
    return out[:-1] - out[-1], out[-1]


@register(
    "logit_attribution", version=2, params=LogitAttributionParams, needs=("text", "readout", "unembedding", "causal_lm", "attention")
)
def logit_attribution(model: LoadedModel, params: LogitAttributionParams, inputs: Inputs) -> AnalysisOutput:
    """Direct logit attribution: how much each head (at each iteration), each MLP, the embeddings and
    the attention output biases add to the target token's logit at one position, through the final
    norm with its scale frozen at its value in this run; what the components do not explain (the
    norm's bias and the unembedding's) is shown as the residual. Each decomposition step is checked
    against the model's own numbers in the same pass, or the analysis is refused."""
    tokens = model.tokenize(require_text(inputs), inputs.max_tokens)  # [1, pos]
    n_pos = tokens.shape[1]
    if not -n_pos <= params.position < n_pos:
        raise InvalidInput(f"position {params.position} is outside the text's {n_pos} tokens.")
    index = params.position % n_pos
    if model.entry.own_exit:
        raise Unsupported(
            f"{model.id}'s output is its own exit (more than a final norm and unembedding), so its logits do not "
            "decompose over its residual stream.",
            code="no_direct_attribution",
        )
    if len(model.attention_layers) != model.n_layers:
        raise Unsupported(f"{model.id} has layers without attention; only all-attention stacks are decomposed.", code="no_direct_attribution")
    kind, weight, norm_bias, eps = _final_norm(model)
    o_projs = {}
    for layer, name in enumerate(model.block_names):
        o = getattr(model.bridge.get_submodule(name).attn, "o", None)
        if getattr(o, "original_component", None) is None:
            raise Unsupported(f"{model.id}'s bridge exposes no attention output projection (attn.o) in layer {layer}.", code="no_direct_attribution")
        o_projs[layer] = o.original_component
    unembed = getattr(getattr(model.bridge, "unembed", None), "original_component", None)
    if not isinstance(getattr(unembed, "weight", None), torch.Tensor) or unembed.weight.shape[0] != model.bridge.cfg.d_vocab:
        raise Unsupported(f"{model.id}'s unembedding is not a [d_vocab, d_model] linear map.", code="no_direct_attribution")

    names = ["hook_embed", "hook_pos_embed", "ln_final.hook_in", "ln_final.hook_out"]
    for name in model.block_names:
        names += [f"{name}.attn.o.hook_in", f"{name}.hook_attn_out", f"{name}.hook_mlp_out"]
    inputs.progress("forward", 0.1)
    with looping(model, params.loop):
        logits, firings = run_recording(model, tokens, names, keep=lambda act, _: act[0, index].detach().clone())
    dtype = model.bridge.cfg.dtype
    logits = logits[0, index].float()  # [d_vocab]: the model's own output
    target = _target(model, params.target, logits)
    other = None if params.other is None else _target(model, params.other, logits)
    if other == target:
        raise InvalidInput("`other` is the target token itself: a logit difference needs two different tokens.")
    inputs.progress("attributing", 0.7)

    # The frozen final norm and the unembedding, checked against the model's own numbers.
    resid = firings["ln_final.hook_in"][-1].float()  # [d_model]: what the final norm read
    centred = resid - resid.mean() if kind == "LayerNorm" else resid
    scale = float(1 / torch.sqrt((centred**2).mean() + eps))
    normed = centred * scale * weight + (norm_bias if norm_bias is not None else 0)
    _check(model, "the final norm recomputed with its frozen scale differs from its output", normed, firings["ln_final.hook_out"][-1].float(), dtype)
    def row(token: int) -> tuple[torch.Tensor, float]:  # W_U[:, token] [d_model], b_U[token]
        bias = float(unembed.bias[token]) if getattr(unembed, "bias", None) is not None else 0.0
        return unembed.weight[token].detach().float(), bias

    u, b_u = row(target)
    attributed = logits[target]  # the number the components add up to
    if other is not None:
        u_other, b_other = row(other)
        u, b_u, attributed = u - u_other, b_u - b_other, logits[target] - logits[other]
    _check(model, "the unembedding as a linear map differs from the output", normed @ u + torch.tensor(b_u), attributed, dtype)
    direction = scale * weight * u  # [d_model]

    # The parts of the residual, every firing of every layer, each checked to sum to what the pass added.
    parts: list[tuple[dict[str, Any], torch.Tensor]] = []  # (component, [d_model])
    parts.append(({"kind": "embed"}, firings["hook_embed"][0].float()))
    if firings["hook_pos_embed"]:
        parts.append(({"kind": "pos_embed"}, firings["hook_pos_embed"][0].float()))
    has_bias = {layer: getattr(o, "bias", None) is not None for layer, o in o_projs.items()}
    for layer, name in enumerate(model.block_names):
        zs, attn_outs, mlp_outs = (firings[f"{name}.{hook}"] for hook in ("attn.o.hook_in", "hook_attn_out", "hook_mlp_out"))
        for firing, (z, attn_out, mlp_out) in enumerate(zip(zs, attn_outs, mlp_outs, strict=True)):
            with torch.inference_mode():
                heads, bias = _head_outputs(o_projs[layer], z.reshape(model.n_heads, -1))  # [head, d_model], [d_model]
            _check(model, f"layer {layer}'s heads and output bias do not sum to its attention output", heads.sum(0) + bias, attn_out.float(), dtype)
            at = {"layer": layer, "firing": firing}
            parts += [({"kind": "head", "head": head, **at}, heads[head]) for head in range(model.n_heads)]
            if has_bias[layer]:
                parts.append(({"kind": "attn_bias", **at}, bias))
            parts.append(({"kind": "mlp", **at}, mlp_out.float()))
    stacked = torch.stack([part for _, part in parts])  # [n, d_model]
    _check(model, "the embeddings, attention and MLP outputs do not sum to the final residual", stacked.sum(0), resid, dtype)
    values = direct_attribution(stacked, direction, centre=kind == "LayerNorm")  # [n]

    target_logit = float(logits[target])
    measured = float(attributed)
    total = float(values.sum())
    many = [count for layer in range(model.n_layers) if (count := len(firings[f"{model.block_names[layer]}.hook_mlp_out"])) > 1]
    components = [Component(**meta, label=_label(meta, bool(many)), value=round(float(value), 6)) for (meta, _), value in zip(parts, values)]
    kept_heads: dict[tuple[int, int], list[float]] = {}
    kept_mlp: dict[tuple[int, int], float] = {}
    kept_bias: dict[tuple[int, int], float] = {}
    for component in components:
        key = (component.firing, component.layer)
        if component.kind == "head":
            kept_heads.setdefault(key, [0.0] * model.n_heads)[component.head] = component.value
        elif component.kind == "mlp":
            kept_mlp[key] = component.value
        elif component.kind == "attn_bias":
            kept_bias[key] = component.value
    heads_grid = torch.tensor(by_iteration(kept_heads, model.n_layers))  # [iteration, layer, head]
    by_kind = {c.kind: c.value for c in components if c.kind in ("embed", "pos_embed")}
    top = sorted(components, key=lambda c: -abs(c.value))[: params.top_components]
    residual = Component(kind="residual", label="residual (norm bias, b_U)", value=round(measured - total, 6))
    probs = logits.softmax(-1)
    return AnalysisOutput(
        result=LogitAttribution(
            tokens=model.str_tokens(tokens[0]),
            token_ids=tokens[0].tolist(),
            position=index,
            target=model.str_tokens(torch.tensor([target]))[0],
            target_id=target,
            target_logit=round(target_logit, 6),
            target_prob=round(float(probs[target]), 6),
            other=None if other is None else model.str_tokens(torch.tensor([other]))[0],
            other_id=other,
            logit_diff=None if other is None else round(measured, 6),
            n_iterations=heads_grid.shape[0],
            n_layers=model.n_layers,
            n_heads=model.n_heads,
            attention_layers=model.attention_layers,
            norm=kind,
            norm_scale=round(scale, 6),
            heads=rounded(heads_grid, 6),
            mlp=rounded(torch.tensor(by_iteration(kept_mlp, model.n_layers)), 6),
            attn_bias=rounded(torch.tensor(by_iteration(kept_bias, model.n_layers)), 6) if kept_bias else None,
            embed=by_kind["embed"],
            pos_embed=by_kind.get("pos_embed"),
            residual=residual.value,
            sum_of_components=round(total, 6),
            components=[*top, residual],
            formula=FORMULA,
        )
    )


def _label(meta: dict[str, Any], looped: bool) -> str:
    """`L1H3`, `MLP 1`, `attn bias 1`, with `@it2` when layers fire more than once."""
    kind = meta["kind"]
    if kind in ("embed", "pos_embed"):
        return "token embedding" if kind == "embed" else "position embedding"
    where = {"head": f"L{meta['layer']}H{meta.get('head')}", "mlp": f"MLP {meta['layer']}", "attn_bias": f"attn bias {meta['layer']}"}[kind]
    return f"{where} @it{meta['firing']}" if looped else where
