"""patching against an independent computation: the bridge's own run_with_cache and run_with_hooks,
with the clean activation put back by a TransformerLens hook written here, and the metric computed
here; on a tiny GPT-2, a tiny looped model (a patch at one iteration), and the shipped induction-2l."""

import pytest
import torch

from loupe.analyses import Inputs
from loupe.analyses.patching import PatchingParams, patching, restored
from loupe.config import Settings
from loupe.errors import InvalidInput
from loupe.loops import LoopSpec
from loupe.model_store import ModelStore

# One name differs (John -> Mary at the second mention): the same token count, 37 with BOS.
CLEAN = "When Mary and John went to the store, John gave a drink to"
CORRUPTED = "When Mary and John went to the store, Mary gave a drink to"
# The tiny looped model's character tokenizer: one token per character; position 2 differs.
LOOP_CLEAN, LOOP_CORRUPTED = "12+34=", "15+34="


def _reference(model, clean: str, corrupted: str, correct: str, wrong: str, hook: str, firing: int, put) -> tuple[float, float, float]:
    """(metric, LD clean, LD corrupted) with `put(activation, clean_activation)` applied at the
    `firing`-th firing of `hook` in the corrupted run, by TransformerLens hooks alone."""
    bridge = model.bridge
    clean_tokens, corrupted_tokens = bridge.to_tokens(clean), bridge.to_tokens(corrupted)
    a, b = bridge.to_single_token(correct), bridge.to_single_token(wrong)
    kept = []

    def keep(activation, hook):
        kept.append(activation.clone())

    seen = []

    def patch(activation, hook):
        seen.append(1)
        return put(activation.clone(), kept[firing]) if len(seen) - 1 == firing else activation

    with torch.no_grad():
        clean_logits = bridge.run_with_hooks(clean_tokens, fwd_hooks=[(hook, keep)], reset_hooks_end=True)
        corrupted_logits = bridge.run_with_hooks(corrupted_tokens, fwd_hooks=[], reset_hooks_end=True)
        patched_logits = bridge.run_with_hooks(corrupted_tokens, fwd_hooks=[(hook, patch)], reset_hooks_end=True)
    assert len(seen) > firing

    def ld(logits):
        return float(logits[0, -1, a] - logits[0, -1, b])

    return (ld(patched_logits) - ld(corrupted_logits)) / (ld(clean_logits) - ld(corrupted_logits)), ld(clean_logits), ld(corrupted_logits)


def put_head(head: int):
    def put(z, clean_z):  # [batch, pos, head, d_head]
        z[:, :, head] = clean_z[:, :, head]
        return z

    return put


def put_position(pos: int):
    def put(resid, clean_resid):  # [batch, pos, d_model]
        resid[:, pos] = clean_resid[:, pos]
        return resid

    return put


@pytest.fixture(scope="module")
def tiny_result(tiny_model):
    return patching(tiny_model, PatchingParams(corrupted=CORRUPTED, correct="M", wrong="J"), Inputs(text=CLEAN)).result


def test_logit_diffs_equal_the_bridges_run_with_cache(tiny_model, tiny_result):
    bridge = tiny_model.bridge
    with torch.no_grad():
        clean_logits, cache = bridge.run_with_cache(bridge.to_tokens(CLEAN))
        corrupted_logits = bridge(bridge.to_tokens(CORRUPTED))
    m, j = bridge.to_single_token("M"), bridge.to_single_token("J")
    assert tiny_result.correct_id == m and tiny_result.wrong_id == j
    assert tiny_result.logit_diff_clean == pytest.approx(float(clean_logits[0, -1, m] - clean_logits[0, -1, j]), abs=1e-5)
    assert tiny_result.logit_diff_corrupted == pytest.approx(float(corrupted_logits[0, -1, m] - corrupted_logits[0, -1, j]), abs=1e-5)
    assert len(tiny_result.tokens) == len(tiny_result.corrupted_tokens) == 37
    # the cached clean z of L1H3, put into the corrupted run by hand
    z = cache["blocks.1.attn.hook_z"]  # [1, pos, head, d_head]

    def put(activation, hook):
        activation = activation.clone()
        activation[:, :, 3] = z[:, :, 3]
        return activation

    with torch.no_grad():
        patched = bridge.run_with_hooks(bridge.to_tokens(CORRUPTED), fwd_hooks=[("blocks.1.attn.hook_z", put)], reset_hooks_end=True)
    ld = float(patched[0, -1, m] - patched[0, -1, j])
    expected = (ld - tiny_result.logit_diff_corrupted) / (tiny_result.logit_diff_clean - tiny_result.logit_diff_corrupted)
    assert tiny_result.heads[0][1][3] == pytest.approx(expected, abs=2e-3)


def test_every_head_equals_transformer_lens_hooks_gpt2(tiny_model, tiny_result):
    assert (tiny_result.n_iterations, tiny_result.n_layers, tiny_result.n_heads) == (1, 2, 4)
    gap = tiny_result.logit_diff_clean - tiny_result.logit_diff_corrupted
    for layer in range(2):
        for head in range(4):
            expected, _, _ = _reference(tiny_model, CLEAN, CORRUPTED, "M", "J", f"blocks.{layer}.attn.hook_z", 0, put_head(head))
            # the metric is a ratio: its tolerance is the logits' (batch rounding, ~1e-5) over the gap
            assert tiny_result.heads[0][layer][head] == pytest.approx(expected, abs=2e-5 / abs(gap) + 1e-5), (layer, head)
    assert max(abs(v) for row in tiny_result.heads[0] for v in row) > 0.1  # heads matter: not a check of zeros


@pytest.mark.parametrize("residual", ["pre", "post"])
def test_residual_positions_equal_transformer_lens_hooks_gpt2(tiny_model, residual):
    result = patching(tiny_model, PatchingParams(corrupted=CORRUPTED, correct="M", wrong="J", residual=residual), Inputs(text=CLEAN)).result
    assert result.residual_hook == f"hook_resid_{residual}"
    gap = result.logit_diff_clean - result.logit_diff_corrupted
    first = next(pos for pos, (a, b) in enumerate(zip(result.token_ids, result.corrupted_token_ids)) if a != b)
    for layer in range(2):
        for pos in (first, first + 1, 36):
            expected, _, _ = _reference(tiny_model, CLEAN, CORRUPTED, "M", "J", f"blocks.{layer}.hook_resid_{residual}", 0, put_position(pos))
            assert result.resid[0][layer][pos] == pytest.approx(expected, abs=2e-5 / abs(gap) + 1e-5), (layer, pos)
        # before the first differing token both runs are the same: nothing to restore
        assert all(abs(v) < 1e-3 for v in result.resid[0][layer][:first])
    if residual == "post":  # the last layer's output at the last position is everything the logits read
        assert result.resid[0][1][36] == pytest.approx(1.0, abs=1e-3)


def test_a_patch_at_one_iteration_of_the_looped_model(looped_model):
    """The k-th firing of a layer's hook is iteration k: a head, and a residual position, patched at
    iteration 1 of 3 equal the same patch written with a hook that counts firings."""
    result = patching(looped_model, PatchingParams(corrupted=LOOP_CORRUPTED, correct="4", wrong="9"), Inputs(text=LOOP_CLEAN)).result
    assert result.n_iterations == 3
    gap = result.logit_diff_clean - result.logit_diff_corrupted
    tolerance = 2e-5 / abs(gap) + 1e-5
    for iteration in range(3):
        for layer, head in ((0, 1), (1, 0)):
            expected, clean, corrupted = _reference(
                looped_model, LOOP_CLEAN, LOOP_CORRUPTED, "4", "9", f"blocks.{layer}.attn.hook_z", iteration, put_head(head)
            )
            assert result.heads[iteration][layer][head] == pytest.approx(expected, abs=tolerance), (iteration, layer, head)
        for layer, pos in ((0, 2), (1, 2), (1, 6)):
            expected, _, _ = _reference(
                looped_model, LOOP_CLEAN, LOOP_CORRUPTED, "4", "9", f"blocks.{layer}.hook_resid_pre", iteration, put_position(pos)
            )
            assert result.resid[iteration][layer][pos] == pytest.approx(expected, abs=tolerance), (iteration, layer, pos)
    assert (result.logit_diff_clean, result.logit_diff_corrupted) == (pytest.approx(clean, abs=1e-5), pytest.approx(corrupted, abs=1e-5))
    heads = torch.tensor(result.heads)  # [iteration, layer, head]
    assert not torch.allclose(heads[0], heads[1], atol=1e-2)  # the iterations are different interventions
    # the embedding-level residual at the one differing position, at iteration 0: the clean run itself
    assert result.resid[0][0][2] == pytest.approx(1.0, abs=1e-3)


def test_a_retrofit_loop_patches_each_iteration(tiny_model):
    params = PatchingParams(corrupted=CORRUPTED, correct="M", wrong="J", loop=LoopSpec(start=1, end=1, times=2))
    result = patching(tiny_model, params, Inputs(text=CLEAN)).result
    assert result.n_iterations == 2
    heads = torch.tensor(result.heads)  # [iteration, layer, head]
    assert torch.equal(heads[0, 0], heads[1, 0])  # layer 0 runs once: its one firing shows at both iterations
    assert not torch.allclose(heads[0, 1], heads[1, 1], atol=1e-3)


@pytest.mark.parametrize("batch", [1, 5])
def test_batching_does_not_change_the_numbers(tiny_model, tiny_result, monkeypatch, batch):
    from loupe.analyses import patching as module

    monkeypatch.setattr(module, "MAX_BATCH", batch)
    again = patching(tiny_model, PatchingParams(corrupted=CORRUPTED, correct="M", wrong="J"), Inputs(text=CLEAN)).result
    gap = tiny_result.logit_diff_clean - tiny_result.logit_diff_corrupted
    for got, reference in ((again.heads, tiny_result.heads), (again.resid, tiny_result.resid)):
        assert torch.allclose(torch.tensor(got), torch.tensor(reference), atol=2e-5 / abs(gap) + 1e-5)


def test_the_metric_is_one_at_clean_and_zero_at_corrupted():
    patched = torch.tensor([3.0, -1.0, 1.0, 5.0])
    assert restored(patched, clean=3.0, corrupted=-1.0).tolist() == [1.0, 0.0, 0.5, 1.5]


@pytest.mark.parametrize(
    "text, params, says",
    [
        (CLEAN, {"corrupted": "When Mary and John went", "correct": "M", "wrong": "J"}, ["clean text is 37 tokens", "corrupted one 15"]),
        (CLEAN, {"corrupted": CORRUPTED, "correct": " Mary", "wrong": "J"}, ["correct answer ' Mary' is", "not one"]),
        (CLEAN, {"corrupted": CORRUPTED, "correct": "M", "wrong": " J"}, ["wrong answer ' J' is 2 tokens"]),
        (CLEAN, {"corrupted": CORRUPTED, "correct": "M", "wrong": "M"}, ["the same token"]),
        (CLEAN, {"corrupted": CLEAN, "correct": "M", "wrong": "J"}, ["nothing to restore"]),
    ],
)
def test_bad_input_is_refused_by_name(tiny_model, text, params, says):
    with pytest.raises(InvalidInput) as refusal:
        patching(tiny_model, PatchingParams(**params), Inputs(text=text))
    for part in says:
        assert part in refusal.value.message, refusal.value.message


@pytest.fixture(scope="module")
def induction():
    return ModelStore(Settings()).get("induction-2l")


def test_the_induction_head_restores_a_repeated_sequences_answer(induction):
    """induction-2l on ` cat dog X sun book door cat dog`: after the repeat of ` cat dog` the
    model should say X. Clean X = ` road`, corrupted X = ` man`. Measured: LD 27.77 clean, -23.90
    corrupted; patching L1H0 (the induction head) restores 0.976, every other head |m| < 0.01; the
    residual into layer 1 restores 0.983 at X's position and 0 at the last one (the answer is read
    from X by L1H0, not carried there)."""
    clean = " cat dog road sun book door cat dog"
    corrupted = " cat dog man sun book door cat dog"
    with induction.lock:
        result = patching(induction, PatchingParams(corrupted=corrupted, correct=" road", wrong=" man"), Inputs(text=clean)).result
    assert result.logit_diff_clean > 10 and result.logit_diff_corrupted < -10
    heads = torch.tensor(result.heads[0])  # [layer, head]
    assert heads[1, 0] > 0.8
    others = torch.cat([heads[0], heads[1, 1:]])
    assert others.abs().max() < 0.1
    expected, _, _ = _reference(induction, clean, corrupted, " road", " man", "blocks.1.attn.hook_z", 0, put_head(0))
    assert float(heads[1, 0]) == pytest.approx(expected, abs=1e-4)
    x = 3  # BOS, cat, dog, X
    resid = torch.tensor(result.resid[0])  # [layer, pos]
    assert resid[0, x] == pytest.approx(1.0, abs=1e-4)  # the token itself, before any layer: the clean run
    assert resid[1, x] > 0.8 and resid[1, -1].abs() < 0.1
