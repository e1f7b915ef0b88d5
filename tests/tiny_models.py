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


def build_tiny_llama(path: Path, n_head: int = 4, n_kv_head: int = 2, seed: int = 0, tokenizer=None) -> Path:
    """A random-init 2-layer Llama with grouped-query attention (n_kv_head key/value heads shared
    by n_head query heads) and rotary positions, saved under `path` with `tokenizer` (default the
    byte-level BPE; sentencepiece_tokenizer() for a Llama 2-style one)."""
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
        max_position_embeddings=128,
        bos_token_id=0,
        eos_token_id=0,
    )
    return _save(path, LlamaForCausalLM(config), fast)
