"""Tiny seeded encoders for tests: every BERT-family architecture that TransformerLens' bridge
supports and the installed transformers provides (BERT, RoBERTa), each as the bare base model
(`BertModel`, saved without an MLM head, as sentence-transformers ships MiniLM) and with its MLM
head (`BertForMaskedLM`), with the tokenizer its family uses (WordPiece `[CLS] … [SEP]` for BERT,
byte-level BPE `<s> … </s>` for RoBERTa). Loupe loads each as `local/<name>`.

DistilBERT, ELECTRA and ModernBERT (the encoder) are not in TransformerLens 4.3's supported list:
`not_supported()` checks that this is still so, so the list here grows when the bridge's does.
"""

from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

from .architectures import SHARPEN
from .tiny_models import _CORPUS, _save

SEED = 0
SIZES = dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, intermediate_size=128, max_position_embeddings=128)
# Encoders HF provides that the bridge does not (checked by the tests, so a new TL version shows up).
NOT_SUPPORTED = ("DistilBertForMaskedLM", "ElectraForMaskedLM", "ModernBertForMaskedLM")


@dataclass(frozen=True)
class Encoder:
    """A tiny encoder: `hf_class` (the base model or the MLM one) of one family."""

    name: str
    family: str  # "bert" | "roberta"
    hf_class: str

    @property
    def has_mlm_head(self) -> bool:
        return self.hf_class.endswith("ForMaskedLM")


ENCODERS = [
    Encoder("bert_base", "bert", "BertModel"),
    Encoder("bert_mlm", "bert", "BertForMaskedLM"),
    Encoder("roberta_base", "roberta", "RobertaModel"),
    Encoder("roberta_mlm", "roberta", "RobertaForMaskedLM"),
]
BY_NAME = {encoder.name: encoder for encoder in ENCODERS}


@lru_cache(maxsize=2)
def tokenizer(family: str) -> Any:
    """The family's tokenizer, trained on the shared corpus: BERT's WordPiece ([PAD] 0, [UNK] 1,
    [CLS] 2, [SEP] 3, [MASK] 4; `[CLS] text [SEP]`), RoBERTa's byte-level BPE (<s> 0, <pad> 1,
    </s> 2, <unk> 3, <mask> 4; `<s> text </s>`)."""
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    if family == "bert":
        specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
        tok = Tokenizer(models.WordPiece(unk_token="[UNK]"))
        tok.normalizer = normalizers.BertNormalizer(lowercase=True)
        tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
        tok.decoder = decoders.WordPiece()
        tok.train_from_iterator(_CORPUS * 4, trainers.WordPieceTrainer(vocab_size=300, special_tokens=specials))
        tok.post_processor = processors.TemplateProcessing(
            single="[CLS] $A [SEP]", special_tokens=[("[CLS]", 2), ("[SEP]", 3)]
        )
        names = dict(pad_token="[PAD]", unk_token="[UNK]", cls_token="[CLS]", sep_token="[SEP]", mask_token="[MASK]")
        return PreTrainedTokenizerFast(tokenizer_object=tok, **names)
    specials = ["<s>", "<pad>", "</s>", "<unk>", "<mask>"]
    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=300, special_tokens=specials, initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(_CORPUS * 4, trainer)
    tok.post_processor = processors.RobertaProcessing(("</s>", 2), ("<s>", 0))
    names = dict(bos_token="<s>", eos_token="</s>", pad_token="<pad>", unk_token="<unk>", cls_token="<s>", sep_token="</s>", mask_token="<mask>")
    return PreTrainedTokenizerFast(tokenizer_object=tok, **names)


def _config(encoder: Encoder) -> Any:
    import transformers

    fast = tokenizer(encoder.family)
    config_class = getattr(transformers, encoder.hf_class).config_class
    ids = dict(pad_token_id=fast.pad_token_id, bos_token_id=fast.cls_token_id, eos_token_id=fast.sep_token_id)
    # RoBERTa's positions start after its padding index, so its table holds 2 more rows.
    extra = 2 if encoder.family == "roberta" else 0
    return config_class(
        vocab_size=len(fast), **{**SIZES, "max_position_embeddings": SIZES["max_position_embeddings"] + extra}, **ids
    )


def build_model(encoder: Encoder) -> Any:
    """The seeded random-init HF model, float32, eval mode, query/key weights sharpened x SHARPEN
    (at the default init every score is ~0 and each pattern ~uniform)."""
    import torch
    import transformers

    config = _config(encoder)
    torch.manual_seed(SEED)
    model = getattr(transformers, encoder.hf_class)(config).float().eval()
    with torch.no_grad():
        for name, param in model.named_parameters():
            if name.endswith(("attention.self.query.weight", "attention.self.key.weight")):
                param.mul_(SHARPEN)
    return model


def build_encoder(name: str, root: Path) -> Path:
    """Save encoder `name` with its family's tokenizer under root/name (Loupe: `local/<name>`)."""
    encoder = BY_NAME[name]
    return _save(Path(root) / name, build_model(encoder), tokenizer(encoder.family))


def build_all(root: Path) -> dict[str, Path]:
    return {encoder.name: build_encoder(encoder.name, root) for encoder in ENCODERS}
