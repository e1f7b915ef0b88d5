"""`attention` on a real tiny GPT-2: equal to the model's own (HF eager) attention probabilities."""

import pytest
import torch
from transformers import AutoModelForCausalLM

from loupe.analyses.attention import attention, head_stats
from loupe.analyses.registry import Inputs
from loupe.codec import decode_pattern
from loupe.errors import InvalidInput, TooLong

TEXT = "An induction head attends to the token after the previous occurrence of the current token."


@pytest.fixture(scope="module")
def hf_attentions(tiny_model):
    """HF's own probabilities: [layer, head, query_pos, key_pos] with eager attention."""
    hf = AutoModelForCausalLM.from_pretrained(tiny_model.entry.location, attn_implementation="eager").eval()
    tokens = tiny_model.tokenize(TEXT, 1024)
    with torch.no_grad():
        out = hf(tokens, output_attentions=True)
    return torch.stack(out.attentions)[:, 0]


def _run(model, text, max_tokens=1024):
    with model.lock:
        return attention(model, attention.__annotations__["params"](), Inputs(text=text, max_tokens=max_tokens))


def _stored(output) -> dict[tuple[int, int, int], torch.Tensor]:
    """(iteration, layer, head) -> the pattern as stored and served."""
    return {
        (b.iteration, b.layer, b.head): torch.from_numpy(decode_pattern(b.codec, b.data, b.shape))
        for b in output.patterns.slices()
        if b.name == "pattern"
    }


def test_stored_patterns_equal_hf_eager_attention(tiny_model, hf_attentions):
    stored = _stored(_run(tiny_model, TEXT))
    assert set(stored) == {(0, layer, head) for layer in range(2) for head in range(4)}
    for (_, layer, head), pattern in stored.items():
        assert pattern.shape == hf_attentions.shape[-2:]
        assert (pattern - hf_attentions[layer, head]).abs().max().item() <= 1e-5  # 16-bit grid: 7.7e-6


def test_stats_equal_the_formulas_on_hf_attention(tiny_model, hf_attentions):
    stats = _run(tiny_model, TEXT).result.head_stats
    for name, expected in head_stats(hf_attentions).items():  # [layer, head]
        assert torch.tensor(stats[name][0]) == pytest.approx(expected, abs=2e-4), name


def test_summary_has_tokens_with_bos_and_stats(tiny_model):
    result = _run(tiny_model, "The quick brown fox").result
    assert result.tokens[0] == "<|endoftext|>"  # BOS prepended, as GPT-2 expects
    assert "".join(result.tokens[1:]) == "The quick brown fox"
    assert len(result.tokens) == len(result.token_ids)
    assert set(result.head_stats) == {"bos", "previous_token", "self", "entropy"}
    assert len(result.head_stats["bos"]) == 1 and len(result.head_stats["bos"][0]) == 2
    assert len(result.head_stats["bos"][0][0]) == 4


def test_too_long_and_empty_text_are_rejected(tiny_model):
    with pytest.raises(TooLong):
        _run(tiny_model, "fox " * 200)  # over the 128-token context
    with pytest.raises(TooLong):
        _run(tiny_model, "The quick brown fox jumps", max_tokens=3)
    with pytest.raises(InvalidInput):
        _run(tiny_model, "   ")


def test_head_stats_on_known_patterns():
    T = 6
    previous = torch.zeros(1, T, T)
    previous[0, 0, 0] = 1
    previous[0, torch.arange(1, T), torch.arange(0, T - 1)] = 1  # each query attends to q-1
    stats = head_stats(previous)
    assert stats["previous_token"].item() == pytest.approx(1.0)
    assert stats["bos"].item() == pytest.approx(1 / (T - 1))  # only query 1's previous token is BOS
    assert stats["entropy"].item() == pytest.approx(0.0)
    uniform = torch.tril(torch.ones(1, T, T))
    uniform = uniform / uniform.sum(-1, keepdim=True)
    assert head_stats(uniform)["entropy"].item() == pytest.approx(1.0, abs=1e-5)


def test_the_first_token_stat_says_bos_only_when_the_text_starts_with_it(tiny_model):
    """Families such as Qwen prepend no BOS: the stat then measures attention to the first word."""
    import torch

    from loupe.analyses.attention import first_token_names

    text = "The cat sat on the mat."
    labels, _ = first_token_names(tiny_model, tiny_model.tokenize(text, 64))  # BOS prepended
    assert labels["bos"] == "First token (BOS)"
    words = torch.tensor([tiny_model.tokenizer(text, add_special_tokens=False)["input_ids"]])  # [1, pos], no BOS
    labels, descriptions = first_token_names(tiny_model, words)
    assert labels["bos"] == "First token" and "'The'" in descriptions["bos"] and "no BOS" in descriptions["bos"]
