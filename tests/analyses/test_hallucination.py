"""Hallucination signals: formulas on hand-made attention sums, then both analyses on a real tiny GPT-2."""

import json

import pytest
import torch

from loupe.analyses.hallucination import (
    HallucinationParams,
    hallucination,
    head_labels,
    lookback_ratio,
    token_signals,
    top_heads,
)
from loupe.analyses.hallucination_eval import HallucinationEvalParams, hallucination_eval, parse_jsonl, stratified_split
from loupe.analyses.registry import Inputs
from loupe.config import REPO_ROOT, Settings
from loupe.errors import TooLong
from loupe.facts import NAMES, builtin_rows
from loupe.generation import Generation
from loupe.model_store import ModelStore

PROMPT = "The cat sat on the mat. The dog sat on the"


def _generation(bos, prompt, generated, n_prompt=5) -> Generation:
    """A Generation with [new, 1, 1, head] sums from [new][head] lists."""
    as_tensor = lambda rows: torch.tensor(rows, dtype=torch.float32)[:, None, None, :]  # noqa: E731
    n_new = len(bos)
    return Generation(
        prompt_ids=torch.zeros(n_prompt, dtype=torch.long),
        new_ids=torch.zeros(n_new, dtype=torch.long),
        bos=as_tensor(bos),
        prompt=as_tensor(prompt),
        generated=as_tensor(generated),
    )


def test_lookback_ratio_compares_mean_attention_per_token():
    # n_prompt 5: 4 prompt tokens after BOS. Token 0 sees no generated token; token 2 sees two.
    generation = _generation(
        bos=[[0.2, 1.0], [0.2, 0.0], [0.0, 0.2]],
        prompt=[[0.8, 0.0], [0.4, 0.4], [0.4, 0.0]],
        generated=[[0.0, 0.0], [0.4, 0.6], [0.6, 0.8]],
    )
    ratio = lookback_ratio(generation)[:, 0, 0]  # [new, head]
    assert ratio[0].tolist() == [1.0, 1.0]  # nothing generated to look back at
    assert ratio[1].tolist() == pytest.approx([0.1 / (0.1 + 0.4), 0.1 / (0.1 + 0.6)])
    assert ratio[2].tolist() == pytest.approx([0.1 / (0.1 + 0.3), 0.0])


def test_all_bos_head_has_an_uninformative_ratio():
    generation = _generation(bos=[[0.5], [1.0]], prompt=[[0.5], [0.0]], generated=[[0.0], [0.0]])
    assert lookback_ratio(generation)[1].item() == 0.5


def test_token_signals_average_the_chosen_heads():
    generation = _generation(
        bos=[[0.9, 0.1, 0.5, 0.3]], prompt=[[0.1, 0.9, 0.5, 0.7]], generated=[[0.0, 0.0, 0.0, 0.0]]
    )
    signals = token_signals(generation, torch.tensor([0, 2]))
    assert signals["signal"].tolist() == pytest.approx([0.7])
    assert signals["bos_all"].tolist() == pytest.approx([0.45])
    assert signals["bos_by_head"].shape == (1, 4)


def test_top_heads_and_labels():
    assert top_heads(torch.tensor([0.1, 0.9, 0.5, 0.9]), 3).tolist() == [1, 3, 2]
    assert top_heads(torch.tensor([0.1, 0.2]), 5).tolist() == [1, 0]
    assert top_heads(torch.tensor([0.05, 0.9, 0.3, 0.02]), 3, min_score=0.1).tolist() == [1, 2]
    assert top_heads(torch.tensor([0.05, 0.02]), 3, min_score=0.1).tolist() == []  # no retrieval heads: none pretend to be
    assert head_labels(1, 2, 2) == ["L0H0", "L0H1", "L1H0", "L1H1"]
    assert head_labels(2, 1, 1) == ["I0L0H0", "I1L0H0"]


def _run(model, fn, params, text=None):
    with model.lock:
        return fn(model, params, Inputs(text=text, max_tokens=1024)).result


def test_hallucination_on_a_tiny_model(tiny_model):
    result = _run(tiny_model, hallucination, HallucinationParams(max_new_tokens=6, top_k=3, min_induction=0, threshold=0.2), PROMPT)
    n = len(result.tokens)
    assert n == len(result.token_ids) == len(result.signal) == len(result.lookback_ratio) == len(result.flagged) == 6
    assert result.prompt_tokens[0] == "<|endoftext|>"
    assert len(result.heads) == 8 and len(result.bos_by_head) == n and len(result.bos_by_head[0]) == 8
    scores = result.induction_scores
    assert len(result.retrieval_heads) == 3
    assert sorted(scores, reverse=True)[:3] == [scores[i] for i in result.retrieval_heads]
    for i in range(n):
        picked = [result.bos_by_head[i][h] for h in result.retrieval_heads]
        assert result.signal[i] == pytest.approx(sum(picked) / 3, abs=1e-4)
        assert result.bos_all[i] == pytest.approx(sum(result.bos_by_head[i]) / 8, abs=1e-4)
        assert result.flagged[i] == (result.signal[i] >= 0.2)
    assert result.lookback_ratio[0] == 1.0


def test_sampled_hallucination_is_seeded(tiny_model):
    params = HallucinationParams(max_new_tokens=8, sample=True, temperature=2.0, seed=5)
    assert _run(tiny_model, hallucination, params, PROMPT).token_ids == _run(tiny_model, hallucination, params, PROMPT).token_ids


def test_hallucination_refuses_a_prompt_that_leaves_no_room(tiny_model):
    with pytest.raises(TooLong):
        _run(tiny_model, hallucination, HallucinationParams(max_new_tokens=128), PROMPT)


def test_builtin_rows_are_labelled_by_construction():
    rows = builtin_rows(40, seed=1)
    assert rows == builtin_rows(40, seed=1) and rows != builtin_rows(40, seed=2)
    for row in rows:
        asked = row["question"].removeprefix("? ")
        context_names = row["context"].split(" . ")
        present = any(fact.split()[0] == asked for fact in context_names)
        assert asked in NAMES and present == (row["label"] == 0)
        if row["label"] == 0:
            assert f"{asked} {row['reference']} ." in row["context"]
    assert sum(row["label"] for row in rows) == 20


def test_eval_on_the_builtin_set(tiny_model):
    result = _run(tiny_model, hallucination_eval, HallucinationEvalParams(n_examples=16, max_facts=3, top_k=2, min_induction=0))
    assert result.n_examples == 16 and result.n_made_up == 8 and result.n_train + result.n_test == 16
    assert set(result.signals) == {"bos_retrieval", "bos_all", "lookback", "detector"}
    for signal in result.signals.values():
        assert 0 <= signal.auroc <= 1
        assert signal.roc.fpr[0] == 0 and signal.roc.tpr[0] == 0 and signal.roc.thresholds[0] is None
        assert signal.roc.fpr[-1] == 1 and signal.roc.tpr[-1] == 1
        assert all(a <= b for a, b in zip(signal.roc.fpr, signal.roc.fpr[1:]))
    assert result.signals["detector"].auroc_all_rows is None  # trained: only its test split counts
    assert len(result.examples) == 16 and {e.split for e in result.examples} == {"train", "test"}
    assert len(result.retrieval_heads) == 2


def test_eval_labels_rows_by_reference(tiny_model):
    """Half the rows' references are the model's own greedy answer (grounded), half can't match."""
    rows = builtin_rows(8, seed=0, max_facts=3)
    answers = [_run(tiny_model, hallucination, HallucinationParams(max_new_tokens=2), r["context"] + " " + r["question"]) for r in rows]
    lines = []
    for i, (row, answer) in enumerate(zip(rows, answers)):
        reference = "".join(answer.tokens).strip() if i % 2 == 0 else "no such answer xyz"
        lines.append(json.dumps({"context": row["context"], "question": row["question"], "reference": reference}))
    params = HallucinationEvalParams(source="jsonl", jsonl="\n".join(lines), train_fraction=0.5)
    result = _run(tiny_model, hallucination_eval, params)
    assert [e.label for e in result.examples] == [0, 1] * 4
    assert result.answer_accuracy == 1.0
    assert "jsonl" not in result.params


def test_eval_with_one_class_reports_no_auroc(tiny_model):
    """References that every answer contains: all rows grounded, so there is nothing to rank."""
    rows = builtin_rows(4, seed=0, max_facts=2)
    prompt = lambda r: r["context"] + " " + r["question"]  # noqa: E731
    answers = ["".join(_run(tiny_model, hallucination, HallucinationParams(max_new_tokens=2), prompt(r)).tokens) for r in rows]
    lines = [json.dumps({"context": r["context"], "question": r["question"], "reference": a}) for r, a in zip(rows, answers)]
    result = _run(tiny_model, hallucination_eval, HallucinationEvalParams(source="jsonl", jsonl="\n".join(lines)))
    assert result.n_made_up == 0 and "same label" in result.note
    assert all(signal.auroc is None and signal.roc is None for signal in result.signals.values())


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('{"context": "a", "question": "b", "label": 0}\nnot json', "line 2 is not JSON"),
        ('{"context": "a", "question": "b"}', "line 1"),  # neither label nor reference
        ('{"context": "a", "question": "b", "label": 2}', "line 1: label"),
        ('{"context": "", "question": "b", "label": 1}', "line 1: context"),
        ('{"context": "a", "question": "b", "reference": "  "}', "line 1: reference"),
        ("\n".join(['{"context": "a", "question": "b", "label": 1}'] * 5), "all the same"),
        ('{"context": "a", "question": "b", "label": 1}', "at least 4"),
        ("\n".join(['{"context": "a", "question": "b", "label": 1}'] * 2001), "more than 2000"),
    ],
)
def test_broken_jsonl_is_refused_with_its_line(text, message):
    with pytest.raises(ValueError, match=message):
        parse_jsonl(text)


def test_jsonl_accepts_booleans_and_blank_lines():
    rows = parse_jsonl('{"context": "a", "question": "b", "label": true}\n\n' + '{"context": "a", "question": "b", "label": false}\n' * 3)
    assert [row.label for row in rows] == [1, 0, 0, 0]


def test_stratified_split_keeps_both_classes_on_both_sides():
    labels = torch.tensor([0] * 7 + [1] * 3).numpy()
    train = stratified_split(labels, 0.5, seed=0)
    assert train.sum() == 6 and labels[train].sum() == 2 and labels[~train].sum() == 1  # round(3.5) + round(1.5)
    assert (stratified_split(labels, 0.5, seed=0) == train).all()


@pytest.fixture(scope="module")
def retrieval_model(tmp_path_factory):
    """The embedded `retrieval-2l` (models/retrieval-2l, made by models/train_retrieval.py)."""
    settings = Settings(zoo_dir=REPO_ROOT / "models", data_dir=tmp_path_factory.mktemp("data"))
    return ModelStore(settings).get("retrieval-2l")


def test_embedded_model_flags_a_made_up_answer(retrieval_model):
    context = "alice red fox . bob blue owl . carl green cat ."
    params = HallucinationParams(max_new_tokens=2)
    grounded = _run(retrieval_model, hallucination, params, f"{context} ? bob")
    made_up = _run(retrieval_model, hallucination, params, f"{context} ? dora")  # dora: absent
    assert grounded.tokens == [" blue", " owl"] and grounded.flagged == [False, False]
    assert made_up.flagged[0] and made_up.signal[0] > 0.5 > max(grounded.signal)
    assert [made_up.heads[i] for i in made_up.retrieval_heads] == ["L1H0"]


def test_embedded_model_signal_separates_the_builtin_set(retrieval_model):
    result = _run(retrieval_model, hallucination_eval, HallucinationEvalParams(n_examples=24, seed=11))
    assert result.answer_accuracy >= 0.9
    assert result.signals["bos_retrieval"].auroc_all_rows >= 0.85
    assert result.signals["bos_retrieval"].auroc_all_rows > result.signals["lookback"].auroc_all_rows


def test_without_retrieval_heads_there_is_a_warning_and_no_signal(tiny_model):
    """No head reaches min_induction: nothing pretends to be a retrieval head, nothing is flagged."""
    params = HallucinationParams(max_new_tokens=3, min_induction=1.0)
    result = hallucination(tiny_model, params, Inputs(text="alice red fox . bob blue owl . ? bob")).result
    assert result.retrieval_heads == [] and result.signal is None and result.flagged is None
    best = max(range(len(result.induction_scores)), key=lambda i: result.induction_scores[i])
    assert result.warning and result.heads[best] in result.warning and "no retrieval heads" in result.warning
    assert len(result.bos_all) == len(result.tokens)  # the all-heads signals are still there
    evaluation = hallucination_eval(tiny_model, HallucinationEvalParams(n_examples=10, max_facts=3, min_induction=1.0), Inputs()).result
    assert evaluation.warning and evaluation.retrieval_heads == []
    assert evaluation.signals["bos_retrieval"].auroc is None and evaluation.signals["bos_all"].auroc is not None


def test_bos_per_loop_iteration_equals_the_patterns_of_the_generated_text(looped_model):
    """On a looped model, with a loop count of its own: the BOS attention of each generated token's
    query at every iteration equals the pattern of one plain forward over prompt + generated tokens."""
    from loupe.capture import capture_patterns
    from loupe.loops import LoopSpec

    loop = LoopSpec(times=5)
    params = HallucinationParams(max_new_tokens=4, top_k=2, min_induction=0, loop=loop)
    result = _run(looped_model, hallucination, params, "12+34=")
    assert result.n_iterations == 5 and len(result.bos_by_iteration[0]) == 5
    sequence = torch.tensor([result.prompt_ids + result.token_ids[:-1]])
    with looped_model.lock:
        _, patterns = capture_patterns(looped_model, sequence, loop)  # [iteration, layer, batch, head, q, k]
    n_prompt = len(result.prompt_ids)
    for token in range(len(result.tokens)):
        bos = patterns[:, :, 0, :, n_prompt - 1 + token, 0]  # [iteration, layer, head]
        expected = bos.flatten(1).mean(-1)  # [iteration]
        assert result.bos_by_iteration[token] == pytest.approx(expected.tolist(), abs=2e-4)
        retrieval = {h % (result.n_layers * result.n_heads) for h in result.retrieval_heads}
        picked = bos.flatten(1)[:, sorted(retrieval)].mean(-1)
        assert result.signal_by_iteration[token] == pytest.approx(picked.tolist(), abs=2e-4)
    assert len({round(v, 4) for v in result.bos_by_iteration[0]}) > 1  # the iterations differ
