"""A plain-torch Huginn (Raven) forward written from the published equations
(seal-rg/recurrent-pretraining `recpre/raven_modeling_minimal.py`: SandwichBlock, CausalSelfAttention,
GatedMLP, RMSNorm, apply_rotary_emb_complex_like, RavenForCausalLM.forward / iterate_forward /
core_block_forward / predict_from_latents), reading a saved folder's tensors by their published
names and nothing of Loupe's. The initial latent is an argument, so a test decides the draw.

Attention probabilities are kept for every (iteration, layer) in Loupe's flat numbering:
prelude layers 0..P-1, core layers P..P+R-1 (once per step), coda layers P+R..; the prelude and
the coda run once, and their single pattern stands at every iteration.
"""

import json
import math
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import load_file


@dataclass
class Reference:
    logits: torch.Tensor  # [batch, pos, d_vocab]
    patterns: torch.Tensor  # [iteration, layer, batch, head, query_pos, key_pos]
    exits: torch.Tensor  # [iteration, batch, pos, d_vocab]: each step's latent through ln_f, coda, ln_f, lm_head
    latents: torch.Tensor  # [iteration, batch, pos, d_model]: the latent after each step (before ln_f)


class PublishedHuginn:
    """The tensors and config of a folder in the published layout."""

    def __init__(self, folder: Path):
        self.config = json.loads((Path(folder) / "config.json").read_text())
        self.w = load_file(Path(folder) / "model.safetensors")
        c = self.config
        self.d = c["n_embd"]
        self.n_heads = c.get("n_heads") or c["num_attention_heads"]
        self.head_dim = self.d // self.n_heads
        self.eps = c["norm_eps"]
        self.n_prelude, self.n_core, self.n_coda = c["n_layers_in_prelude"], c["n_layers_in_recurrent_block"], c["n_layers_in_coda"]
        init = c.get("init_values") or {}
        self.embed_scale = init.get("embed_scale", math.sqrt(self.d))
        self.std = init.get("std", math.sqrt(2 / (5 * self.d)))
        head = "lm_head.weight" if not c.get("tie_embeddings", True) else "transformer.wte.weight"
        self.unembed = self.w[head]

    def draw_latent(self, shape: tuple[int, ...], generator: torch.Generator | None = None) -> torch.Tensor:
        """initialize_state: randn_like, then a ±3 std truncated normal in place, times the embedding scale."""
        x = torch.randn(shape, generator=generator)
        torch.nn.init.trunc_normal_(x, mean=0.0, std=self.std, a=-3 * self.std, b=3 * self.std, generator=generator)
        return x * self.embed_scale

    def rms(self, x: torch.Tensor, name: str) -> torch.Tensor:
        return (x.float() * torch.rsqrt(x.float().pow(2).mean(-1, keepdim=True) + self.eps)).type_as(x) * self.w[name]

    def freqs(self, n: int) -> torch.Tensor:
        """precompute_freqs_cis: [1, pos, 1, head_dim / 2, 2] (cos, sin)."""
        if "freqs_cis" in self.w:
            return self.w["freqs_cis"][:, :n]
        dim, theta = self.head_dim, float(self.config.get("rope_base", 50_000))
        inv = 1.0 / (theta ** (torch.arange(0, dim, 2, dtype=torch.float32) / dim))
        f = torch.outer(torch.arange(n, dtype=torch.float32), inv)
        return torch.stack([f.cos()[None, :, None, :], f.sin()[None, :, None, :]], dim=4)

    def attention(self, x: torch.Tensor, prefix: str, freqs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        B, S, E = x.shape
        q, k, v = (x @ self.w[f"{prefix}.Wqkv.weight"].T).split([E, E, E], dim=2)
        q, k, v = (t.view(B, S, self.n_heads, self.head_dim) for t in (q, k, v))
        if f"{prefix}.qk_bias" in self.w:
            q_bias, k_bias = self.w[f"{prefix}.qk_bias"].split(1, dim=0)
            q, k = q + q_bias, k + k_bias
        qk = torch.cat([q, k], dim=2).unflatten(-1, (-1, 2)).float()  # the complex-like rotation, both at once
        rotated = torch.stack(
            [qk[..., 0] * freqs[..., 0] - qk[..., 1] * freqs[..., 1], qk[..., 1] * freqs[..., 0] + qk[..., 0] * freqs[..., 1]], -1
        ).flatten(3)
        q, k = rotated.split(self.n_heads, dim=2)
        q, k, v = q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)
        scores = q @ k.transpose(-2, -1) / math.sqrt(self.head_dim)  # scaled_dot_product_attention's default scale
        future = torch.triu(torch.ones(S, S, dtype=torch.bool), diagonal=1)
        probs = torch.softmax(scores.masked_fill(future, float("-inf")), dim=-1)  # [batch, head, q, k]
        y = (probs @ v).transpose(1, 2).reshape(B, S, E)
        return y @ self.w[f"{prefix}.proj.weight"].T, probs

    def block(self, x: torch.Tensor, prefix: str, freqs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        attn_out, probs = self.attention(self.rms(x, f"{prefix}.norm_1.weight"), f"{prefix}.attn", freqs)
        x = self.rms(attn_out + x, f"{prefix}.norm_2.weight")
        gate, up = (self.rms(x, f"{prefix}.norm_3.weight") @ self.w[f"{prefix}.mlp.fc.weight"].T).chunk(2, dim=-1)
        mlp_out = (torch.nn.functional.silu(gate) * up) @ self.w[f"{prefix}.mlp.proj.weight"].T
        return self.rms(mlp_out + x, f"{prefix}.norm_4.weight"), probs

    def adapter(self, x: torch.Tensor, embeds: torch.Tensor) -> torch.Tensor:
        y = torch.cat([x, embeds], dim=-1) @ self.w["transformer.adapter.weight"].T
        return y + self.w["transformer.adapter.bias"] if "transformer.adapter.bias" in self.w else y

    def coda_readout(self, latent: torch.Tensor, freqs: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """predict_from_latents: ln_f, the coda, ln_f, lm_head."""
        x = self.rms(latent, "transformer.ln_f.weight")
        probs = []
        for i in range(self.n_coda):
            x, p = self.block(x, f"transformer.coda.{i}", freqs)
            probs.append(p)
        return self.rms(x, "transformer.ln_f.weight") @ self.unembed.T, probs

    @torch.no_grad()
    def forward(self, input_ids: torch.Tensor, latent: torch.Tensor, num_steps: int) -> Reference:
        """The published forward with `latent` as the initial state ([batch or 1, pos, d_model])."""
        freqs = self.freqs(input_ids.shape[1])
        embeds = self.w["transformer.wte.weight"][input_ids] * self.embed_scale
        prelude = []
        for i in range(self.n_prelude):
            embeds, p = self.block(embeds, f"transformer.prelude.{i}", freqs)
            prelude.append(p)
        x = latent.expand_as(embeds)
        core, latents, exits = [], [], []
        for _ in range(num_steps):
            x = self.adapter(x, embeds)
            step = []
            for j in range(self.n_core):
                x, p = self.block(x, f"transformer.core_block.{j}", freqs)
                step.append(p)
            core.append(step)
            latents.append(x)
            exits.append(self.coda_readout(x, freqs)[0])
        logits, coda = self.coda_readout(x, freqs)  # iterate_forward returns ln_f(x); the coda follows
        patterns = torch.stack([torch.stack(prelude + step + coda) for step in core])
        return Reference(logits=logits, patterns=patterns, exits=torch.stack(exits), latents=torch.stack(latents))
