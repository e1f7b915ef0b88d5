"""The benchmark's own references: the long-context rows compare Loupe against them, so they must be right."""

import dataclasses

import pytest
import torch

from bench.eager import eager_patterns
from bench.model import LlamaShape, build_llama_dir, prompt
from bench.rows import Row, from_dict, pending

TINY = LlamaShape("tiny-llama", n_layers=3, d_model=64, n_heads=4, d_mlp=128, n_ctx=96, vocab=1024)


@pytest.fixture(scope="module")
def tiny_llama(tmp_path_factory):
    return build_llama_dir(tmp_path_factory.mktemp("models"), TINY)


def test_chunked_eager_reference_is_hf_eager(tiny_llama):
    """Query rows in blocks of 7 (not dividing T) give exactly the weights of an eager forward."""
    from transformers import AutoModelForCausalLM

    tokens = torch.randint(1, 600, (1, 61), generator=torch.Generator().manual_seed(0))
    wanted = [(0, 1), (2, 3), (2, 0)]
    reference = eager_patterns(tiny_llama, tokens, wanted, chunk=7)
    eager = AutoModelForCausalLM.from_pretrained(tiny_llama, attn_implementation="eager").eval()
    with torch.inference_mode():
        attentions = eager(tokens, use_cache=False, output_attentions=True).attentions  # layer -> [1, head, q, k]
    for layer, head in wanted:
        torch.testing.assert_close(reference[layer, head], attentions[layer][0, head], rtol=0, atol=1e-7)
    assert float(reference[2, 3].triu(1).abs().max()) == 0.0  # causal


def test_llama_prompt_has_exactly_t_tokens(tiny_llama):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_llama)
    assert len(tokenizer) == TINY.vocab
    for n_tokens in (2, 17, 90):
        text = prompt(tokenizer, n_tokens, seed=n_tokens).text
        assert len(tokenizer.encode(text, add_special_tokens=False)) == n_tokens - 1  # + BOS


def test_provider_rows_round_trip():
    """A provider's rows as dicts (dataclasses.asdict) come back with their target and verdict."""
    rows = [
        Row("a", 2.0, 1.0, "s", 1.3),
        Row("b", 50.0, 2.0, "ms", 300.0, "value"),
        Row("c", 1.0, None, "s", None),
        pending("d", "s", 1.3, "ratio", "not landed"),
    ]
    back = [from_dict(dataclasses.asdict(row)) for row in rows]
    assert [(r.target, r.ok, r.ratio, r.note) for r in back] == [(r.target, r.ok, r.ratio, r.note) for r in rows]
    assert [r.ok for r in back] == [False, True, None, None]
