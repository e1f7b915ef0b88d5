"""Ouro (ByteDance LoopLM: Ouro-1.4B, Ouro-2.6B and their -Thinking variants) in Loupe's own classes.

The hub's `modeling_ouro.py` is remote code that transformers 5 no longer runs; this module is
written from the published equations and reads the published config keys and tensor names, so
the hub's safetensors load with strict key matching and its `auto_map` never runs.

The model, as published (modeling_ouro.py, OuroModel / OuroForCausalLM.forward):

    h = embed(tokens)
    for step in range(total_ut_steps):                      # the same layers every step
        for layer in layers:                                # sandwich norms, four per layer
            h = h + norm_attn_out(attention(norm_attn_in(h)))      # input_layernorm, input_layernorm_2
            h = h + norm_mlp_out(swiglu(norm_mlp_in(h)))           # post_attention_layernorm(_2)
        h = norm(h)                    # model.norm after EVERY step; the normed state feeds the next
        hidden[step], gate[step] = h, early_exit_gate(h)   # gate: Linear(d_model, 1) with bias
    lambda[t] = sigmoid(gate[t])                            # exit probability at step t
    pdf[t] = lambda[t] * prod_{j<t} (1 - lambda[j]),  pdf[last] = prod_{j<last} (1 - lambda[j])
    logits = lm_head(hidden[exit]) where exit is, per token, `config.early_exit_step` if set, else
             the first step whose cumulative pdf reaches `config.early_exit_threshold` (the last step
             if none does), else (threshold None) the last step.

The hub configs set `early_exit_threshold: 1.0`, which the model card reads as "always all steps":
the cumulative pdf reaches 1.0 before the last step only where the mass left rounds away (in
float32 under ~1e-7 of it; in bfloat16, the hub's dtype, already under ~2e-3, i.e. a first-step
lambda >= 0.999), and there the published forward answers from that earlier step. This class does the same; `exit_gate` says which step each token's
output came from (`exit_iteration`).

No KV cache: `use_cache=True` or a `past_key_values` is refused, and the bridge's generation
recomputes the whole prefix every step (the adapter's `supports_kv_cache` is off).
"""

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn
from transformers import PreTrainedConfig, PreTrainedModel
from transformers.activations import ACT2FN
from transformers.masking_utils import create_causal_mask
from transformers.modeling_outputs import BaseModelOutputWithPast, CausalLMOutputWithPast
from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS

from . import Facts, checkpoints
from .checkpoints import load_tokenizer, read_weights  # noqa: F401 (load_tokenizer: part of this module's API)
# capture._eager_of looks `eager_attention_forward` up in the module defining the attention class: this one
from .layers import RMSNorm, eager_attention_forward, rope_inverse_frequencies

ARCHITECTURE = "OuroForCausalLM"  # TransformerLens' Ouro adapter is registered under this name
# What the hub's config.json maps to its remote code; written by save_published, never followed.
AUTO_MAP = {
    "AutoConfig": "configuration_ouro.OuroConfig",
    "AutoModel": "modeling_ouro.OuroModel",
    "AutoModelForCausalLM": "modeling_ouro.OuroForCausalLM",
}


class OuroConfig(PreTrainedConfig):
    """The published OuroConfig's keys and defaults (configuration_ouro.py)."""

    model_type = "ouro"
    keys_to_ignore_at_inference = ["past_key_values"]

    vocab_size: int = 151936
    hidden_size: int = 4096
    intermediate_size: int = 22016
    num_hidden_layers: int = 32
    num_attention_heads: int = 32
    num_key_value_heads: int | None = 32
    head_dim: int | None = None  # the hub configs give it; else hidden_size // num_attention_heads
    hidden_act: str = "silu"
    max_position_embeddings: int = 32768
    initializer_range: float = 0.02
    rms_norm_eps: float = 1e-6
    use_cache: bool = True
    tie_word_embeddings: bool = False
    rope_parameters: dict | None = None  # transformers 5 gathers the hub's rope_theta / rope_scaling here
    use_sliding_window: bool = False
    sliding_window: int | None = 4096
    max_window_layers: int = 28
    layer_types: list[str] | None = None
    attention_dropout: float = 0.0
    total_ut_steps: int = 4
    early_exit_threshold: float | None = 1.0
    early_exit_step: int | None = None
    pad_token_id: int | None = None
    bos_token_id: int | None = None
    eos_token_id: int | list[int] | None = None

    def __post_init__(self, **kwargs: Any):
        if self.num_key_value_heads is None:
            self.num_key_value_heads = self.num_attention_heads
        if self.head_dim is None:
            self.head_dim = self.hidden_size // self.num_attention_heads
        if not self.use_sliding_window:
            self.sliding_window = None
        if self.layer_types is None:
            self.layer_types = [
                "sliding_attention" if self.sliding_window is not None and i >= self.max_window_layers else "full_attention"
                for i in range(self.num_hidden_layers)
            ]
        super().__post_init__(**kwargs)


def check_supported(config: OuroConfig) -> None:
    """ValueError for what the released checkpoints never use and Loupe has not verified."""
    if any(kind != "full_attention" for kind in config.layer_types):
        raise ValueError("Ouro with sliding-window layers is not supported by Loupe (no released checkpoint uses them).")
    rope = config.rope_parameters or {}
    if rope.get("rope_type", "default") != "default":
        raise ValueError(f"Ouro with RoPE scaling {rope.get('rope_type')!r} is not supported by Loupe (only the default RoPE).")
    if config.num_attention_heads % config.num_key_value_heads:
        raise ValueError("num_attention_heads must be a multiple of num_key_value_heads.")


OuroRMSNorm = RMSNorm


class OuroRotaryEmbedding(nn.Module):
    """Default RoPE: (cos, sin) [batch, pos, d_head] for position_ids [batch, pos], computed once
    per forward and shared by every layer at every step."""

    def __init__(self, config: OuroConfig):
        super().__init__()
        self.config = config
        self.rope_type = "default"  # transformers' _init_weights recomputes the buffers by this name
        inv_freq, self.attention_scaling = self.compute_default_rope_parameters(config)
        self.inv_freq = nn.Buffer(inv_freq, persistent=False)  # [d_head / 2]
        self.original_inv_freq = nn.Buffer(inv_freq.clone(), persistent=False)

    @staticmethod
    def compute_default_rope_parameters(config: OuroConfig, device: Any = None, **kwargs: Any) -> tuple[torch.Tensor, float]:
        base = (config.rope_parameters or {}).get("rope_theta", 10000.0)
        return rope_inverse_frequencies(config.head_dim, base, device), 1.0

    @torch.no_grad()
    def forward(self, x: torch.Tensor, position_ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        freqs = position_ids[..., None].float() * self.inv_freq.to(x.device).float()  # [batch, pos, d_head / 2]
        angles = torch.cat((freqs, freqs), dim=-1)  # [batch, pos, d_head]
        cos, sin = angles.cos() * self.attention_scaling, angles.sin() * self.attention_scaling
        return cos.to(x.dtype), sin.to(x.dtype)


def rotate_half(x: torch.Tensor) -> torch.Tensor:
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat((-x2, x1), dim=-1)


def apply_rotary(q: torch.Tensor, k: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """q [batch, head, pos, d_head], k [batch, kv_head, pos, d_head]; cos/sin [batch, pos, d_head]."""
    cos, sin = cos.unsqueeze(1), sin.unsqueeze(1)  # [batch, 1, pos, d_head]
    return q * cos + rotate_half(q) * sin, k * cos + rotate_half(k) * sin


class OuroAttention(nn.Module):
    """Grouped-query attention with RoPE, no biases; the softmax runs through transformers'
    AttentionInterface (`config._attn_implementation`), so Loupe's capture can swap it."""

    def __init__(self, config: OuroConfig, layer_idx: int):
        super().__init__()
        self.config = config
        self.layer_idx = layer_idx
        self.head_dim = config.head_dim
        self.num_key_value_groups = config.num_attention_heads // config.num_key_value_heads
        self.scaling = self.head_dim**-0.5
        self.attention_dropout = config.attention_dropout
        self.is_causal = True
        d_model, d_q, d_kv = config.hidden_size, config.num_attention_heads * self.head_dim, config.num_key_value_heads * self.head_dim
        self.q_proj = nn.Linear(d_model, d_q, bias=False)
        self.k_proj = nn.Linear(d_model, d_kv, bias=False)
        self.v_proj = nn.Linear(d_model, d_kv, bias=False)
        self.o_proj = nn.Linear(d_q, d_model, bias=False)

    def forward(
        self,
        hidden_states: torch.Tensor,
        position_embeddings: tuple[torch.Tensor, torch.Tensor],
        attention_mask: torch.Tensor | None = None,
        **kwargs: Any,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        batch_pos = hidden_states.shape[:-1]
        heads = (*batch_pos, -1, self.head_dim)
        q = self.q_proj(hidden_states).view(heads).transpose(1, 2)  # [batch, head, pos, d_head]
        k = self.k_proj(hidden_states).view(heads).transpose(1, 2)  # [batch, kv_head, pos, d_head]
        v = self.v_proj(hidden_states).view(heads).transpose(1, 2)  # [batch, kv_head, pos, d_head]
        q, k = apply_rotary(q, k, *position_embeddings)
        implementation = self.config._attn_implementation
        attend = eager_attention_forward if implementation in (None, "eager") else ALL_ATTENTION_FUNCTIONS[implementation]
        dropout = self.attention_dropout if self.training else 0.0
        z, probs = attend(self, q, k, v, attention_mask, dropout=dropout, scaling=self.scaling)  # z [batch, pos, head, d_head]
        return self.o_proj(z.reshape(*batch_pos, -1).contiguous()), probs  # [batch, pos, d_model]


class OuroMLP(nn.Module):
    """SwiGLU: down(act(gate(x)) * up(x)), no biases."""

    def __init__(self, config: OuroConfig):
        super().__init__()
        self.gate_proj = nn.Linear(config.hidden_size, config.intermediate_size, bias=False)
        self.up_proj = nn.Linear(config.hidden_size, config.intermediate_size, bias=False)
        self.down_proj = nn.Linear(config.intermediate_size, config.hidden_size, bias=False)
        self.act_fn = ACT2FN[config.hidden_act]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down_proj(self.act_fn(self.gate_proj(x)) * self.up_proj(x))


class OuroDecoderLayer(nn.Module):
    """Sandwich-norm block: each sublayer's input and output are RMS-normed before the residual add."""

    def __init__(self, config: OuroConfig, layer_idx: int):
        super().__init__()
        self.self_attn = OuroAttention(config, layer_idx)
        self.mlp = OuroMLP(config)
        self.input_layernorm = OuroRMSNorm(config.hidden_size, config.rms_norm_eps)
        self.input_layernorm_2 = OuroRMSNorm(config.hidden_size, config.rms_norm_eps)
        self.post_attention_layernorm = OuroRMSNorm(config.hidden_size, config.rms_norm_eps)
        self.post_attention_layernorm_2 = OuroRMSNorm(config.hidden_size, config.rms_norm_eps)

    def forward(
        self,
        hidden_states: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        position_embeddings: tuple[torch.Tensor, torch.Tensor] | None = None,
        **kwargs: Any,
    ) -> torch.Tensor:
        attn_out, _ = self.self_attn(
            hidden_states=self.input_layernorm(hidden_states), position_embeddings=position_embeddings, attention_mask=attention_mask
        )
        hidden_states = hidden_states + self.input_layernorm_2(attn_out)  # [batch, pos, d_model]
        mlp_out = self.mlp(self.post_attention_layernorm(hidden_states))
        return hidden_states + self.post_attention_layernorm_2(mlp_out)  # [batch, pos, d_model]


class OuroPreTrainedModel(PreTrainedModel):
    config: OuroConfig
    base_model_prefix = "model"
    _no_split_modules = ["OuroDecoderLayer"]
    _supports_sdpa = True
    _supports_attention_backend = True


@dataclass
class OuroModelOutput(BaseModelOutputWithPast):
    """The last step's normed state, and every step's normed state and exit-gate logit."""

    step_hidden_states: tuple[torch.Tensor, ...] | None = None  # per step [batch, pos, d_model], after model.norm
    step_gates: tuple[torch.Tensor, ...] | None = None  # per step [batch, pos, 1], before the sigmoid


class OuroModel(OuroPreTrainedModel):
    """The layer stack run `total_ut_steps` times (a module attribute: Loupe's loop count)."""

    def __init__(self, config: OuroConfig):
        super().__init__(config)
        self.embed_tokens = nn.Embedding(config.vocab_size, config.hidden_size, config.pad_token_id)
        self.layers = nn.ModuleList([OuroDecoderLayer(config, i) for i in range(config.num_hidden_layers)])
        self.norm = OuroRMSNorm(config.hidden_size, config.rms_norm_eps)
        self.rotary_emb = OuroRotaryEmbedding(config)
        self.early_exit_gate = nn.Linear(config.hidden_size, 1)
        self.total_ut_steps = int(config.total_ut_steps)
        self.post_init()

    def forward(
        self,
        input_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
        inputs_embeds: torch.Tensor | None = None,
        n_iterations: int | None = None,
        **kwargs: Any,
    ) -> OuroModelOutput:
        steps = self.total_ut_steps if n_iterations is None else n_iterations
        if steps < 1:
            raise ValueError(f"Ouro runs at least one step; got {steps}.")
        if (input_ids is None) == (inputs_embeds is None):
            raise ValueError("Give exactly one of input_ids and inputs_embeds.")
        hidden = self.embed_tokens(input_ids) if inputs_embeds is None else inputs_embeds  # [batch, pos, d_model]
        if position_ids is None:
            position_ids = torch.arange(hidden.shape[1], device=hidden.device).unsqueeze(0)  # [1, pos]
        mask = create_causal_mask(
            config=self.config, inputs_embeds=hidden, attention_mask=attention_mask, cache=None, position_ids=position_ids
        )
        position_embeddings = self.rotary_emb(hidden, position_ids)
        step_hidden, step_gates = [], []
        for _ in range(steps):
            for layer in self.layers:
                hidden = layer(hidden, attention_mask=mask, position_embeddings=position_embeddings, position_ids=position_ids)
            hidden = self.norm(hidden)  # the normed state is the step's output and the next step's input
            step_hidden.append(hidden)
            step_gates.append(self.early_exit_gate(hidden))  # [batch, pos, 1]
        return OuroModelOutput(last_hidden_state=hidden, step_hidden_states=tuple(step_hidden), step_gates=tuple(step_gates))


def exit_pdf(exit_lambda: torch.Tensor) -> torch.Tensor:
    """[iteration, ...] probability of exiting at each step from the per-step exit probabilities
    [iteration, ...]: lambda times what is left, the last step taking all that is left."""
    remaining = torch.ones_like(exit_lambda[0])
    pdf = []
    for step, lam in enumerate(exit_lambda):
        if step < len(exit_lambda) - 1:
            pdf.append(lam * remaining)
            remaining = remaining * (1.0 - lam)
        else:
            pdf.append(remaining)
    return torch.stack(pdf)


def threshold_exit(pdf: torch.Tensor, threshold: float) -> torch.Tensor:
    """[...] (long) the first step whose cumulative exit probability reaches `threshold`, the
    last step where none does; pdf [iteration, ...]."""
    reached = pdf.cumsum(dim=0) >= threshold  # [iteration, ...]
    first = reached.float().argmax(dim=0)  # argmax: the first True
    return torch.where(reached.any(dim=0), first, torch.full_like(first, len(pdf) - 1))


def exit_steps(pdf: torch.Tensor, exit_at_step: int | None, threshold: float | None) -> torch.Tensor:
    """[...] (long) the step each token's output comes from, as the published forward picks it:
    `exit_at_step` if it is a step, else the threshold rule, else (threshold None) the last step."""
    if exit_at_step is not None and 0 <= exit_at_step < len(pdf):
        return torch.full(pdf.shape[1:], exit_at_step, dtype=torch.long, device=pdf.device)
    if threshold is not None:
        return threshold_exit(pdf, threshold)
    return torch.full(pdf.shape[1:], len(pdf) - 1, dtype=torch.long, device=pdf.device)


class OuroForCausalLM(OuroPreTrainedModel):
    """Ouro with its untied (by default) lm_head; `.logits` as the published forward picks them."""

    _tied_weights_keys = {"lm_head.weight": "model.embed_tokens.weight"}  # tied only if the config says so

    def __init__(self, config: OuroConfig):
        super().__init__(config)
        self.model = OuroModel(config)
        self.lm_head = nn.Linear(config.hidden_size, config.vocab_size, bias=False)
        self.early_exit_step = config.early_exit_step
        self.early_exit_threshold = config.early_exit_threshold
        self.post_init()

    def forward(
        self,
        input_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
        past_key_values: Any = None,
        inputs_embeds: torch.Tensor | None = None,
        use_cache: bool | None = None,
        logits_to_keep: int | torch.Tensor = 0,
        exit_at_step: int | None = None,
        exit_threshold: float | None = None,
        **kwargs: Any,
    ) -> CausalLMOutputWithPast:
        """logits [batch, pos (the last `logits_to_keep`; 0: all), d_vocab] of each token's exit step
        (module docstring); no KV cache, so no `past_key_values` and no `use_cache`."""
        if past_key_values is not None or kwargs.get("cache") is not None or use_cache:
            raise ValueError("Loupe's Ouro has no KV cache; run the whole sequence with use_cache=False.")
        out = self.model(input_ids, attention_mask, position_ids, inputs_embeds, n_iterations=kwargs.get("n_iterations"))
        pdf = exit_pdf(torch.sigmoid(torch.stack(out.step_gates).squeeze(-1)))  # [iteration, batch, pos]
        step = exit_steps(
            pdf,
            self.early_exit_step if exit_at_step is None else exit_at_step,
            self.early_exit_threshold if exit_threshold is None else exit_threshold,
        )  # [batch, pos]
        index = step[None, :, :, None].expand(1, *out.last_hidden_state.shape)  # [1, batch, pos, d_model]
        hidden = torch.stack(out.step_hidden_states).gather(0, index)[0]  # [batch, pos, d_model]
        if isinstance(logits_to_keep, int):
            hidden = hidden[:, -logits_to_keep:]  # -0: every position
        else:
            hidden = hidden.index_select(1, logits_to_keep.to(hidden.device))
        return CausalLMOutputWithPast(logits=self.lm_head(hidden))

    def exit_logits(self, input_ids: torch.Tensor, n_iterations: int | None = None) -> torch.Tensor:
        """[iteration, batch, pos, d_vocab]: lm_head of every step's normed state, the per-step
        logits the published forward weighs by the exit pdf."""
        out = self.model(input_ids, n_iterations=n_iterations)
        return torch.stack([self.lm_head(hidden) for hidden in out.step_hidden_states])

    def exit_gate(self, input_ids: torch.Tensor, n_iterations: int | None = None) -> dict[str, torch.Tensor]:
        """The learned exit distribution over steps, in float32:
        exit_lambda [iteration, batch, pos]: sigmoid of the exit gate, P(exit at t | not before);
        exit_pdf [iteration, batch, pos]: P(exit at t), the last step taking all that is left;
        expected_exit_step [batch, pos]: sum_t t * exit_pdf[t], with t counted from 1 (the
            expected number of steps run, the paper's "average exit round");
        exit_iteration [batch, pos] (long, 0-based like the iteration axis): the step the model's
            own `.logits` come from (early_exit_step, else the threshold rule, else the last)."""
        out = self.model(input_ids, n_iterations=n_iterations)
        exit_lambda = torch.sigmoid(torch.stack(out.step_gates).squeeze(-1))  # [iteration, batch, pos]
        pdf = exit_pdf(exit_lambda)
        n = len(pdf)
        steps = torch.arange(1, n + 1, device=pdf.device, dtype=torch.float32)  # [iteration], from 1
        return {
            "exit_lambda": exit_lambda.float(),
            "exit_pdf": pdf.float(),
            "expected_exit_step": torch.einsum("t,t...->...", steps, pdf.float()),  # [batch, pos]
            "exit_iteration": exit_steps(pdf, self.early_exit_step, self.early_exit_threshold),
        }


# --- Loading: config.json, safetensors and tokenizer files of a hub snapshot, never its code ---


def config_of(raw: dict) -> OuroConfig:
    """An OuroConfig from config.json's dict; its auto_map is kept as data, never followed."""
    if raw.get("rope_scaling") is None:  # the hub's `null`: nothing to convert (and no deprecation warning)
        raw = {key: value for key, value in raw.items() if key != "rope_scaling"}
    return OuroConfig.from_dict(raw)


def facts(config: dict) -> Facts:
    """What /api/models lists for an Ouro folder, from its config.json (the published defaults
    where a key is absent, as the published config class reads them)."""
    ouro = config_of(config)
    return Facts(
        n_layers=ouro.num_hidden_layers,
        n_heads=ouro.num_attention_heads,
        n_iterations=ouro.total_ut_steps,
        n_ctx=ouro.max_position_embeddings,
        exit_gate=True,
    )


def load(path: Path, device: str = "cpu", dtype: torch.dtype = torch.float32) -> OuroForCausalLM:
    """The model saved at `path` in eval mode, every published tensor loaded by name (strict: a
    missing, unexpected or misshapen tensor is an error), eager attention."""
    path = Path(path)
    config = config_of(json.loads((path / "config.json").read_text()))
    check_supported(config)
    config._attn_implementation = "eager"
    weights = {name: tensor.to(dtype) for name, tensor in read_weights(path).items()}
    if config.tie_word_embeddings:
        weights.setdefault("lm_head.weight", weights["model.embed_tokens.weight"])
    with torch.device("meta"):  # no random init of weights about to be replaced
        model = OuroForCausalLM(config)
    model.load_state_dict(weights, strict=True, assign=True)
    model.model.rotary_emb = OuroRotaryEmbedding(config)  # its buffers are computed, not stored
    if config.tie_word_embeddings:
        model.lm_head.weight = model.model.embed_tokens.weight
    return model.to(device).eval()


def boot(path: Path, device: str = "cpu") -> Any:
    """A TransformerBridge (TransformerLens' Ouro adapter) around the model saved at `path`: its
    blocks' hooks and ln_final fire once per step; generation recomputes the prefix (no KV cache)."""
    bridge = checkpoints.bridge(load(path, device), ARCHITECTURE, path, device)
    bridge.adapter.supports_kv_cache = False
    return bridge


# config.json keys the hub's Ouro checkpoints carry, read from the config as they are
_PUBLISHED_KEYS = (
    "attention_dropout", "bos_token_id", "early_exit_threshold", "eos_token_id", "head_dim", "hidden_act", "hidden_size",
    "initializer_range", "intermediate_size", "max_position_embeddings", "max_window_layers", "num_attention_heads",
    "num_hidden_layers", "num_key_value_heads", "rms_norm_eps", "sliding_window", "tie_word_embeddings", "total_ut_steps",
    "use_sliding_window", "vocab_size",
)  # fmt: skip


def published_config(config: OuroConfig, dtype: torch.dtype = torch.float32) -> dict:
    """config.json as the hub's Ouro checkpoints lay it out (auto_map to their remote code included)."""
    return {
        **{key: getattr(config, key) for key in _PUBLISHED_KEYS},
        "architectures": [ARCHITECTURE],
        "auto_map": AUTO_MAP,
        "layer_types": list(config.layer_types),
        "model_type": "ouro",
        "rope_scaling": None,
        "rope_theta": (config.rope_parameters or {}).get("rope_theta", 10000.0),
        "torch_dtype": str(dtype).removeprefix("torch."),
        "transformers_version": "4.55.0",
        "use_cache": True,
    }


def save_published(model: OuroForCausalLM, path: Path, tokenizer: Any = None) -> Path:
    """Write `model` under `path` as the hub ships Ouro: config.json (published layout) and
    model.safetensors (published tensor names), and the tokenizer's files if given."""
    weights = model.state_dict()
    if model.config.tie_word_embeddings:
        weights.pop("lm_head.weight", None)
    return checkpoints.write_folder(path, published_config(model.config, model.lm_head.weight.dtype), weights, tokenizer)


def tiny(
    seed: int = 0,
    vocab_size: int = 300,
    d_model: int = 32,
    n_layers: int = 2,
    n_heads: int = 4,
    n_kv_heads: int = 2,
    n_iterations: int = 3,
    n_ctx: int = 64,
    sharpen: float = 12.0,
    **config: Any,
) -> OuroForCausalLM:
    """A seeded random-init Ouro (tests): q/k weights scaled by `sharpen` so attention patterns
    are far from uniform, norms and the exit gate perturbed so none of them is the identity."""
    ouro = OuroConfig(
        vocab_size=vocab_size,
        hidden_size=d_model,
        intermediate_size=2 * d_model,
        num_hidden_layers=n_layers,
        num_attention_heads=n_heads,
        num_key_value_heads=n_kv_heads,
        max_position_embeddings=n_ctx,
        total_ut_steps=n_iterations,
        bos_token_id=0,
        eos_token_id=0,
        **config,
    )
    with torch.random.fork_rng(), torch.no_grad():  # seeded without touching the caller's generator
        torch.manual_seed(seed)
        model = OuroForCausalLM(ouro).eval()
        for name, param in model.named_parameters():
            if name.endswith(("q_proj.weight", "k_proj.weight")):
                param.mul_(sharpen)
            elif name.endswith("norm.weight") or "layernorm" in name:
                param.copy_(1.0 + 0.2 * torch.randn_like(param))
            elif "early_exit_gate" in name:
                param.copy_(torch.randn_like(param) * (0.5 if name.endswith("weight") else 1.0))
    return model
