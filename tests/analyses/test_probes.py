"""`probes` with real sklearn and real tiny models: separable labels are found, shuffled labels are not,
and self-verification / task accuracy agree with the model's own early-exit predictions."""

import random

import numpy as np
import pytest
import torch

from loupe.analyses.datasets import Row
from loupe.analyses.probes import ProbeParams, fit_probes, probes
from loupe.analyses.registry import Inputs
from loupe.errors import InvalidInput, TooLong
from loupe.looped_model import load_looped


def _run(model, **params):
    stages = []
    inputs = Inputs(progress=lambda stage, fraction: stages.append((stage, fraction)))
    with model.lock:
        output = probes(model, ProbeParams(**params), inputs)
    return output.result, stages


def test_fit_probes_separable_vs_shuffled():
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(1, 2, 300, 16, generator=generator)  # [iteration, layer, row, d_model]
    direction = torch.nn.functional.normalize(torch.randn(16, generator=generator), dim=0)
    side = (x[0, 0] @ direction > 0).float() * 2 - 1  # [row]: +1 / -1
    x[0, 0] += 0.5 * side[:, None] * direction  # layer 0: linearly separable with a margin of 1
    y = (side > 0).long().numpy()
    x[0, 1] = torch.randn(300, 16, generator=generator)  # layer 1: unrelated to y
    scores = fit_probes(x, y, folds=5, seed=0, progress=lambda f: None)
    assert scores["accuracy"].shape == (1, 2, 5)
    assert scores["accuracy"][0, 0].mean() >= 0.95
    assert abs(scores["accuracy"][0, 1].mean() - 0.5) < 0.1
    again = fit_probes(x, y, folds=5, seed=0, progress=lambda f: None)
    assert np.array_equal(again["accuracy"], scores["accuracy"])  # the fold split is seeded


def _digit_rows(n: int, seed: int, shuffle: bool) -> list[Row]:
    """Random digit strings whose label is their last character (1 or 2): linearly readable from
    the residual at the last token, which carries that token's embedding."""
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        last = "12"[i % 2]
        rows.append(Row(text="".join(rng.choice("3456789") for _ in range(5)) + last, label=f"ends{last}"))
    if shuffle:
        labels = [row.label for row in rows]
        rng.shuffle(labels)
        rows = [Row(text=row.text, label=label) for row, label in zip(rows, labels)]
    return rows


def test_separable_label_is_probed_at_every_iteration_and_layer(looped_model):
    result, stages = _run(looped_model, dataset="rows", rows=_digit_rows(120, 0, shuffle=False), folds=4)
    assert (result.n_iterations, result.n_layers) == (3, 2)
    accuracy = np.array(result.probe_accuracy)  # [iteration, layer]
    assert accuracy.shape == (3, 2) and accuracy.min() >= 0.95
    assert np.array(result.probe_fold_accuracy).shape == (3, 2, 4)
    assert result.chance == 0.5 and result.label_counts == {"ends1": 60, "ends2": 60}
    assert stages[-1][0] == "fitting probes" and stages[-1][1] == pytest.approx(1.0)
    assert [f for s, f in stages] == sorted(f for s, f in stages)  # progress only moves forward


def test_shuffled_labels_give_chance(looped_model):
    result, _ = _run(looped_model, dataset="rows", rows=_digit_rows(120, 0, shuffle=True), folds=4)
    accuracy = np.array(result.probe_accuracy)
    assert abs(accuracy.mean() - 0.5) < 0.12


def _own_answers(model_dir, texts: list[str]) -> torch.Tensor:
    """[iteration, row]: True where the plain HF module's early exit ranks `Y` above `N` after the text."""
    hf, tokenizer = load_looped(model_dir)
    y_id, n_id = tokenizer.convert_tokens_to_ids(["Y", "N"])
    tokens = torch.tensor([[0, *tokenizer.convert_tokens_to_ids(list(t))] for t in texts])
    with torch.no_grad():
        exits = hf.exit_logits(tokens)[:, :, -1]  # [iteration, row, d_vocab]
    return exits[..., y_id] > exits[..., n_id]


def test_self_verification_reads_the_early_exit(looped_model):
    rng = random.Random(1)
    texts = [f"{rng.randrange(1000):03d}+{rng.randrange(1000):03d}=" for _ in range(120)]
    says_y = _own_answers(looped_model.entry.location, texts)  # [iteration, row]
    final = says_y[-1]
    assert 5 <= int(final.sum()) <= len(texts) - 5, "the random model should say both"
    rows = [Row(text=t, label="Y" if y else "N") for t, y in zip(texts, final.tolist())]
    result, _ = _run(looped_model, dataset="rows", rows=rows, label_tokens={"Y": "Y", "N": "N"}, folds=3)
    assert result.self_verification_accuracy[-1] == 1.0  # labels are the last exit's own answers
    expected = (says_y == final).float().mean(-1).tolist()  # earlier exits agree only sometimes
    assert result.self_verification_accuracy == pytest.approx(expected, abs=1e-4)
    assert result.task_accuracy is None and result.n_task_rows == 0


def test_task_accuracy_is_greedy_exact_match_per_iteration(looped_model):
    hf, tokenizer = load_looped(looped_model.entry.location)
    rng = random.Random(2)
    prompts = [f"{rng.randrange(100):02d}+{rng.randrange(100):02d}=" for _ in range(30)]
    ids = torch.tensor([[0, *tokenizer.convert_tokens_to_ids(list(p))] for p in prompts])  # [row, pos]
    with torch.no_grad():
        for _ in range(2):  # the model's own greedy 2-token answers at its trained loop count
            ids = torch.cat([ids, hf(ids).logits[:, -1:].argmax(-1)], dim=1)
    rows = []
    for i, prompt in enumerate(prompts):
        answer = tokenizer.decode(ids[i, -2:])
        if i % 3 == 2:  # a third get a wrong answer
            answer = answer[0] + ("N" if answer[1] != "N" else "Y")
        rows.append(Row(text=prompt, label="a" if i % 2 else "b", prompt=prompt, answer=answer))
    result, _ = _run(looped_model, dataset="rows", rows=rows, folds=3)
    assert result.n_task_rows == 30
    assert result.task_accuracy[-1] == pytest.approx(20 / 30, abs=1e-4)
    assert len(result.task_accuracy) == 3


def test_addition_dataset_and_loop_override(looped_model):
    result, _ = _run(looped_model, dataset="addition", n=40, folds=2, loop={"times": 5})
    assert result.n_iterations == 5 and len(result.self_verification_accuracy) == 5
    assert result.label_tokens == {"N": "N", "Y": "Y"} and result.n_task_rows == 40
    assert result.example_tokens[-1] == "?" and result.example_position == len(result.example_tokens) - 1


def test_retrofit_loop_on_a_plain_model(tiny_model):
    rows = [Row(text=f"The number {i} is {'even' if i % 2 == 0 else 'odd'}", label=str(i % 2)) for i in range(40)]
    same = {"0": " is", "1": " is"}
    result, _ = _run(tiny_model, dataset="rows", rows=rows, folds=2, loop={"start": 1, "end": 1, "times": 2}, label_tokens=same)
    assert (result.n_iterations, result.n_layers) == (2, 2) and result.loop_layers == [1, 1]
    accuracy = np.array(result.probe_accuracy)
    assert accuracy[0, 0] == accuracy[1, 0]  # layer 0 is outside the loop: the same activations
    assert result.self_verification_accuracy is None and "same token" in result.self_verification_note


def test_bad_inputs_are_rejected(looped_model):
    with pytest.raises(InvalidInput, match="two different labels"):
        _run(looped_model, dataset="rows", rows=[Row(text="1", label="a")] * 10)
    with pytest.raises(InvalidInput, match="at least 5"):
        _run(looped_model, dataset="rows", rows=[Row(text="1", label="a")] * 10 + [Row(text="2", label="b")] * 2)
    with pytest.raises(InvalidInput, match="position"):
        _run(looped_model, dataset="addition", n=20, position=50)
    with pytest.raises(TooLong):
        _run(looped_model, dataset="rows", rows=[Row(text="1" * 100, label=str(i % 2)) for i in range(10)])
    with pytest.raises(ValueError):
        ProbeParams(dataset="addition", rows=[Row(text="1", label="a")])


@pytest.fixture(scope="module")
def sentencepiece_llama(tmp_path_factory):
    from loupe.config import Settings
    from loupe.model_store import ModelStore

    from ..tiny_models import build_tiny_llama, sentencepiece_tokenizer

    root = tmp_path_factory.mktemp("sp")
    build_tiny_llama(root / "spllama", tokenizer=sentencepiece_tokenizer())
    return ModelStore(Settings(model_dirs=[root], zoo_dir=root / "zoo")).get("local/spllama")


def test_label_tokens_are_resolved_in_context_for_both_tokenizer_families(tiny_model, sentencepiece_llama):
    from loupe.analyses.probes import label_ids_in_context

    texts = ["The dog sat on the", "When Mary gave the"]
    for model, space in ((sentencepiece_llama, "▁"), (tiny_model, "Ġ")):
        ids, note = label_ids_in_context(model, texts, ["c", "d"], {"c": " cat", "d": " dog"})
        assert note is None and ids.tolist()[0] == ids.tolist()[1]
        pieces = model.tokenizer.convert_ids_to_tokens(ids[0].tolist())
        assert pieces[0].startswith(space + "c") and pieces[1].startswith(space + "d"), pieces  # the word, with its space
    # what reading the label alone gives on SentencePiece: a lone " cat" starts with '▁' like " dog"
    alone = [sentencepiece_llama.tokenizer.encode(word, add_special_tokens=False)[0] for word in (" cat", " dog")]
    assert alone[0] == alone[1]


def test_self_verification_works_with_sentencepiece(sentencepiece_llama):
    """Self-verification equals the HF model's own last-position preference between the label tokens."""
    from transformers import AutoModelForCausalLM

    rng = random.Random(3)
    subjects = ["The dog", "The cat", "Mary", "John", "Harry"]
    texts = [f"{rng.choice(subjects)} sat on the {rng.choice(['mat', 'log'])} and saw the" for _ in range(40)]
    from loupe.analyses.probes import label_ids_in_context

    hf = AutoModelForCausalLM.from_pretrained(sentencepiece_llama.entry.location).eval()
    ids, _ = label_ids_in_context(sentencepiece_llama, texts[:1], ["c", "d"], {"c": " cat", "d": " dog"})
    cat, dog = hf_ids = ids[0].tolist()  # checked by the test above: '▁c…' and '▁d…'
    assert all(text.endswith(" the") for text in texts)  # every row resolves as the first
    with torch.no_grad():
        says_cat = [
            bool((logits := hf(torch.tensor([sentencepiece_llama.tokenize(t, 64)[0].tolist()])).logits[0, -1])[cat] > logits[dog])
            for t in texts
        ]
    rows = [Row(text=t, label="c" if i % 2 else "d") for i, t in enumerate(texts)]
    result, _ = _run(sentencepiece_llama, dataset="rows", rows=rows, label_tokens={"c": " cat", "d": " dog"}, folds=2)
    assert result.self_verification_note is None and hf_ids[0] != hf_ids[1]
    expected = sum(said == (row.label == "c") for said, row in zip(says_cat, rows)) / len(rows)
    assert result.self_verification_accuracy == [pytest.approx(expected, abs=1e-4)]
