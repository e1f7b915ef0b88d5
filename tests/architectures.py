"""The architecture matrix: one tiny seeded random-init model per decoder-only architecture that
TransformerLens' TransformerBridge supports and the installed transformers provides, with the
features that change attention math switched on (sliding windows shorter than a test prompt,
soft-capping, ALiBi, partial rotary, MLA, MoE, sparse masks, hybrid layers), saved with the shared
tokenizer so Loupe loads each as `local/<name>`.

`ARCHITECTURES` names the ones with attention, `ATTENTION_FREE` those without (state-space and
recurrent models, which Loupe has no pattern to show for), `not_built()` the supported class names
left out and why. `build_architecture(name, root)` writes one model; `build_all(root)` all of them.
"""

import re
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

from .tiny_models import _save, _tokenizer

SEED = 0
# q and k projections (and qk-norm weights) are scaled so that patterns are sharp, not near-uniform:
# with the default init (std 0.02) at d_model 64 every score is ~0 and softmax ~ 1 / n_keys.
SHARPEN = 8.0
QK_NORM_VALUE = 3.0

# Weights whose output is the queries or keys (fused qkv included; for MLA the up-projections after
# the low-rank norms, which would undo a scale applied before them).
_QK_WEIGHT = re.compile(
    r"(^|\.)(q_proj|k_proj|kv_proj|q_b_proj|kv_b_proj|qkv_proj|c_attn|query_key_value|Wqkv|wqkv|"
    r"self_attention\.experts\.input_linear)\.weight$"
)
_QK_NORM_WEIGHT = re.compile(r"(^|\.)(q_norm|k_norm|q_layernorm|k_layernorm|q_ln|k_ln|query_norm|key_norm)\.weight$")

# Sizes shared by every model; a config takes only the keys it knows (see _config).
COMMON: dict[str, Any] = dict(
    hidden_size=64,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,
    head_dim=16,
    intermediate_size=128,
    max_position_embeddings=256,
    bos_token_id=0,
    eos_token_id=0,
    pad_token_id=0,
    tie_word_embeddings=False,
)

# Applied where the config's defaults have the key: few small experts, a small latent attention,
# small state-space blocks, and every attention-changing feature at a value a 24-token prompt reaches.
IF_PRESENT: dict[str, Any] = dict(
    # MoE
    num_experts=4, num_local_experts=4, n_routed_experts=4, moe_num_experts=4,
    num_experts_per_tok=2, moe_k=2, top_k_experts=2,
    n_shared_experts=1, num_shared_experts=1, moe_num_shared_experts=1,
    moe_intermediate_size=32, shared_expert_intermediate_size=32, moe_shared_expert_intermediate_size=32,
    shared_intermediate_size=32, intermediate_size_mlp=128,
    first_k_dense_replace=1, num_dense_layers=1, n_group=1, topk_group=1,
    # MLA
    kv_lora_rank=32, q_lora_rank=48, qk_rope_head_dim=8, qk_nope_head_dim=16, v_head_dim=16, qk_head_dim=24,
    # sparse (DSA) indexers
    index_n_heads=2, index_head_dim=16, index_topk=8,
    # attention features
    sliding_window=8, attention_window_size=8, attention_chunk_size=8, window_size=8,
    attn_logit_softcapping=5.0, final_logit_softcapping=3.0, logits_soft_cap=3.0,
    query_pre_attn_scalar=16,
    # state-space / linear-attention blocks
    mamba_n_heads=4, mamba_d_head=32, mamba_d_state=16, mamba_chunk_size=32, mamba_n_groups=1, mamba_dt_rank=8,
    mamba_d_ssm=128, n_mamba_heads=4, mamba_headdim=32, mamba_num_heads=4, mamba_head_dim=32, ssm_state_size=16,
    linear_num_key_heads=2, linear_num_value_heads=4, linear_key_head_dim=16, linear_value_head_dim=16,
    lru_width=64, use_mamba_kernels=False,
)


@dataclass(frozen=True)
class Architecture:
    """A tiny model of one HF class: `overrides` on top of COMMON / IF_PRESENT (None drops a key)."""

    name: str
    hf_class: str
    overrides: dict[str, Any] = field(default_factory=dict)
    features: str = ""


def _a(name: str, hf_class: str, features: str = "", **overrides: Any) -> Architecture:
    return Architecture(name, hf_class, overrides, features)


SLIDING_FULL = ["sliding_attention", "full_attention"]
VOCAB = "<the shared tokenizer's size>"  # an override value replaced by len(tokenizer())

ARCHITECTURES: list[Architecture] = [
    _a("afmoe", "AfmoeForCausalLM", "MoE, sliding window", global_attn_every_n_layers=2, layer_types=SLIDING_FULL),
    _a("apertus", "ApertusForCausalLM", "xIELU, qk-norm"),
    _a("arcee", "ArceeForCausalLM"),
    _a("bamba", "BambaForCausalLM", "hybrid mamba2 + attention", attn_layer_indices=[1]),
    _a("bitnet", "BitNetForCausalLM"),
    _a("bloom", "BloomForCausalLM", "ALiBi", n_head=4),
    _a("codegen", "CodeGenForCausalLM", "partial rotary", rotary_dim=8, n_ctx=256, n_inner=128),
    _a("cohere", "CohereForCausalLM", "parallel block, qk-norm", use_qk_norm=True),
    _a("cohere2", "Cohere2ForCausalLM", "sliding window", layer_types=SLIDING_FULL),
    _a("deepseek_v2", "DeepseekV2ForCausalLM", "MLA, MoE", head_dim=8, num_key_value_heads=4),
    _a("deepseek_v3", "DeepseekV3ForCausalLM", "MLA, MoE", head_dim=8, num_key_value_heads=4),
    _a("deepseek_v4", "DeepseekV4ForCausalLM", "compressed sparse attention, MoE, hyper-connections",
       o_lora_rank=32, o_groups=2, num_key_value_heads=1, layer_types=["compressed_sparse_attention", "heavily_compressed_attention"],
       mlp_layer_types=["moe", "moe"], compress_rates={"compressed_sparse_attention": 4, "heavily_compressed_attention": 8},
       num_nextn_predict_layers=0),
    _a("ernie4_5", "Ernie4_5ForCausalLM"),
    _a("ernie4_5_moe", "Ernie4_5_MoeForCausalLM", "MoE", moe_layer_start_index=1, moe_layer_end_index=1),
    _a("exaone4", "Exaone4ForCausalLM", "sliding window", sliding_window_pattern=2, layer_types=SLIDING_FULL),
    _a("falcon", "FalconForCausalLM", "rotary, multi-query, parallel attention", head_dim=None, num_key_value_heads=None,
       multi_query=True, parallel_attn=True, ffn_hidden_size=128),
    _a("falcon_alibi", "FalconForCausalLM", "ALiBi, parallel attention", head_dim=None, num_key_value_heads=None,
       alibi=True, multi_query=False, parallel_attn=True, ffn_hidden_size=128),
    _a("falcon_h1", "FalconH1ForCausalLM", "parallel mamba2 + attention in every layer, muP multipliers"),
    _a("flex_olmo", "FlexOlmoForCausalLM", "MoE"),
    _a("gemma", "GemmaForCausalLM"),
    _a("gemma2", "Gemma2ForCausalLM", "attention + final soft-capping, sliding window", layer_types=SLIDING_FULL),
    _a("gemma3", "Gemma3ForCausalLM", "sliding window, qk-norm, soft-capping", layer_types=SLIDING_FULL),
    _a("gemma4", "Gemma4ForCausalLM", "sliding window, per-layer inputs, proportional partial rotary",
       layer_types=SLIDING_FULL, vocab_size_per_layer_input=VOCAB, hidden_size_per_layer_input=16, per_layer_config={}),
    _a("glm", "GlmForCausalLM", "partial rotary"),
    _a("glm4", "Glm4ForCausalLM", "partial rotary"),
    _a("glm4_moe", "Glm4MoeForCausalLM", "MoE, partial rotary", use_qk_norm=True),
    _a("glm4_moe_lite", "Glm4MoeLiteForCausalLM", "MLA, MoE", head_dim=8, num_key_value_heads=4),
    _a("glm_moe_dsa", "GlmMoeDsaForCausalLM", "MLA, DSA sparse indexer (top-8 keys), MoE", head_dim=8, num_key_value_heads=4),
    _a("gpt2", "GPT2LMHeadModel", n_inner=128),
    _a("gpt_bigcode", "GPTBigCodeForCausalLM", "multi-query", n_inner=128),
    _a("gpt_oss", "GptOssForCausalLM", "attention sinks, sliding window, MoE", layer_types=SLIDING_FULL),
    _a("gptj", "GPTJForCausalLM", "partial rotary (interleaved), parallel block", rotary_dim=8, n_inner=128),
    _a("gpt_neo", "GPTNeoForCausalLM", "local attention, unscaled scores", attention_types=[[["local", "global"], 1]],
       intermediate_size=128),
    _a("gpt_neox", "GPTNeoXForCausalLM", "partial rotary, parallel residual", num_key_value_heads=None),
    _a("granite", "GraniteForCausalLM", "attention multiplier"),
    _a("granite_moe", "GraniteMoeForCausalLM", "MoE, attention multiplier"),
    _a("granite_moe_hybrid", "GraniteMoeHybridForCausalLM", "hybrid mamba2 + attention, MoE", layer_types=["mamba", "attention"]),
    _a("hrm_text", "HrmTextForCausalLM", "hierarchical recurrence", num_layers_per_stack=1, H_cycles=1, L_cycles=1, L_bp_cycles=[1]),
    _a("hunyuan_v1_dense", "HunYuanDenseV1ForCausalLM", "qk-norm"),
    _a("jais2", "Jais2ForCausalLM"),
    _a("jamba", "JambaForCausalLM", "hybrid mamba + attention, MoE", attn_layer_period=2, attn_layer_offset=1,
       expert_layer_period=2, expert_layer_offset=1),
    _a("jetmoe", "JetMoeForCausalLM", "mixture of attention heads, MoE", kv_channels=16),
    _a("laguna", "LagunaForCausalLM", "sliding window, gated attention, per-layer heads, MoE", layer_types=SLIDING_FULL,
       num_attention_heads_per_layer=[4, 4], mlp_layer_types=["dense", "sparse"]),
    _a("lfm2", "Lfm2ForCausalLM", "hybrid short-conv + attention", layer_types=["conv", "full_attention"], full_attn_idxs=None),
    _a("lfm2_moe", "Lfm2MoeForCausalLM", "hybrid short-conv + attention, MoE", layer_types=["conv", "full_attention"]),
    _a("llama", "LlamaForCausalLM"),
    _a("llama4", "Llama4ForCausalLM", "chunked attention, NoPE layers, temperature tuning, MoE",
       layer_types=["chunked_attention", "full_attention"], no_rope_layers=[1, 0], moe_layers=[1], floor_scale=4),
    _a("minimax_m2", "MiniMaxM2ForCausalLM", "MoE, partial rotary"),
    _a("ministral3", "Ministral3ForCausalLM", "sliding window"),
    _a("mistral", "MistralForCausalLM", "sliding window"),
    _a("mixtral", "MixtralForCausalLM", "sliding window, MoE"),
    _a("modernbert_decoder", "ModernBertDecoderForCausalLM", "local attention", global_attn_every_n_layers=2, local_attention=8,
       layer_types=SLIDING_FULL),
    _a("mpt", "MptForCausalLM", "ALiBi", expansion_ratio=2),
    _a("nanochat", "NanoChatForCausalLM", "final soft-capping, qk-norm"),
    _a("nemotron", "NemotronForCausalLM", "partial rotary"),
    _a("nemotron_h", "NemotronHForCausalLM", "hybrid mamba2 + attention + MoE",
       layers_block_type=["mamba", "attention", "moe", "mlp"], num_hidden_layers=4, mtp_layers_block_type=None, n_groups=1),
    _a("olmo", "OlmoForCausalLM", "qkv clipping", clip_qkv=2.0),
    _a("olmo2", "Olmo2ForCausalLM", "qk-norm"),
    _a("olmo3", "Olmo3ForCausalLM", "sliding window, qk-norm", layer_types=SLIDING_FULL),
    _a("olmo_hybrid", "OlmoHybridForCausalLM", "hybrid gated delta-net + attention", layer_types=["linear_attention", "full_attention"]),
    _a("olmoe", "OlmoeForCausalLM", "MoE, qk-norm"),
    _a("openai_gpt", "OpenAIGPTLMHeadModel", n_positions=256),
    _a("opt", "OPTForCausalLM", ffn_dim=128, word_embed_proj_dim=64),
    _a("phi", "PhiForCausalLM", "partial rotary, parallel block"),
    _a("phi3", "Phi3ForCausalLM", "sliding window"),
    _a("qwen2", "Qwen2ForCausalLM", "sliding window on layer 1", use_sliding_window=True, max_window_layers=1,
       layer_types=["full_attention", "sliding_attention"]),
    _a("qwen2_moe", "Qwen2MoeForCausalLM", "MoE, shared expert", use_sliding_window=False),
    _a("qwen3", "Qwen3ForCausalLM", "qk-norm", use_sliding_window=False),
    _a("qwen3_moe", "Qwen3MoeForCausalLM", "MoE, qk-norm", use_sliding_window=False),
    _a("qwen3_next", "Qwen3NextForCausalLM", "hybrid gated delta-net + gated attention, MoE",
       layer_types=["linear_attention", "full_attention"]),
    _a("qwen3_5", "Qwen3_5ForCausalLM", "hybrid gated delta-net + gated attention", layer_types=["linear_attention", "full_attention"]),
    _a("qwen3_5_moe", "Qwen3_5MoeForCausalLM", "hybrid gated delta-net + gated attention, MoE",
       layer_types=["linear_attention", "full_attention"]),
    _a("recurrent_gemma", "RecurrentGemmaForCausalLM", "hybrid RG-LRU + local attention, soft-capping",
       block_types=["recurrent", "attention"], num_key_value_heads=1),
    _a("seed_oss", "SeedOssForCausalLM", attention_dropout=0.0),
    _a("smollm3", "SmolLM3ForCausalLM", "NoPE layers", no_rope_layers=[1, 0]),
    _a("stablelm", "StableLmForCausalLM", "partial rotary"),
    _a("starcoder2", "Starcoder2ForCausalLM", "sliding window"),
    _a("vaultgemma", "VaultGemmaForCausalLM", "attention + final soft-capping, sliding window", layer_types=SLIDING_FULL),
    _a("xglm", "XGLMForCausalLM", "sinusoidal positions", attention_heads=4, ffn_dim=128, d_model=64, num_layers=2),
    _a("youtu", "YoutuForCausalLM", "MLA", head_dim=8, num_key_value_heads=4),
    _a("zamba2", "Zamba2ForCausalLM", "hybrid mamba2 + shared attention block", layers_block_type=["mamba", "hybrid"],
       hybrid_layer_ids=[1], attention_head_dim=None, attention_hidden_size=None, kv_channels=None, num_query_groups=None),
]

ATTENTION_FREE: list[Architecture] = [
    _a("mamba", "MambaForCausalLM", "selective SSM", intermediate_size=128, state_size=16, time_step_rank=8),
    _a("mamba2", "Mamba2ForCausalLM", "SSD", num_heads=4, head_dim=32, state_size=16, n_groups=1, chunk_size=32),
    _a("falcon_mamba", "FalconMambaForCausalLM", "selective SSM", intermediate_size=128, state_size=16, time_step_rank=8),
    _a("rwkv", "RwkvForCausalLM", "RWKV-4 time mixing", attention_hidden_size=64, context_length=256),
]

BY_NAME = {arch.name: arch for arch in ARCHITECTURES + ATTENTION_FREE}
# A causal-LM head on an encoder: not a decoder-only architecture.
_NOT_DECODER_ONLY = {"BertLMHeadModel"}


def supported_causal_lms() -> list[str]:
    """The HF class names of TransformerBridge's supported list that are decoder-only causal LMs
    of the installed transformers: what the matrix must cover."""
    import transformers
    from transformer_lens.factories.architecture_adapter_factory import SUPPORTED_ARCHITECTURES

    return sorted(
        name
        for name in SUPPORTED_ARCHITECTURES
        if name.endswith(("ForCausalLM", "LMHeadModel")) and hasattr(transformers, name) and name not in _NOT_DECODER_ONLY
    )


def not_built() -> dict[str, str]:
    """Supported class names the matrix leaves out, with the reason."""
    import transformers
    from transformer_lens.factories.architecture_adapter_factory import SUPPORTED_ARCHITECTURES

    built = {arch.hf_class for arch in BY_NAME.values()}
    reasons = {}
    for name in sorted(set(SUPPORTED_ARCHITECTURES) - built):
        if not hasattr(transformers, name):
            reasons[name] = f"not in transformers {transformers.__version__} (remote code or another package)"
        else:
            reasons[name] = "not a decoder-only text LM (encoder, encoder-decoder, vision, audio or multimodal)"
    return reasons


@lru_cache(maxsize=1)
def tokenizer():
    return _tokenizer()


def _config(arch: Architecture) -> Any:
    import transformers

    config_class = getattr(transformers, arch.hf_class).config_class
    defaults = config_class().to_dict()
    known = set(defaults) | set(getattr(config_class, "attribute_map", {}))
    kwargs: dict[str, Any] = {key: value for key, value in COMMON.items() if key in known or key == "head_dim"}
    kwargs.update({key: value for key, value in IF_PRESENT.items() if key in defaults})
    kwargs["vocab_size"] = len(tokenizer())
    for key, value in arch.overrides.items():
        if value is None:
            kwargs.pop(key, None)
        elif value is VOCAB:
            kwargs[key] = len(tokenizer())
        else:
            kwargs[key] = value
    return config_class(**kwargs)


def _sharpen(model: Any) -> int:
    """Scale query/key weights (and set qk-norm weights) so that patterns are peaked. Returns how
    many tensors were changed."""
    import torch

    changed = 0
    with torch.no_grad():
        for name, param in model.named_parameters():
            if _QK_WEIGHT.search(name):
                param.mul_(SHARPEN)
                changed += 1
            elif _QK_NORM_WEIGHT.search(name):
                param.fill_(QK_NORM_VALUE)
                changed += 1
    return changed


def build_model(arch: Architecture) -> Any:
    """The seeded random-init HF model of one architecture, in float32 and eval mode."""
    import torch
    import transformers

    config = _config(arch)
    torch.manual_seed(SEED)
    model = getattr(transformers, arch.hf_class)(config).float().eval()
    _sharpen(model)
    return model


def build_architecture(name: str, root: Path) -> Path:
    """Save the tiny model of architecture `name` (with the shared tokenizer) under root/name, so
    Loupe loads it as `local/<name>`. Returns the folder."""
    arch = BY_NAME[name]
    return _save(Path(root) / name, build_model(arch), tokenizer())


def build_all(root: Path, names: list[str] | None = None) -> dict[str, Path | Exception]:
    """Build every architecture (or `names`) under root. Returns name -> folder, or the exception
    that stopped its build (so one broken config does not hide the others)."""
    built: dict[str, Path | Exception] = {}
    for name in names or list(BY_NAME):
        try:
            built[name] = build_architecture(name, root)
        except Exception as exc:  # reported per architecture by the matrix
            built[name] = exc
    return built
