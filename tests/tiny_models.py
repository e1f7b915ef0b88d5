"""Tiny seeded models for tests: built in-process in about a second, no network."""

from pathlib import Path

# Enough distinct words for a 300-token byte-level BPE vocabulary.
_CORPUS = [
    "The cat sat on the mat. The dog sat on the log.",
    "When Mary and John went to the store, John gave a drink to Mary.",
    "Attention heads copy tokens: induction heads find the earlier occurrence and attend to the next token.",
    "Harry Potter and the Philosopher's Stone; Harry Potter and the Chamber of Secrets.",
    "0 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 19 20",
    "a b c d e f g h i j k l m n o p q r s t u v w x y z",
    "<b>bold</b> & <i>italic</i> are not tags here; < and > are just characters.",
]


def _tokenizer():
    """A 300-token byte-level BPE trained on _CORPUS; BOS = EOS = UNK = id 0."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=300, special_tokens=["<|endoftext|>"], initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
    )
    tok.train_from_iterator(_CORPUS * 4, trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token="<|endoftext|>", eos_token="<|endoftext|>", unk_token="<|endoftext|>"
    )


def sentencepiece_tokenizer():
    """A 400-token SentencePiece-style BPE (Metaspace `▁` for spaces, byte fallback `<0xNN>` for
    what the vocabulary lacks), as Llama 2 and Mistral tokenize; BOS `<s>` = id 1, prepended."""
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(unk_token="<unk>", byte_fallback=True))
    tok.normalizer = normalizers.Sequence([normalizers.Prepend("▁"), normalizers.Replace(" ", "▁")])
    tok.pre_tokenizer = pre_tokenizers.Split("▁", "merged_with_next")
    tok.decoder = decoders.Sequence(
        [decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse(), decoders.Strip(" ", 1, 0)]
    )
    bytes_ = [f"<0x{b:02X}>" for b in range(256)]
    trainer = trainers.BpeTrainer(vocab_size=400, special_tokens=["<unk>", "<s>", "</s>", *bytes_])
    tok.train_from_iterator(_CORPUS * 4, trainer)
    tok.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", tok.token_to_id("<s>"))])
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>", unk_token="<unk>")


def _save(path: Path, model, tokenizer) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


def build_tiny_gpt2(path: Path, n_layer: int = 2, n_head: int = 4, n_ctx: int = 128, seed: int = 0) -> Path:
    """A random-init GPT-2 (64-dim, seeded) with a 300-token BPE tokenizer, saved under `path`.
    Returns `path`; loadable by transformers and so by Loupe as `local/<path.name>`."""
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel

    fast = _tokenizer()
    torch.manual_seed(seed)
    config = GPT2Config(
        vocab_size=len(fast), n_positions=n_ctx, n_embd=64, n_layer=n_layer, n_head=n_head, bos_token_id=0, eos_token_id=0
    )
    return _save(path, GPT2LMHeadModel(config), fast)


def build_tiny_llama(
    path: Path, n_head: int = 4, n_kv_head: int = 2, seed: int = 0, tokenizer=None, n_ctx: int = 128, sharpen: float = 1.0
) -> Path:
    """A random-init 2-layer Llama with grouped-query attention (n_kv_head key/value heads shared
    by n_head query heads) and rotary positions over `n_ctx` positions, saved under `path` with
    `tokenizer` (default the byte-level BPE; sentencepiece_tokenizer() for a Llama 2-style one).
    `sharpen` scales its queries and keys, so attention is peaked rather than near uniform."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    fast = tokenizer if tokenizer is not None else _tokenizer()
    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=len(fast),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=n_head,
        num_key_value_heads=n_kv_head,
        max_position_embeddings=n_ctx,
        bos_token_id=0,
        eos_token_id=0,
    )
    model = LlamaForCausalLM(config)
    with torch.no_grad():
        for layer in model.model.layers:
            layer.self_attn.q_proj.weight *= sharpen
            layer.self_attn.k_proj.weight *= sharpen
    return _save(path, model, fast)


def _sharpened_gpt2(config, seed: int):
    """A seeded random GPT-2 whose queries and keys are scaled up, so its attention patterns are
    peaked (random init attends almost uniformly, and every checkpoint would score alike)."""
    import torch
    from transformers import GPT2LMHeadModel

    torch.manual_seed(seed)
    model = GPT2LMHeadModel(config)
    with torch.no_grad():
        for block in model.transformer.h:
            block.attn.c_attn.weight[:, : 2 * config.n_embd] *= 4.0  # Conv1D [n_embd, 3 * n_embd]: q, k, v
    return model


def build_tiny_checkpointed(path: Path, steps=(0, 100, 1000), half=(100,), train_loss=True) -> Path:
    """A tiny GPT-2 folder with training checkpoints: the final weights (seed 0) at the top and
    `checkpoints/<step>/model.safetensors` of other seeded weights (fp16 for steps in `half`), and,
    with `train_loss`, `checkpoints/trajectory.json` recording a loss per step."""
    import json
    import shutil
    import tempfile

    from transformers import GPT2Config

    fast = _tokenizer()
    config = GPT2Config(vocab_size=len(fast), n_positions=128, n_embd=64, n_layer=2, n_head=4, bos_token_id=0, eos_token_id=0)
    _save(path, _sharpened_gpt2(config, seed=0), fast)
    for i, step in enumerate(steps):
        model = _sharpened_gpt2(config, seed=10 + i)
        if step in half:
            model = model.half()
        with tempfile.TemporaryDirectory() as tmp:
            model.save_pretrained(tmp)
            (path / "checkpoints" / str(step)).mkdir(parents=True)
            shutil.move(Path(tmp) / "model.safetensors", path / "checkpoints" / str(step) / "model.safetensors")
    if train_loss:
        records = [{"step": step, "train_loss": 6.0 - i} for i, step in enumerate(steps)]
        (path / "checkpoints" / "trajectory.json").write_text(json.dumps(records))
    return path
