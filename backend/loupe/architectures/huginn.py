"""Huginn / Raven (`huginn_raven`, tomg-group-umd/huginn-0125): Loupe's own depth-recurrent decoder,
written from the published equations (seal-rg/recurrent-pretraining `recpre/raven_modeling_minimal.py`,
`raven_config_minimal.py`); the checkpoint's remote code never runs.

    e = wte(ids) * embed_scale;  e = prelude(e)                        (once)
    x_0 ~ TruncNormal(0, std; ±3 std) * embed_scale                    (random, shape of e)
    x_k = core(adapter([x_{k-1}, e]))       k = 1 .. num_steps         (weight-tied core blocks)
    logits = lm_head(ln_f(coda(ln_f(x_K))))                           (ln_f is used twice)
    block (sandwich): x = norm_2(attn(norm_1(x)) + x);  x = norm_4(mlp(norm_3(x)) + x)

Every layer sits in one list, `transformer.layers` = prelude + core + coda, in the order the forward
runs them, so a bridge's blocks fire once per run: core blocks once per recurrence step. The loop
count is `transformer.total_ut_steps` (default `mean_recurrence`); the initial latent is drawn from a
generator seeded with `transformer.latent_seed` when set, else from the global RNG as published.
No KV cache: every forward recomputes the whole prefix. A padding `attention_mask` masks padded keys
(the published forward ignores it; without padding the two are the same).
"""

import json
import logging
import math
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import torch
from torch import nn
from transformers import PreTrainedConfig, PreTrainedModel
from transformers.masking_utils import create_causal_mask
from transformers.modeling_outputs import BaseModelOutputWithPast, CausalLMOutputWithPast
from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS

from . import Facts, checkpoints
from .checkpoints import load_tokenizer  # noqa: F401 (part of this module's API)
# capture._eager_of looks `eager_attention_forward` up in the module defining the attention class: this one
from .layers import RMSNorm, eager_attention_forward, rope_inverse_frequencies

log = logging.getLogger(__name__)

ARCHITECTURE = "LoupeHuginnForCausalLM"  # Loupe's TransformerLens adapter name (TL's own maps no flat `blocks`)
PUBLISHED_ARCHITECTURE = "RavenForCausalLM"
AUTO_MAP = {
    "AutoConfig": "raven_config_minimal.RavenConfig",
    "AutoModelForCausalLM": "raven_modeling_minimal.RavenForCausalLM",
}
# What the published code implements; a config naming anything else was trained with code Loupe does not have.
_PUBLISHED_CHOICES = {
    "injection_type": "linear",
    "state_init": "like-init",
    "block_class_name": "SandwichBlock",
    "norm_class_name": "RMSNorm_llama",
    "mlp_class_name": "GatedMLP",
    "nonlin_name": "SiLU",
}
_PUBLISHED_KEYS = (
    "activation_checkpoint_impl architecture_class_name bias block_class_name block_size effective_expected_depth "
    "head_dim init_orthogonal init_strategy init_values injection_type intermediate_size mean_backprop_depth "
    "mean_recurrence mlp_class_name n_embd n_heads n_layers n_layers_in_coda n_layers_in_prelude "
    "n_layers_in_recurrent_block nonlin_name norm_class_name norm_eps num_key_value_heads padded_vocab_size "
    "padding_multiple qk_bias rope_base sampling_scheme state_init tie_embeddings vocab_size "
    "bos_token_id eos_token_id pad_token_id"
).split()


class HuginnConfig(PreTrainedConfig):
    """The published RavenConfig keys (defaults: huginn-0125's); derived values as the published config derives them."""

    model_type = "huginn_raven"
    attribute_map = {
        "num_attention_heads": "n_heads",
        "hidden_size": "n_embd",
        "num_hidden_layers": "n_layers",
        "max_position_embeddings": "block_size",
        "tie_word_embeddings": "tie_embeddings",
    }

    n_embd: int = 5280
    n_heads: int = 55
    n_layers: int = 8  # prelude + core + coda, recomputed below
    block_size: int = 4096
    vocab_size: int = 65536
    padded_vocab_size: int | None = None  # default vocab_size
    padding_multiple: int = 4096
    tie_embeddings: bool = True
    intermediate_size: int = 17920
    bias: bool = False  # the adapter's bias; no other layer has one
    architecture_class_name: str = "RecurrentGPT"
    block_class_name: str = "SandwichBlock"
    norm_class_name: str = "RMSNorm_llama"
    norm_eps: float = 1e-6
    mlp_class_name: str = "GatedMLP"
    nonlin_name: str = "SiLU"
    init_strategy: str = "takase"
    init_orthogonal: bool = False
    state_init: str = "like-init"
    injection_type: str = "linear"
    n_layers_in_recurrent_block: int = 4
    mean_recurrence: int = 32
    sampling_scheme: str = "poisson-lognormal-filling"
    mean_backprop_depth: int = 8
    n_layers_in_prelude: int = 2
    n_layers_in_coda: int = 2
    qk_bias: bool = True
    activation_checkpoint_impl: str = "per-iteration"
    rope_base: float = 50_000
    init_values: dict | None = None  # std, out_proj, embedding, embed_scale (derived when absent)
    num_key_value_heads: int | None = None
    head_dim: int | None = None
    effective_expected_depth: int | None = None
    test_time_noise: float = 0
    bos_token_id: int | None = None
    eos_token_id: int | None = None
    pad_token_id: int | None = None

    def __post_init__(self, **kwargs: Any) -> None:
        super().__post_init__(**kwargs)
        self.padded_vocab_size = self.padded_vocab_size or self.vocab_size
        self.n_layers = self.n_layers_in_prelude + self.n_layers_in_recurrent_block + self.n_layers_in_coda
        self.num_key_value_heads = self.num_key_value_heads or self.n_heads
        self.head_dim = self.n_embd // self.n_heads
        self.effective_expected_depth = (
            self.n_layers_in_prelude + self.n_layers_in_coda + self.n_layers_in_recurrent_block * self.mean_recurrence
        )
        if self.init_values is None:
            std = math.sqrt(2 / (5 * self.n_embd))
            self.init_values = {
                "std": std,
                "out_proj": std / math.sqrt(2 * self.effective_expected_depth),
                "embedding": std,
                "embed_scale": math.sqrt(self.n_embd),
            }

    def validate_published(self) -> None:
        """ValueError for a config the published code would not run as trained (or at all)."""
        for key, published in _PUBLISHED_CHOICES.items():
            if getattr(self, key) != published:
                raise ValueError(f"Huginn {key}={getattr(self, key)!r}: the published code implements only {published!r}")
        if self.test_time_noise:
            raise ValueError("Huginn test_time_noise adds random noise at every step; Loupe runs it only without")
        if self.num_key_value_heads != self.n_heads or self.n_embd % self.n_heads:
            raise ValueError("Huginn needs as many key/value heads as query heads, and n_embd divisible by n_heads")
        if self.n_layers_in_recurrent_block < 1:
            raise ValueError("Huginn needs at least one core block")


def rope_table(head_dim: int, n_positions: int, base: float) -> torch.Tensor:
    """[1, pos, 1, head_dim / 2, 2]: cos and sin of every position's angle for each adjacent dimension pair."""
    inv_freq = rope_inverse_frequencies(head_dim, base)  # [head_dim / 2]
    angles = torch.outer(torch.arange(n_positions, dtype=torch.float32), inv_freq)  # [pos, head_dim / 2]
    return torch.stack([angles.cos(), angles.sin()], dim=-1)[None, :, None]


def rotate_pairs(x: torch.Tensor, table: torch.Tensor) -> torch.Tensor:
    """x [batch, pos, head, head_dim] rotated pairwise: (x0, x1), (x2, x3), ... (not split halves), in float32."""
    pairs = x.float().unflatten(-1, (-1, 2))  # [batch, pos, head, head_dim / 2, 2]
    cos, sin = table[..., 0], table[..., 1]
    a, b = pairs[..., 0], pairs[..., 1]
    return torch.stack([a * cos - b * sin, b * cos + a * sin], dim=-1).flatten(-2).type_as(x)


HuginnRMSNorm = RMSNorm


class HuginnAttention(nn.Module):
    """Fused Wqkv, a learned bias added to q and k before rotation, pairwise RoPE, causal softmax."""

    accepts_pattern_fn = True  # TransformerLens' AttentionBridge hands its hook_pattern in as `pattern_fn`

    def __init__(self, config: HuginnConfig, layer_idx: int):
        super().__init__()
        self.config = config
        self.layer_idx = layer_idx
        self.n_heads, self.head_dim = config.n_heads, config.head_dim
        self.num_key_value_groups = 1
        self.scaling = self.head_dim**-0.5
        self.is_causal = True
        self.Wqkv = nn.Linear(config.n_embd, 3 * config.n_embd, bias=False)
        if config.qk_bias:
            self.qk_bias = nn.Parameter(torch.zeros(2, 1, self.n_heads, self.head_dim))
        self.proj = nn.Linear(config.n_embd, config.n_embd, bias=False)

    def forward(
        self, hidden: torch.Tensor, rope: torch.Tensor, attention_mask: torch.Tensor | None, pattern_fn: Any = None, **kwargs: Any
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        batch, pos, _ = hidden.shape
        q, k, v = self.Wqkv(hidden).view(batch, pos, 3, self.n_heads, self.head_dim).unbind(2)  # [batch, pos, head, d]
        if self.config.qk_bias:
            q, k = (q + self.qk_bias[0]).to(q.dtype), (k + self.qk_bias[1]).to(q.dtype)
        q, k = rotate_pairs(q, rope), rotate_pairs(k, rope)
        q, k, v = q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)  # [batch, head, pos, d]
        implementation = self.config._attn_implementation or "sdpa"
        if pattern_fn is not None or implementation == "eager":  # a bridge's hook_pattern needs the probabilities
            attend = eager_attention_forward
        else:
            attend = ALL_ATTENTION_FUNCTIONS[implementation]
        output, probs = attend(self, q, k, v, attention_mask, scaling=self.scaling, dropout=0.0, pattern_fn=pattern_fn)
        return self.proj(output.reshape(batch, pos, -1)), probs  # [batch, pos, d_model]


class HuginnMLP(nn.Module):
    def __init__(self, config: HuginnConfig):
        super().__init__()
        self.fc = nn.Linear(config.n_embd, 2 * config.intermediate_size, bias=False)
        self.proj = nn.Linear(config.intermediate_size, config.n_embd, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gate, up = self.fc(x).chunk(2, dim=-1)
        return self.proj(nn.functional.silu(gate) * up)


class HuginnBlock(nn.Module):
    """The sandwich block: the residual stream is renormalised after each addition."""

    def __init__(self, config: HuginnConfig, layer_idx: int):
        super().__init__()
        self.norm_1 = HuginnRMSNorm(config.n_embd, config.norm_eps)
        self.attn = HuginnAttention(config, layer_idx)
        self.norm_2 = HuginnRMSNorm(config.n_embd, config.norm_eps)
        self.mlp = HuginnMLP(config)
        self.norm_3 = HuginnRMSNorm(config.n_embd, config.norm_eps)
        self.norm_4 = HuginnRMSNorm(config.n_embd, config.norm_eps)

    def forward(self, x: torch.Tensor, rope: torch.Tensor, attention_mask: torch.Tensor | None) -> torch.Tensor:
        x = self.norm_2(self.attn(self.norm_1(x), rope, attention_mask)[0] + x)
        return self.norm_4(self.mlp(self.norm_3(x)) + x)  # [batch, pos, d_model]


class HuginnPreTrainedModel(PreTrainedModel):
    config_class = HuginnConfig
    base_model_prefix = "transformer"
    _no_split_modules = ["HuginnBlock"]
    _supports_attention_backend = True
    _supports_sdpa = True
    _supports_flash_attn = False

    @torch.no_grad()
    def _init_weights(self, module: nn.Module) -> None:
        """Random init (tests): truncated normals of the published std, ones for norms."""
        std = self.config.init_values["std"]
        if isinstance(module, HuginnRMSNorm):
            module.weight.fill_(1.0)
        elif isinstance(module, (nn.Linear, nn.Embedding)):
            nn.init.trunc_normal_(module.weight, std=std, a=-3 * std, b=3 * std)
            if getattr(module, "bias", None) is not None:
                module.bias.zero_()
        elif isinstance(module, HuginnAttention) and hasattr(module, "qk_bias"):
            module.qk_bias.zero_()


@dataclass
class _Run:
    """What every step of one forward shares."""

    embeds: torch.Tensor  # [batch, pos, d_model]: the embedded input after the prelude
    rope: torch.Tensor  # [1 or batch, pos, 1, head_dim / 2, 2]
    mask: torch.Tensor | None  # additive [batch, 1, pos, pos], or None where sdpa masks causally by itself


class HuginnModel(nn.Module):
    """Embedding, the flat layer list, the adapter and ln_f; owns the loop (`total_ut_steps`, over
    `looped_layers`) and the initial latent's seed (`latent_seed`: None draws from the global RNG, as published)."""

    def __init__(self, config: HuginnConfig):
        super().__init__()
        self.config = config
        self.wte = nn.Embedding(config.padded_vocab_size, config.n_embd)
        self.layers = nn.ModuleList(HuginnBlock(config, i) for i in range(config.n_layers))
        self.adapter = nn.Linear(2 * config.n_embd, config.n_embd, bias=config.bias)
        self.ln_f = HuginnRMSNorm(config.n_embd, config.norm_eps)
        self.register_buffer("freqs_cis", rope_table(config.head_dim, config.block_size, config.rope_base))
        self.total_ut_steps: int = int(config.mean_recurrence)
        self.latent_seed: int | None = None
        p, r = config.n_layers_in_prelude, config.n_layers_in_recurrent_block
        self.prelude, self.core, self.coda = range(p), range(p, p + r), range(p + r, config.n_layers)
        self.looped_layers = (p, p + r - 1)  # first and last core layer (loops.loop_layers reads it)

    def prepare(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None, position_ids: torch.Tensor | None = None
    ) -> _Run:
        """Embed (scaled) and run the prelude once."""
        embeds = self.wte(input_ids) * self.config.init_values["embed_scale"]  # [batch, pos, d_model]
        pos = input_ids.shape[1]
        if position_ids is None:
            rope = self.freqs_cis[:, :pos]
        else:
            rope = self.freqs_cis[0][position_ids.view(-1, pos)]  # [1|batch, pos, 1, d/2, 2]
        mask = create_causal_mask(
            config=self.config, inputs_embeds=embeds, attention_mask=attention_mask, cache=None, position_ids=position_ids
        )
        for i in self.prelude:
            embeds = self.layers[i](embeds, rope, mask)
        return _Run(embeds, rope, mask)

    def initial_state(self, embeds: torch.Tensor) -> torch.Tensor:
        """The published `initialize_state` (randn_like, then a ±3 std truncated normal in place, times
        the embedding scale); with `latent_seed` set, drawn for one row from its own generator and
        shared by every row, so a row's result does not depend on its batch."""
        std = self.config.init_values["std"]
        if self.latent_seed is None:
            x = torch.randn_like(embeds)
            generator = None
        else:
            generator = torch.Generator(device=embeds.device).manual_seed(int(self.latent_seed))
            x = torch.randn((1, *embeds.shape[1:]), generator=generator, device=embeds.device, dtype=embeds.dtype)
        if std <= 0:
            return x.zero_().expand_as(embeds)
        nn.init.trunc_normal_(x, mean=0.0, std=std, a=-3 * std, b=3 * std, generator=generator)
        return (x * self.config.init_values["embed_scale"]).expand_as(embeds)  # [batch, pos, d_model]

    def step(self, x: torch.Tensor, run: _Run) -> torch.Tensor:
        """One recurrence: inject the input through the adapter, then the core blocks."""
        x = self.adapter(torch.cat([x, run.embeds], dim=-1))  # [batch, pos, d_model]
        for i in self.core:
            x = self.layers[i](x, run.rope, run.mask)
        return x

    def iterate(self, run: _Run, n_iterations: int | None = None) -> Iterator[torch.Tensor]:
        """The latent [batch, pos, d_model] after each recurrence step."""
        x = self.initial_state(run.embeds)
        for _ in range(self.total_ut_steps if n_iterations is None else n_iterations):
            x = self.step(x, run)
            yield x

    def head(self, latent: torch.Tensor, run: _Run) -> torch.Tensor:
        """What the published forward does after the last step: ln_f, the coda, ln_f again."""
        x = self.ln_f(latent)
        for i in self.coda:
            x = self.layers[i](x, run.rope, run.mask)
        return self.ln_f(x)  # [batch, pos, d_model]

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
        **kwargs: Any,
    ) -> BaseModelOutputWithPast:
        run = self.prepare(input_ids, attention_mask, position_ids)
        latent = None
        for latent in self.iterate(run):
            pass
        if latent is None:
            raise ValueError("total_ut_steps must be at least 1")
        return BaseModelOutputWithPast(last_hidden_state=self.head(latent, run))


class HuginnForCausalLM(HuginnPreTrainedModel):
    """Huginn with its unembedding. No KV cache (the published one keeps keys per recurrence step):
    `use_cache=True` or a filled `past_key_values` is refused, and generation recomputes the prefix."""

    _tied_weights_keys = {"lm_head.weight": "transformer.wte.weight"}

    def __init__(self, config: HuginnConfig):
        super().__init__(config)
        self.transformer = HuginnModel(config)
        self.lm_head = nn.Linear(config.n_embd, config.padded_vocab_size, bias=False)
        self.post_init()

    def get_input_embeddings(self) -> nn.Module:
        return self.transformer.wte

    def get_output_embeddings(self) -> nn.Module:
        return self.lm_head

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
        past_key_values: Any = None,
        use_cache: bool | None = False,
        logits_to_keep: int = 0,
        **kwargs: Any,
    ) -> CausalLMOutputWithPast:
        if use_cache or (past_key_values is not None and getattr(past_key_values, "get_seq_length", lambda: 0)() > 0):
            raise ValueError("Huginn runs with no KV cache in Loupe: pass the whole sequence at every step")
        hidden = self.transformer(input_ids, attention_mask=attention_mask, position_ids=position_ids).last_hidden_state
        hidden = hidden[:, -logits_to_keep:] if logits_to_keep else hidden
        return CausalLMOutputWithPast(logits=self.lm_head(hidden).float())

    @torch.no_grad()
    def exit_logits(self, input_ids: torch.Tensor, n_iterations: int | None = None) -> torch.Tensor:
        """[iteration, batch, pos, d_vocab]: the model's own output had it stopped after each step
        (each latent through ln_f, the coda, ln_f and lm_head, as the forward does after the last)."""
        run = self.transformer.prepare(input_ids)
        exits = [self.lm_head(self.transformer.head(x, run)).float() for x in self.transformer.iterate(run, n_iterations)]
        return torch.stack(exits)  # [iteration, batch, pos, d_vocab]


# ---- published checkpoints: names, loading, saving -------------------------------------------------------


def _published_index(config: HuginnConfig) -> dict[str, tuple[str, int]]:
    """Flat layer -> (published list, index in it)."""
    p, r = config.n_layers_in_prelude, config.n_layers_in_recurrent_block
    return {
        flat: ("prelude", flat) if flat < p else ("core_block", flat - p) if flat < p + r else ("coda", flat - p - r)
        for flat in range(config.n_layers)
    }


def from_published_name(name: str, config: HuginnConfig) -> str | None:
    """Loupe's name for a published tensor name; None when the name is not one of Huginn's."""
    if name == "freqs_cis":
        return "transformer.freqs_cis"
    parts = name.split(".", 3)
    if len(parts) == 4 and parts[0] == "transformer" and parts[2].isdigit():
        flat = {place: i for i, place in _published_index(config).items()}.get((parts[1], int(parts[2])))
        return None if flat is None else f"transformer.layers.{flat}.{parts[3]}"
    return name


def to_published_name(name: str, config: HuginnConfig) -> str:
    if name == "transformer.freqs_cis":
        return "freqs_cis"
    parts = name.split(".", 3)
    if len(parts) == 4 and parts[:2] == ["transformer", "layers"]:
        block, i = _published_index(config)[int(parts[2])]
        return f"transformer.{block}.{i}.{parts[3]}"
    return name


def config_from_dict(values: dict) -> HuginnConfig:
    """The config of a config.json's contents; ValueError where the published code would not run it as trained."""
    config = HuginnConfig(**{key: value for key, value in values.items() if key != "model_type"})
    config.validate_published()
    return config


def load_config(path: Path) -> HuginnConfig:
    return config_from_dict(json.loads((Path(path) / "config.json").read_text()))


def load(path: Path, device: str = "cpu", dtype: torch.dtype = torch.float32, attn_implementation: str = "sdpa") -> HuginnForCausalLM:
    """The model saved at `path` in the published layout, in eval mode. Every published tensor must be
    there and nothing else (`freqs_cis` may be absent: it is recomputed; a tied `lm_head` is the embedding)."""
    config = load_config(path)
    config._attn_implementation = attn_implementation
    with torch.device("meta"):
        model = HuginnForCausalLM(config)
    expected = set(model.state_dict())
    state: dict[str, torch.Tensor] = {}
    unexpected = []
    for name, tensor in checkpoints.read_weights(path).items():
        ours = from_published_name(name, config)
        if ours is None or ours not in expected:
            unexpected.append(name)
        else:
            state[ours] = tensor
    state.setdefault("transformer.freqs_cis", rope_table(config.head_dim, config.block_size, config.rope_base))
    if config.tie_embeddings:  # as the published model ties after loading: the embedding wins
        head = state.pop("lm_head.weight", None)
        if head is not None and not torch.equal(head, state.get("transformer.wte.weight", head)):
            log.warning("%s: lm_head.weight differs from the tied embedding; the embedding is used, as published", path)
        state["lm_head.weight"] = state.get("transformer.wte.weight")
    missing = sorted(to_published_name(name, config) for name in expected if state.get(name) is None)
    if missing or unexpected:
        raise ValueError(f"{path}: not a Huginn checkpoint of this config (missing {missing[:5]}, unexpected {unexpected[:5]})")
    state = {name: t.to(torch.float32 if name.endswith("freqs_cis") else dtype) for name, t in state.items()}
    model.load_state_dict(state, strict=True, assign=True)
    if config.tie_embeddings:
        model.lm_head.weight = model.transformer.wte.weight
    return model.to(device).eval().requires_grad_(False)


def published_config(config: HuginnConfig) -> dict:
    """config.json in the hub's layout (its `auto_map` names the remote files Loupe never runs)."""
    values = {key: getattr(config, key) for key in _PUBLISHED_KEYS}
    return {"architectures": [PUBLISHED_ARCHITECTURE], "auto_map": AUTO_MAP, "model_type": "huginn_raven", **values}


def save_published(model: HuginnForCausalLM, path: Path) -> Path:
    """Write model.safetensors under the published tensor names, and config.json in the hub's layout."""
    state = {to_published_name(name, model.config): t for name, t in model.state_dict().items()}
    return checkpoints.write_folder(path, published_config(model.config), state)


# ---- Loupe's entry points --------------------------------------------------------------------------------


def facts(config: dict) -> Facts:
    """What /api/models lists, from config.json alone (ValueError for a config Loupe cannot run)."""
    parsed = config_from_dict(config)
    return Facts(
        n_layers=parsed.n_layers,  # prelude + core + coda
        n_heads=parsed.n_heads,
        n_iterations=parsed.mean_recurrence,
        n_ctx=parsed.block_size,
        draws_random=True,
        own_exit=True,  # its early exit runs the coda: `exit_logits`, not final norm + unembedding
    )


@cache
def _register_adapter() -> None:
    """Register Loupe's adapter with TransformerLens under ARCHITECTURE (once per process)."""
    from transformer_lens.factories.architecture_adapter_factory import ArchitectureAdapterFactory
    from transformer_lens.model_bridge.generalized_components import (
        EmbeddingBridge,
        OpaqueBlockBridge,
        RMSNormalizationBridge,
        UnembeddingBridge,
    )
    from transformer_lens.model_bridge.supported_architectures.raven import RavenArchitectureAdapter

    class LoupeHuginnAdapter(RavenArchitectureAdapter):
        """TransformerLens' Raven adapter with one flat `blocks` list (prelude + core + coda) in
        place of its three, so each block's hooks fire every time the block runs."""

        def __init__(self, cfg: Any) -> None:
            super().__init__(cfg)
            self.component_mapping = {
                "embed": EmbeddingBridge(name="transformer.wte"),
                "blocks": OpaqueBlockBridge(name="transformer.layers", submodules=self._sandwich_submodules()),
                "ln_final": RMSNormalizationBridge(name="transformer.ln_f", config=self.cfg),
                "unembed": UnembeddingBridge(name="lm_head"),
            }

    ArchitectureAdapterFactory.register_adapter(ARCHITECTURE, LoupeHuginnAdapter)


def boot(path: Path, device: str = "cpu") -> Any:
    """A TransformerBridge around Loupe's Huginn loaded from `path` (published layout); its `blocks`
    are every layer in run order: prelude once, core blocks once per step, coda once."""
    _register_adapter()
    return checkpoints.bridge(load(Path(path), device), ARCHITECTURE, path, device)
