"""`head_metrics` on tiny real models: its means equal `attention` run per text and averaged, its
induction score and top-k examples equal a plain-torch computation on captured patterns."""

import math

import pytest
import torch

from loupe.analyses.attention import AttentionParams, attention, head_stats, position_stats
from loupe.analyses.head_metrics import CORPUS, METRICS, WINDOW, HeadMetricParams, corpus_texts, head_metrics
from loupe.analyses.registry import Inputs
from loupe.capture import capture_patterns
from loupe.errors import InvalidInput, TooLong
from loupe.loops import LoopSpec

TEXTS = [
    "The cat sat on the mat. The cat sat on the mat.",
    "abc abc abc",
    "One two three four five.",
    "x",
    "to be or not to be, that is the question",
    "Mississippi: aa bb aa bb",  # immediate repeats: k = q is no target
]


def _run(model, **params):
    with model.lock:
        return head_metrics(model, HeadMetricParams(**params), Inputs(max_tokens=1024)).result


def _attention_mean(model, texts, loop=None) -> dict[str, torch.Tensor]:
    """metric -> [iteration, layer, head]: `attention`'s head_stats per text, averaged over the texts."""
    stats = []
    for text in texts:
        with model.lock:
            result = attention(model, AttentionParams(loop=loop), Inputs(text=text)).result
        stats.append({name: torch.tensor(value) for name, value in result.head_stats.items()})
    return {name: torch.stack([s[name] for s in stats]).mean(0) for name in stats[0]}


def _per_query(model, text, loop=None) -> dict[str, torch.Tensor]:
    """metric -> [iteration, layer, head, query_pos]: each query's value in plain torch, NaN where it is
    not defined (query 0, previous token before 2, induction without an earlier occurrence)."""
    tokens = model.tokenize(text, 1024)  # [1, pos]
    _, pattern = capture_patterns(model, tokens, loop)
    pattern = pattern[:, :, 0].double()  # [iteration, layer, head, query_pos, key_pos]
    ids = tokens[0].tolist()
    n = len(ids)
    out = {name: torch.full(pattern.shape[:-1], math.nan, dtype=torch.float64) for name in METRICS}
    for q in range(1, n):
        row = pattern[..., q, :]  # [iteration, layer, head, key_pos]
        out["bos"][..., q] = row[..., 0]
        out["self"][..., q] = row[..., q]
        if q >= 2:
            out["previous_token"][..., q] = row[..., q - 1]
        plogp = torch.where(row > 0, row * row.log(), torch.zeros_like(row))
        out["entropy"][..., q] = -plogp.sum(-1) / math.log(q + 1)
        after = sorted({j + 1 for j in range(1, q - 1) if ids[j] == ids[q]})
        if after:
            out["induction"][..., q] = row[..., after].sum(-1)
    return out


def test_means_equal_attention_per_text_averaged(tiny_model):
    result = _run(tiny_model, corpus="texts", texts=TEXTS, max_tokens=64)
    expected = _attention_mean(tiny_model, TEXTS)
    for name in ("bos", "previous_token", "self", "entropy"):
        assert torch.tensor(result.metrics[name]) == pytest.approx(expected[name], abs=2e-4), name
    assert result.n_tokens == sum(tiny_model.tokenize(t, 1024).shape[-1] for t in TEXTS)


def test_induction_equals_plain_torch_on_captured_patterns(tiny_model):
    result = _run(tiny_model, corpus="texts", texts=TEXTS, max_tokens=64)
    per_text = [_per_query(tiny_model, text)["induction"] for text in TEXTS]
    means = [values.nanmean(-1) for values in per_text if not values.isnan().all()]  # texts with a repeat
    assert result.n_induction_texts == len(means) == len(TEXTS) - 1  # "x" repeats no token
    expected = torch.stack(means).mean(0)
    assert torch.tensor(result.metrics["induction"], dtype=torch.float64) == pytest.approx(expected, abs=1e-4)
    assert expected.max() > 0.05  # the score measures something on these texts


def _check_examples(model, result, texts, loop=None, k=3):
    per_text = [_per_query(model, text, loop) for text in texts]
    tokens = [model.str_tokens(model.tokenize(text, 1024)[0]) for text in texts]
    n_iterations = result.n_iterations
    for name in METRICS:
        for iteration in range(n_iterations):
            for layer in range(result.n_layers):
                for head in range(result.n_heads):
                    values = [(v, t, q) for t, pq in enumerate(per_text) for q, v in enumerate(pq[name][iteration, layer, head].tolist()) if not math.isnan(v)]
                    best = sorted(values, reverse=True)[:k]
                    examples = result.examples[name][iteration][layer][head]
                    assert len(examples) == len(best), name
                    assert [e.value for e in examples] == pytest.approx([v for v, _, _ in best], abs=1e-4), name
                    for example in examples:  # each is truly where it says (ties may order differently)
                        at = per_text[example.text][name][iteration, layer, head, example.position].item()
                        assert example.value == pytest.approx(at, abs=1e-4)
                        start = max(0, example.position - WINDOW)
                        assert example.offset == start
                        assert example.tokens == tokens[example.text][start : example.position + WINDOW + 1]


def test_top_k_examples_are_the_true_argmax_positions(tiny_model):
    result = _run(tiny_model, corpus="texts", texts=TEXTS, max_tokens=64, top_k=3)
    _check_examples(tiny_model, result, TEXTS)
    assert result.texts == TEXTS


def test_looped_model_per_iteration(looped_model):
    texts = ["12+34=46?", "11+11=22?", "99+1=100?"]
    result = _run(looped_model, corpus="texts", texts=texts, max_tokens=32, top_k=2)
    assert result.n_iterations == 3
    expected = _attention_mean(looped_model, texts)
    for name in ("bos", "previous_token", "self", "entropy"):
        assert torch.tensor(result.metrics[name]) == pytest.approx(expected[name], abs=2e-4), name
    _check_examples(looped_model, result, texts, k=2)


def test_retrofit_loop_on_a_plain_model(tiny_model):
    loop = LoopSpec(start=1, end=1, times=2)
    result = _run(tiny_model, corpus="texts", texts=TEXTS[:3], max_tokens=64, top_k=2, loop=loop)
    assert result.n_iterations == 2
    expected = _attention_mean(tiny_model, TEXTS[:3], loop)
    for name in ("bos", "previous_token", "self", "entropy"):
        assert torch.tensor(result.metrics[name]) == pytest.approx(expected[name], abs=2e-4), name
    _check_examples(tiny_model, result, TEXTS[:3], loop, k=2)


def test_built_in_corpus_texts_fit_and_come_in_order(tiny_model):
    texts = list(corpus_texts(tiny_model, 30, 24))
    assert len(texts) == 30
    assert all(tiny_model.tokenize(text, 1024).shape[-1] <= 24 for text in texts)
    corpus = CORPUS.read_text()
    positions = [corpus.index(text) for text in texts]  # each a verbatim piece of the corpus, in order
    assert positions == sorted(positions)
    result = _run(tiny_model, n_texts=12, max_tokens=24, top_k=1)
    assert result.corpus == "english" and result.texts == texts[:12]
    assert torch.tensor(result.metrics["bos"]) == pytest.approx(_attention_mean(tiny_model, texts[:12])["bos"], abs=2e-4)


def test_position_stats_average_to_head_stats():
    pattern = torch.randn(2, 3, 9, 9).masked_fill(torch.ones(9, 9).triu(1).bool(), -1e9).softmax(-1)
    means = head_stats(pattern)
    first = {"bos": 1, "previous_token": 2, "self": 0, "entropy": 1}
    for name, values in position_stats(pattern).items():
        assert torch.allclose(values[..., first[name]:].mean(-1), means[name])
    assert torch.allclose(position_stats(pattern)["previous_token"][..., 4], pattern[..., 4, 3])


@pytest.mark.parametrize(
    "params, error",
    [
        ({"corpus": "texts", "texts": []}, InvalidInput),
        ({"corpus": "texts", "texts": ["  "]}, InvalidInput),
        ({"corpus": "texts", "texts": ["fine", ""]}, InvalidInput),
        ({"corpus": "texts", "texts": ["copy " * 40], "max_tokens": 16}, TooLong),
        ({"corpus": "texts", "texts": ["short"], "max_tokens": 4000}, TooLong),  # over the tiny model's context (128)
    ],
)
def test_bad_corpus_is_refused(tiny_model, params, error):
    with pytest.raises(error):
        _run(tiny_model, **params)
