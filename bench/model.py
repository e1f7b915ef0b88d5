"""The benchmark models: a random-init GPT-2-small-shaped HF dir, Llama-shaped (RoPE) ones for the
long-context rows, and prompts of exactly T tokens.

Compute cost depends on the shapes, not on trained weights: 12 layers x 12 heads, d_model 768,
n_positions 1024 and a 50257-token vocabulary (the unembedding is a third of the FLOPs at T=1024).
The tokenizer is a byte-level BPE trained in-process to a few hundred merges, its vocabulary padded
with unreachable entries to 50257 so that `len(tokenizer) == vocab_size`.

How well patterns compress does depend on the weights: a default init (std 0.02) gives almost
exactly uniform attention, which compresses unrealistically well. So each head's query and key
weights are scaled by its own factor (log-uniform in [1, 5]): heads then range from near-uniform
to near-one-hot, as in a trained model. The FLOPs are unchanged.

The Llama-shaped models (issue 14) share the tokenizer and the sharpening: LLAMA has GPT-2 small's
size (12 x 12 heads of 64, d_model 768, MLP 3072, the same vocabulary) with 8,192 positions;
SMALL_LLAMA (4 layers x 8 heads, d_model 256) has 32,768. Its vocabulary is padded to 8,192 only,
so that the logits at T = 32,768 (1 GiB in float32, 6.6 GiB at 50,257) do not swamp the attention
both sides of its rows measure.
"""

import json
import random
from dataclasses import dataclass
from pathlib import Path

N_LAYER, N_HEAD, D_MODEL, N_CTX, VOCAB = 12, 12, 768, 1024, 50257
MODEL_NAME = "gpt2small"  # the folder under LOUPE_MODEL_DIRS, so Loupe's id is `local/gpt2small`
MODEL_ID = f"local/{MODEL_NAME}"

_WORDS = (
    "the of and to a in is was that for on as with by he she it his her at from which but be are "
    "this had not have or an they were one all their there been has when who will more no if out so "
    "said what up its about into than them can only other new some could time these two may then do "
    "first any my now such like our over man me even most made after also did many before must "
    "through back years where much your way well down should because each just those people mary "
    "john harry potter store drink gave went cat dog mat log sat attention head token induction "
    "copy earlier occurrence next model layer query key value pattern residual stream loop iteration "
    "previous duplicate random sequence repeated twice heatmap permalink cache blob compress slice"
).split()


def _word_stream(seed: int):
    """An endless stream of words, Zipf-weighted so that frequent words become single tokens."""
    rng = random.Random(seed)
    weights = [1.0 / (rank + 1) for rank in range(len(_WORDS))]
    while True:
        yield from rng.choices(_WORDS, weights, k=256)


def build_tokenizer(merges: int = 400, vocab_size: int = VOCAB):
    """A byte-level BPE (`merges` learned merges) whose vocabulary is padded to vocab_size entries."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    stream = _word_stream(seed=1)
    corpus = [" ".join(next(stream) for _ in range(64)) for _ in range(400)]
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    alphabet = pre_tokenizers.ByteLevel.alphabet()
    trainer = trainers.BpeTrainer(
        vocab_size=1 + len(alphabet) + merges, special_tokens=["<|endoftext|>"], initial_alphabet=alphabet, show_progress=False,
    )
    tok.train_from_iterator(corpus, trainer)
    spec = json.loads(tok.to_str())
    vocab = spec["model"]["vocab"]
    for index in range(len(vocab), vocab_size):  # never produced by a merge: only pads the id space
        vocab[f"<|pad{index}|>"] = index
    tok = Tokenizer.from_str(json.dumps(spec))
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token="<|endoftext|>", eos_token="<|endoftext|>", unk_token="<|endoftext|>"
    )
    assert len(fast) == vocab_size, len(fast)
    return fast


def build_model_dir(root: Path, seed: int = 0) -> Path:
    """Save the benchmark model and tokenizer as an HF dir `root/MODEL_NAME`; returns that dir."""
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel

    path = root / MODEL_NAME
    tokenizer = build_tokenizer()
    torch.manual_seed(seed)
    config = GPT2Config(
        vocab_size=VOCAB, n_positions=N_CTX, n_embd=D_MODEL, n_layer=N_LAYER, n_head=N_HEAD, bos_token_id=0, eos_token_id=0
    )
    model = GPT2LMHeadModel(config).eval()
    generator = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for block in model.transformer.h:
            per_column = head_scales(N_HEAD, D_MODEL // N_HEAD, generator)  # [d_model]
            weight, bias = block.attn.c_attn.weight, block.attn.c_attn.bias  # [d_model, 3*d_model]: q | k | v
            weight[:, : 2 * D_MODEL] *= per_column.repeat(2)
            bias[: 2 * D_MODEL] *= per_column.repeat(2)
    return _save(path, model, tokenizer, "benchmark: random-init GPT-2-small shape")


def head_scales(n_head: int, d_head: int, generator):
    """[n_head * d_head]: each head's own factor (log-uniform in [1, 5]) repeated over the d_head
    query (key) dimensions it owns, h*d_head..(h+1)*d_head. Scaling a head's queries and keys by it
    sharpens its pattern by its square, from near-uniform to near-one-hot."""
    import torch

    scale = torch.exp(torch.rand(n_head, generator=generator) * torch.log(torch.tensor(5.0)))  # [head]
    return scale.repeat_interleave(d_head)  # [head * d_head]


def _save(path: Path, model, tokenizer, description: str) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    (path / "loupe.json").write_text(json.dumps({"description": description}))
    return path


@dataclass(frozen=True)
class LlamaShape:
    name: str  # the folder under LOUPE_MODEL_DIRS; Loupe's id is `local/<name>`
    n_layers: int
    d_model: int
    n_heads: int
    d_mlp: int
    n_ctx: int
    vocab: int

    @property
    def id(self) -> str:
        return f"local/{self.name}"


LLAMA = LlamaShape("llama-gpt2small", N_LAYER, D_MODEL, N_HEAD, 4 * D_MODEL, 8192, VOCAB)
SMALL_LLAMA = LlamaShape("llama-small", 4, 256, 8, 1024, 32768, 8192)


def build_llama_dir(root: Path, shape: LlamaShape, seed: int = 0) -> Path:
    """Save a random-init float32 LlamaForCausalLM of `shape` (RoPE, one key/value head per query
    head, Q and K sharpened per head as the GPT-2 model's) and its tokenizer as `root/shape.name`."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    tokenizer = build_tokenizer(vocab_size=shape.vocab)
    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=shape.vocab, hidden_size=shape.d_model, intermediate_size=shape.d_mlp, num_hidden_layers=shape.n_layers,
        num_attention_heads=shape.n_heads, num_key_value_heads=shape.n_heads, max_position_embeddings=shape.n_ctx,
        bos_token_id=0, eos_token_id=0, tie_word_embeddings=False,
    )  # fmt: skip
    model = LlamaForCausalLM(config).eval()
    generator = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for layer in model.model.layers:
            per_row = head_scales(shape.n_heads, shape.d_model // shape.n_heads, generator)[:, None]  # [d_model, 1]
            layer.self_attn.q_proj.weight *= per_row  # [head * d_head, d_model]
            layer.self_attn.k_proj.weight *= per_row
    return _save(root / shape.name, model, tokenizer, f"benchmark: random-init Llama, {shape.n_layers} x {shape.n_heads} heads, d_model {shape.d_model}")


@dataclass(frozen=True)
class Prompt:
    text: str
    n_tokens: int  # with the BOS that Loupe prepends


def prompt(tokenizer, n_tokens: int, seed: int = 0) -> Prompt:
    """A text that tokenizes to exactly n_tokens - 1 tokens (n_tokens with BOS). Words are added
    whole (the byte-level pre-tokenizer splits at spaces, so counts add up); a word that would
    overshoot is skipped for a shorter one."""
    target = n_tokens - 1
    words, count = [], 0
    lengths: dict[str, int] = {}
    for word in _word_stream(seed=1000 + seed):
        if count == target:
            break
        if word not in lengths:
            lengths[word] = len(tokenizer.encode(" " + word, add_special_tokens=False))
        if count + lengths[word] <= target:
            words.append(word)
            count += lengths[word]
    text = "".join(" " + word for word in words)
    assert len(tokenizer.encode(text, add_special_tokens=False)) == target
    return Prompt(text, n_tokens)
