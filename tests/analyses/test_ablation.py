"""ablation against independent computations: the Hugging Face model itself with each head's slice
of the output projection's input zeroed by a plain torch pre-hook, and TransformerLens hooks that
knock a head out by hand, one run per ablation (no batching, none of Loupe's code but the model)."""

from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM

from loupe.analyses import Inputs
from loupe.analyses import ablation as module
from loupe.analyses.ablation import AblationParams, ablation
from loupe.analyses.registry import tensor_of
from loupe.config import Settings
from loupe.errors import AppError, InvalidInput
from loupe.loops import LoopSpec
from loupe.model_store import ModelStore

from ..tiny_models import build_tiny_llama

TEXT = "When Mary and John went to the store, John gave a drink to Mary."
REFERENCE = ["The cat sat on the mat.", "A dog ran to the park and back."]
ROOT = Path(__file__).resolve().parents[2]


def _hf_delta(path, token_ids: list[int], out_proj: str) -> torch.Tensor:
    """[layer, head] loss rise with head h's z zeroed, from HF alone (no Loupe, no TransformerLens)."""
    hf = AutoModelForCausalLM.from_pretrained(path, attn_implementation="eager").eval()
    tokens = torch.tensor([token_ids])
    n_heads = hf.config.num_attention_heads
    d_head = hf.config.hidden_size // n_heads
    blocks = hf.transformer.h if hasattr(hf, "transformer") else hf.model.layers
    with torch.no_grad():
        clean = float(hf(tokens, labels=tokens).loss)
        delta = torch.zeros(len(blocks), n_heads)
        for layer, block in enumerate(blocks):
            projection = block.attn.c_proj if out_proj == "c_proj" else block.self_attn.o_proj
            for head in range(n_heads):

                def zero(module, args, head=head):
                    z = args[0].clone()  # [batch, pos, head * d_head]: heads side by side
                    z[..., head * d_head : (head + 1) * d_head] = 0
                    return (z,)

                handle = projection.register_forward_pre_hook(zero)
                delta[layer, head] = float(hf(tokens, labels=tokens).loss) - clean
                handle.remove()
    return delta


def _by_hand(model, tokens, knocked, value=None, loop=None):
    """Logits [1, pos, d_vocab] with every (firing, layer, head) in `knocked` set to value(firing, layer, head)
    (zero when None) in hook_z, through TransformerLens' run_with_hooks on one sequence."""
    from loupe.loops import looping

    fired = {}

    def hook(z, hook):
        layer = int(hook.name.split(".")[1])
        firing = fired.get(layer, 0)
        fired[layer] = firing + 1
        for at_firing, at_layer, head in knocked:
            if (at_firing, at_layer) == (firing, layer):
                z[:, :, head] = 0.0 if value is None else value(firing, layer, head)
        return z

    hooks = [(f"blocks.{layer}.attn.hook_z", hook) for layer in range(model.n_layers)]
    with torch.inference_mode(), looping(model, loop):
        return model.bridge.run_with_hooks(tokens, fwd_hooks=hooks, reset_hooks_end=True, use_cache=False)


def _z_means(model, texts, loop=None):
    """(firing, layer) -> z [head, d_head] averaged over every position of every text, by hand."""
    from loupe.loops import looping

    sums, n = {}, 0
    for text in texts:
        tokens = model.bridge.to_tokens(text)
        fired = {}

        def hook(z, hook):
            layer = int(hook.name.split(".")[1])
            firing = fired.get(layer, 0)
            fired[layer] = firing + 1
            sums[firing, layer] = sums.get((firing, layer), 0) + z[0].double().sum(0)
            return z

        with torch.inference_mode(), looping(model, loop):
            model.bridge.run_with_hooks(tokens, fwd_hooks=[(f"blocks.{l}.attn.hook_z", hook) for l in range(model.n_layers)])
        n += tokens.shape[1]
    return {key: value / n for key, value in sums.items()}


def _loss(logits, tokens):
    return float(torch.nn.functional.cross_entropy(logits[0, :-1].float(), tokens[0, 1:]))


def test_the_sweep_equals_hugging_face_with_the_head_zeroed_gpt2(tiny_model, model_dir):
    result = ablation(tiny_model, AblationParams(), Inputs(text=TEXT)).result
    assert result.n_iterations == 1 and result.n_layers == 2 and result.n_heads == 4 and result.heads is None
    expected = _hf_delta(model_dir / "gpt2tiny", result.token_ids, "c_proj")
    got = torch.tensor(result.delta[0])
    assert torch.allclose(got, expected, atol=2e-5), (got, expected)
    assert got.abs().max() > 1e-3  # heads do matter: the check is not of zeros


def test_equals_hugging_face_on_grouped_query_llama(tmp_path):
    build_tiny_llama(tmp_path / "llamatiny")
    model = ModelStore(Settings(model_dirs=[tmp_path], zoo_dir=tmp_path / "zoo")).get("local/llamatiny")
    result = ablation(model, AblationParams(), Inputs(text=TEXT)).result
    expected = _hf_delta(tmp_path / "llamatiny", result.token_ids, "o_proj")
    assert torch.allclose(torch.tensor(result.delta[0]), expected, atol=2e-5)


def test_a_set_with_mean_ablation_and_a_logit_difference_equals_hooks_by_hand(tiny_model):
    params = AblationParams(heads=["L1H2", "L0H1"], mode="mean", metric="logit_diff", target=" the", other=" to", position=-2)
    result = ablation(tiny_model, params, Inputs(text=TEXT)).result
    tokens = torch.tensor([result.token_ids])
    means = {key: value[None] for key, value in _z_means(tiny_model, [TEXT]).items()}  # the same sequence: its own mean

    def diff(logits):
        ids = tiny_model.tokenizer([" the", " to"], add_special_tokens=False)["input_ids"]
        return float(logits[0, -2, ids[0][0]] - logits[0, -2, ids[1][0]])

    value = lambda firing, layer, head: means[firing, layer][0, head].float()  # noqa: E731
    clean = diff(_by_hand(tiny_model, tokens, []))
    together = diff(_by_hand(tiny_model, tokens, [(0, 1, 2), (0, 0, 1)], value))
    assert result.clean == pytest.approx(clean, abs=2e-6) and result.heads == ["L1H2", "L0H1"]
    assert result.ablated == pytest.approx(together, abs=2e-6) and abs(together - clean) > 1e-4
    for layer, head in [(1, 2), (0, 1)]:
        alone = diff(_by_hand(tiny_model, tokens, [(0, layer, head)], value)) - clean
        assert result.delta[0][layer][head] == pytest.approx(alone, abs=2e-6)
    assert result.delta[0][0][0] is None  # not in the set


def test_reference_mean_and_probability_equal_hooks_by_hand(tiny_model):
    params = AblationParams(heads=["L0H3"], mode="reference", reference=REFERENCE, metric="prob", target=" the", position=5)
    result = ablation(tiny_model, params, Inputs(text=TEXT)).result
    tokens = torch.tensor([result.token_ids])
    means = _z_means(tiny_model, REFERENCE)
    target = tiny_model.tokenizer(" the", add_special_tokens=False)["input_ids"][0]
    prob = lambda logits: float(logits[0, 5].float().softmax(-1)[target])  # noqa: E731
    knocked = prob(_by_hand(tiny_model, tokens, [(0, 0, 3)], lambda f, l, h: means[f, l][h].float()))
    assert result.ablated == pytest.approx(knocked, abs=1e-6) and result.clean == pytest.approx(prob(_by_hand(tiny_model, tokens, [])), abs=1e-6)
    assert result.delta[0][0][3] == pytest.approx(knocked - result.clean, abs=2e-6) and knocked != pytest.approx(result.clean, abs=1e-7)


def test_one_iteration_of_the_looped_model_equals_hooks_by_hand(looped_model):
    """The k-th firing of a layer's hook is iteration k: knocking a head out there only."""
    params = AblationParams(iteration=1)
    result = ablation(looped_model, params, Inputs(text="12+34=46?Y")).result
    assert result.n_iterations == 3
    tokens = torch.tensor([result.token_ids])
    clean = _loss(_by_hand(looped_model, tokens, []), tokens)
    for layer in range(2):
        for head in range(2):
            expected = _loss(_by_hand(looped_model, tokens, [(1, layer, head)]), tokens) - clean
            assert result.delta[1][layer][head] == pytest.approx(expected, abs=2e-5)
    assert all(value is None for row in result.delta[0] + result.delta[2] for value in row)  # only iteration 1 was ablated
    every = ablation(looped_model, AblationParams(), Inputs(text="12+34=46?Y")).result
    assert every.delta[1] == result.delta[1] and every.delta[0] != every.delta[1]


def test_a_retrofit_loop_ablates_each_iteration_on_its_own(tiny_model):
    params = AblationParams(loop=LoopSpec(start=0, end=1, times=2))
    result = ablation(tiny_model, params, Inputs(text=TEXT)).result
    assert result.n_iterations == 2
    tokens = torch.tensor([result.token_ids])
    clean = _loss(_by_hand(tiny_model, tokens, [], loop=params.loop), tokens)
    expected = _loss(_by_hand(tiny_model, tokens, [(1, 0, 2)], loop=params.loop), tokens) - clean
    assert result.delta[1][0][2] == pytest.approx(expected, abs=2e-5) and result.delta[0] != result.delta[1]


@pytest.mark.parametrize("batch", [1, 3])
def test_batching_does_not_change_the_numbers(tiny_model, monkeypatch, batch):
    params = AblationParams(heads=["L0H0", "L1H1", "L1H3"], mode="mean")
    reference = ablation(tiny_model, params, Inputs(text=TEXT)).result
    monkeypatch.setattr(module, "MAX_BATCH", batch)
    again = ablation(tiny_model, params, Inputs(text=TEXT)).result
    assert again.ablated == pytest.approx(reference.ablated, abs=1e-5)
    assert torch.allclose(tensor_of(again.delta), tensor_of(reference.delta), atol=1e-5, equal_nan=True)


@pytest.mark.parametrize(
    "params, says",
    [
        ({"heads": ["L7H0"]}, "no attention head L7H0"),
        ({"heads": ["L0H9"]}, "no attention head L0H9"),
        ({"heads": ["layer one"]}, "not of the form"),
        ({"iteration": 1}, "iteration 1 is out of range"),
        ({"metric": "prob", "target": " Mary Mary"}, "must be exactly one"),
        ({"metric": "logit_diff", "target": " the"}, "needs `other`"),
        ({"metric": "prob", "target": " the", "position": 500}, "outside"),
        ({"mode": "reference", "reference": [" ", ""]}, "holds no non-empty text"),
    ],
)
def test_bad_input_is_an_invalid_input(tiny_model, params, says):
    with pytest.raises(InvalidInput, match=says):
        ablation(tiny_model, AblationParams(**params), Inputs(text=TEXT))


@pytest.fixture(scope="module")
def induction_2l(tmp_path_factory):
    return ModelStore(Settings(zoo_dir=ROOT / "models", data_dir=tmp_path_factory.mktemp("data"))).get("induction-2l")


def test_induction_2l_needs_its_induction_and_previous_token_heads_on_repeated_tokens(induction_2l):
    """head_scores' test: knocking out induction head L1H0 or previous-token head L0H0 raises the
    second copy's loss far more than knocking out any other head."""
    params = AblationParams(sequence="repeated_random", seq_len=20, batch=4)
    result = ablation(induction_2l, params, Inputs()).result
    delta = torch.tensor(result.delta[0])  # [layer, head]
    others = delta.clone()
    others[1, 0] = others[0, 0] = float("-inf")
    assert delta[1, 0] > 1.0 and delta[0, 0] > 1.0, delta
    assert delta[1, 0] > 3 * others.max() and delta[0, 0] > 3 * others.max(), delta


def test_errors_are_app_errors_not_crashes(tiny_model):
    with pytest.raises(AppError):
        ablation(tiny_model, AblationParams(), Inputs(text="   "))


def test_reference_mode_without_texts_is_the_built_in_english_corpus(tiny_model):
    from loupe.analyses.head_metrics import corpus_texts

    built_in = ablation(tiny_model, AblationParams(heads=["L0H3"], mode="reference"), Inputs(text=TEXT)).result
    texts = list(corpus_texts(tiny_model, 16, 64))
    assert len(texts) == 16 and built_in.reference_texts == texts
    given = ablation(tiny_model, AblationParams(heads=["L0H3"], mode="reference", reference=texts), Inputs(text=TEXT)).result
    assert given.ablated == built_in.ablated and given.delta == built_in.delta
    zeroed = ablation(tiny_model, AblationParams(heads=["L0H3"]), Inputs(text=TEXT)).result
    assert zeroed.ablated != built_in.ablated and zeroed.reference_texts is None
