"""An Ouro forward in plain torch, from the published equations, reading a saved folder's
config.json and model.safetensors by tensor name: the independent computation the tests hold
Loupe's Ouro (loupe.architectures.ouro) against. Nothing here imports it.

Published (ByteDance's modeling_ouro.py, OuroModel.forward and OuroForCausalLM.forward): per
step, every layer is a sandwich-norm block (RMS-normed sublayer input, RMS-normed sublayer output
added to the residual) with RoPE grouped-query attention and a SwiGLU MLP; after every step the
final norm is applied and the normed state feeds the next step; the exit gate is a linear map of
that normed state, lambda = sigmoid(gate), pdf_t = lambda_t * prod_{s<t} (1 - lambda_s) with the
last step taking the rest; the output logits are the lm_head of the first step whose cumulative
pdf reaches early_exit_threshold (the last step if none does).
"""

import json
import math
from pathlib import Path

import torch
from safetensors.torch import load_file


def _rms(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    return weight * (x / torch.sqrt(x.pow(2).mean(-1, keepdim=True) + eps))


def _rotate(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """RoPE on x [batch, head, pos, d_head]: pairs (i, i + d_head/2) rotated by position * freq_i."""
    half = x.shape[-1] // 2
    x1, x2 = x[..., :half], x[..., half:]
    return torch.cat([x1 * cos - x2 * sin, x2 * cos + x1 * sin], dim=-1)


def reference(folder: Path, tokens: torch.Tensor, n_iterations: int | None = None) -> dict[str, torch.Tensor]:
    """Every quantity the tests compare, for tokens [batch, pos]:
    patterns [iteration, layer, batch, head, query_pos, key_pos], step_logits [iteration, batch,
    pos, d_vocab], logits [batch, pos, d_vocab] (the model's output), exit_lambda and exit_pdf
    [iteration, batch, pos], expected_exit_step [batch, pos] (steps from 1), exit_iteration
    [batch, pos] (0-based)."""
    config = json.loads((Path(folder) / "config.json").read_text())
    w = {name: t.double() for name, t in load_file(Path(folder) / "model.safetensors").items()}
    n_layers, n_heads, n_kv = config["num_hidden_layers"], config["num_attention_heads"], config["num_key_value_heads"]
    d_head, eps = config["head_dim"], config["rms_norm_eps"]
    steps = config["total_ut_steps"] if n_iterations is None else n_iterations
    batch, n_pos = tokens.shape

    freqs = config["rope_theta"] ** (-torch.arange(0, d_head, 2, dtype=torch.float64) / d_head)  # [d_head / 2]
    angle = torch.arange(n_pos, dtype=torch.float64)[:, None] * freqs  # [pos, d_head / 2]
    cos, sin = angle.cos(), angle.sin()
    causal = torch.ones(n_pos, n_pos, dtype=torch.bool).tril()  # [query_pos, key_pos]

    x = w["model.embed_tokens.weight"][tokens]  # [batch, pos, d_model]
    patterns, states, gates = [], [], []
    for _ in range(steps):
        step_patterns = []
        for layer in range(n_layers):
            p = f"model.layers.{layer}."
            h = _rms(x, w[p + "input_layernorm.weight"], eps)
            q = (h @ w[p + "self_attn.q_proj.weight"].T).view(batch, n_pos, n_heads, d_head).transpose(1, 2)
            k = (h @ w[p + "self_attn.k_proj.weight"].T).view(batch, n_pos, n_kv, d_head).transpose(1, 2)
            v = (h @ w[p + "self_attn.v_proj.weight"].T).view(batch, n_pos, n_kv, d_head).transpose(1, 2)
            q, k = _rotate(q, cos, sin), _rotate(k, cos, sin)
            # grouped-query: query head i reads key/value head i // (n_heads / n_kv)
            k, v = k.repeat_interleave(n_heads // n_kv, dim=1), v.repeat_interleave(n_heads // n_kv, dim=1)
            scores = (q @ k.transpose(-1, -2)) / math.sqrt(d_head)  # [batch, head, q, k]
            probs = scores.masked_fill(~causal, float("-inf")).softmax(-1)
            step_patterns.append(probs)
            z = (probs @ v).transpose(1, 2).reshape(batch, n_pos, n_heads * d_head)
            x = x + _rms(z @ w[p + "self_attn.o_proj.weight"].T, w[p + "input_layernorm_2.weight"], eps)
            h = _rms(x, w[p + "post_attention_layernorm.weight"], eps)
            gate, up = h @ w[p + "mlp.gate_proj.weight"].T, h @ w[p + "mlp.up_proj.weight"].T
            mlp = (torch.nn.functional.silu(gate) * up) @ w[p + "mlp.down_proj.weight"].T
            x = x + _rms(mlp, w[p + "post_attention_layernorm_2.weight"], eps)
        x = _rms(x, w["model.norm.weight"], eps)  # after every step; feeds the next
        states.append(x)
        gates.append(x @ w["model.early_exit_gate.weight"].T[:, 0] + w["model.early_exit_gate.bias"][0])  # [batch, pos]
        patterns.append(torch.stack(step_patterns))

    unembed = w["model.embed_tokens.weight"] if config.get("tie_word_embeddings") else w["lm_head.weight"]
    step_logits = torch.stack([s @ unembed.T for s in states])  # [iteration, batch, pos, d_vocab]
    lam = torch.sigmoid(torch.stack(gates))  # [iteration, batch, pos]
    pdf, left = [], torch.ones(batch, n_pos, dtype=torch.float64)
    for t in range(steps):
        pdf.append(lam[t] * left if t < steps - 1 else left)
        left = left * (1 - lam[t])
    pdf = torch.stack(pdf)  # [iteration, batch, pos]

    # The exit rule reads the pdf as the model computes it, in float32 (rounding decides whether a
    # sum "reaches 1.0"), in the published layout [batch, pos, step].
    lam32, left32, pdf32 = lam.float(), torch.ones(batch, n_pos), []
    for t in range(steps):
        pdf32.append(lam32[t] * left32 if t < steps - 1 else left32)
        left32 = left32 * (1 - lam32[t])
    pdf32 = torch.stack(pdf32, dim=2)  # [batch, pos, step]
    cumulative = pdf32.cumsum(dim=2)  # [batch, pos, step]
    threshold = config.get("early_exit_threshold")
    exit_iteration = torch.full((batch, n_pos), steps - 1, dtype=torch.long)
    if threshold is not None:
        for b in range(batch):
            for pos in range(n_pos):
                reached = [t for t in range(steps) if cumulative[b, pos, t] >= threshold]
                exit_iteration[b, pos] = reached[0] if reached else steps - 1
    chosen = step_logits.permute(1, 2, 0, 3)[torch.arange(batch)[:, None], torch.arange(n_pos), exit_iteration]

    return {
        "patterns": torch.stack(patterns).float(),  # [iteration, layer, batch, head, q, k]
        "step_logits": step_logits.float(),
        "logits": chosen.float(),  # [batch, pos, d_vocab]
        "exit_lambda": lam.float(),
        "exit_pdf": pdf.float(),
        "expected_exit_step": (torch.arange(1, steps + 1, dtype=torch.float64)[:, None, None] * pdf).sum(0).float(),
        "exit_iteration": exit_iteration,
    }

