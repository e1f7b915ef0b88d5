"""The model types on which Loupe's fast paths are verified exact, by tests/test_architectures.py.

Each list is an allow-list: a model type joins it only once the architecture matrix has shown, on
a tiny seeded model of it, that the path equals the model's own computation (HF eager attention,
a plain forward's logits). Anything else takes the model's own path, or is refused by name.
"""

# Loupe's attention function (capture.py) equals HF eager attention, patterns and logits (hrm_text's
# two stacks, and Loupe's own Ouro and Huginn: tests/native/). A model type whose HF code decides its math by the attention implementation's name (GLM-MoE-DSA applies
# its sparse mask only under "eager") would be silently wrong there: it stays off this list.
NATIVE_MODEL_TYPES = frozenset(
    """afmoe apertus arcee bert bitnet bloom codegen cohere cohere2 deepseek_v2 deepseek_v3 ernie4_5 ernie4_5_moe
    exaone4 falcon falcon_h1 flex_olmo gemma gemma2 gemma3_text gemma4_text glm glm4 glm4_moe
    glm4_moe_lite gpt2 gpt_bigcode gpt_neo gpt_neox gpt_oss gptj granite granitemoe granitemoehybrid hrm_text huginn_raven hunyuan_v1_dense jais2
    jetmoe laguna llama llama4_text minimax_m2 ministral3 mistral mixtral modernbert-decoder mpt nanochat
    nemotron olmo olmo2 olmo3 olmoe openai-gpt ouro opt phi phi3 qwen2 qwen2_moe qwen3 qwen3_moe recurrent_gemma roberta seed_oss smollm3
    stablelm starcoder2 vaultgemma xglm youtu""".split()
)

# The residual stream is recorded at every layer (loops.run_recording) and the early exit (final
# norm, then unembedding: loops.readout) is the model's own output head, so the logit lens's last
# layer is the model's next-token distribution (Ouro's per-step exit: tests/native/test_ouro.py); probes and the logit lens need both. Off it: heads that scale or
# soft-cap their logits or add layers (Cohere's logit scale, Gemma 3's and RecurrentGemma's
# soft-capping, ModernBERT-decoder's head), and bridges that lack the residual hooks.
READOUT_MODEL_TYPES = frozenset(
    """afmoe apertus arcee bamba bert bitnet bloom deepseek_v2 deepseek_v3 ernie4_5 ernie4_5_moe exaone4 falcon
    falcon_h1 falcon_mamba flex_olmo gemma gemma2 gemma4_text glm glm4 glm4_moe glm4_moe_lite glm_moe_dsa gpt2
    gpt_bigcode gpt_neo gpt_neox gpt_oss gptj granite granitemoe hunyuan_v1_dense jais2 jamba jetmoe laguna lfm2
    lfm2_moe llama llama4_text mamba mamba2 minimax_m2 ministral3 mistral mixtral mpt nanochat nemotron nemotron_h
    olmo olmo2 olmo3 olmo_hybrid olmoe opt ouro phi phi3 qwen2 qwen2_moe qwen3 qwen3_5_moe_text qwen3_5_text qwen3_moe
    qwen3_next roberta rwkv seed_oss smollm3 stablelm starcoder2 vaultgemma xglm youtu""".split()
)
