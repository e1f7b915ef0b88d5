"""Encoders (tests/encoders.py: BERT and RoBERTa, base and MLM): they load through Loupe's model
store, every layer's and head's whole attention matrix equals HF eager attention within 1e-4 on
both capture paths, and what assumes a causal model is refused, adapted or marked."""

import pytest
import torch
import transformers

from loupe.analyses.attention import head_stats
from loupe.analyses.head_scores import ENCODER_INDUCTION, HeadScoreParams, head_scores
from loupe.analyses.registry import Inputs
from loupe.analyses.scores import SCORE_FORMULAS, score_heads
from loupe.capture import capture_patterns, runs_natively
from loupe.config import Settings
from loupe.loops import capture_residuals, readout
from loupe.model_store import ModelStore

from .encoders import ENCODERS, NOT_SUPPORTED, build_all

TEXT = "The cat sat on the mat. The dog sat on the log."
TOLERANCE = 1e-4


@pytest.fixture(scope="module")
def encoder_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("encoders")
    build_all(root)
    return root


@pytest.fixture(scope="module")
def store(encoder_dir, tmp_path_factory):
    return ModelStore(Settings(model_dirs=[encoder_dir], zoo_dir=tmp_path_factory.mktemp("zoo")))


def _hf(encoder_dir, encoder) -> torch.nn.Module:
    """The saved model as its own class (base: without any head), eager attention."""
    cls = getattr(transformers, encoder.hf_class)
    return cls.from_pretrained(encoder_dir / encoder.name, attn_implementation="eager").float().eval()


def test_the_bridge_supports_bert_and_roberta_and_no_other_encoder():
    """What tests/encoders.py covers is what the bridge supports: a new TransformerLens that adds an
    encoder fails here until it is added there."""
    from transformer_lens.factories.architecture_adapter_factory import SUPPORTED_ARCHITECTURES

    built = {encoder.hf_class for encoder in ENCODERS if encoder.has_mlm_head}
    assert built <= set(SUPPORTED_ARCHITECTURES)
    masked = {name for name in SUPPORTED_ARCHITECTURES if name.endswith("ForMaskedLM")}
    assert masked == built
    assert not set(NOT_SUPPORTED) & set(SUPPORTED_ARCHITECTURES)


@pytest.mark.parametrize("encoder", ENCODERS, ids=lambda e: e.name)
def test_capabilities_are_read_from_the_files(store, encoder):
    capabilities = store.entry(f"local/{encoder.name}").capabilities
    assert "encoder" in capabilities and "attention" in capabilities and "tokenizer" in capabilities
    assert "generating_lm" not in capabilities and "causal_lm" not in capabilities
    assert ("unembedding" in capabilities) == encoder.has_mlm_head


@pytest.mark.parametrize("encoder", ENCODERS, ids=lambda e: e.name)
@pytest.mark.parametrize("native", [True, False], ids=["fast", "bridge_hooks"])
def test_every_pattern_equals_hf_eager_as_a_whole_matrix(store, encoder_dir, encoder, native):
    model = store.get(f"local/{encoder.name}")
    assert runs_natively(model)  # allow-listed: the default path is the fast one, checked here
    tokens = model.tokenize(TEXT, 128)  # [1, pos]
    logits, pattern = capture_patterns(model, tokens, native=native)  # pattern: [1, layer, 1, head, q, k]
    with torch.no_grad():
        expected = torch.stack(_hf(encoder_dir, encoder)(tokens, output_attentions=True).attentions)  # [layer, 1, head, q, k]
    assert pattern.shape[1:] == expected.shape == (2, 1, 4, tokens.shape[1], tokens.shape[1])
    assert (pattern[0] - expected).abs().max() < TOLERANCE
    above = torch.ones(tokens.shape[1], tokens.shape[1]).triu(1).bool()
    assert (pattern[0][..., above] > 1e-3).float().mean() > 0.5  # no causal mask: most entries above the diagonal count
    assert (pattern.sum(-1) - 1).abs().max() < 1e-5


@pytest.mark.parametrize("encoder", [e for e in ENCODERS if e.has_mlm_head], ids=lambda e: e.name)
def test_the_logit_lens_reads_out_through_the_whole_mlm_head(store, encoder_dir, encoder):
    """At the last layer the readout is the model's own MLM logits (dense, activation, norm, decoder)."""
    model = store.get(f"local/{encoder.name}")
    tokens = model.tokenize(TEXT, 128)
    _, resid = capture_residuals(model, tokens, torch.arange(tokens.shape[1]))  # [1, layer, 1, pos, d_model]
    with torch.no_grad():
        expected = _hf(encoder_dir, encoder)(tokens).logits[0]  # [pos, d_vocab]
    assert (readout(model, resid[0, -1, 0]) - expected).abs().max() < TOLERANCE


@pytest.mark.parametrize("encoder", ENCODERS, ids=lambda e: e.name)
def test_text_is_tokenized_with_the_encoders_own_special_tokens(store, encoder):
    model = store.get(f"local/{encoder.name}")
    tokens = model.tokenize("the cat sat", 128)[0].tolist()
    tokenizer = model.tokenizer
    assert tokens[0] == tokenizer.cls_token_id and tokens[-1] == tokenizer.sep_token_id
    assert tokens == tokenizer("the cat sat")["input_ids"]


@pytest.mark.parametrize("encoder", [ENCODERS[0], ENCODERS[3]], ids=lambda e: e.name)
def test_head_scores_on_an_encoder_equal_scores_of_hf_eager_patterns_and_mark_induction(store, encoder_dir, encoder):
    model = store.get(f"local/{encoder.name}")
    params = HeadScoreParams(seq_len=8, batch=3)
    output = head_scores(model, params, Inputs())
    result = output.result
    tokens = torch.tensor(result.token_ids)
    assert int(tokens[0]) == model.tokenizer.cls_token_id and result.token_ids[1:9] == result.token_ids[9:]
    assert result.formulas["induction"] == SCORE_FORMULAS["induction"] + ENCODER_INDUCTION
    assert "not the causal induction mechanism" in result.formulas["induction"]
    assert result.formulas["previous_token"] == SCORE_FORMULAS["previous_token"]
    assert result.formulas["duplicate_token"] == SCORE_FORMULAS["duplicate_token"]
    from loupe.analyses.scores import repeated_random_tokens
    from loupe.analyses.head_scores import _bos_id, _candidate_vocab

    batch = repeated_random_tokens(_candidate_vocab(model), 3, 8, _bos_id(model), 0)
    with torch.no_grad():
        patterns = torch.stack(_hf(encoder_dir, encoder)(batch, output_attentions=True).attentions)  # [layer, batch, head, q, k]
    expected = score_heads(patterns, 8)  # each [layer, head]
    for name, values in expected.items():
        assert (torch.tensor(result.scores[name][0]) - values).abs().max() < TOLERANCE, name


def test_entropy_of_an_encoder_is_normalised_by_all_keys():
    uniform = torch.full((1, 5, 5), 0.2)  # [head, q, k]: every query over all 5 keys
    assert torch.allclose(head_stats(uniform, bidirectional=True)["entropy"], torch.ones(1))
    causal = torch.tril(torch.ones(5, 5))
    causal = (causal / causal.sum(-1, keepdim=True))[None]  # uniform over the visible keys
    assert torch.allclose(head_stats(causal)["entropy"], torch.ones(1))
    assert head_stats(uniform)["entropy"] > 1.0  # a causal normalisation would overstate a full matrix


@pytest.mark.parametrize("encoder", ENCODERS, ids=lambda e: e.name)
def test_the_kept_path_recomputes_whole_encoder_patterns(store, encoder_dir, encoder):
    """A long prompt's kept queries and keys on an encoder: no mask, every query sees every key;
    recomputed heads and streamed stats (entropy over log T) equal HF eager's."""
    from .kept import keep, recomputed

    model = store.get(f"local/{encoder.name}")
    tokens = model.tokenize(TEXT, 128)  # [1, pos]
    kept, stats = keep(model, tokens, bidirectional=True)
    with torch.no_grad():
        expected = _hf(encoder_dir, encoder)(tokens, output_attentions=True).attentions  # [1, head, q, k] per layer
    streamed = stats.stacked(model.n_layers)
    for layer, want in enumerate(expected):
        assert (recomputed(kept, 0, layer) - want[0]).abs().max() < TOLERANCE
        for stat, values in head_stats(want[0], bidirectional=True).items():
            assert (streamed[stat][0, layer] - values).abs().max() < TOLERANCE
