"""HRM-Text (transformers' own classes): two stacks, nested cycles, every run of every layer shown.

A tiny seeded HrmTextForCausalLM (2 layers per stack, H_cycles 2 x L_cycles 3, sharpened attention)
is saved at test time. The reference is transformers' eager forward with `output_attentions`, which
lists one pattern per layer call in the order the forward makes them: per H cycle, the L stack's
layers L_cycles times, then the H stack's layers once.
"""

from pathlib import Path

import pytest
import torch

from loupe.capture import capture_patterns
from loupe.config import Settings
from loupe.model_store import ModelStore

from ..tiny_models import _tokenizer

H_CYCLES, L_CYCLES, PER_STACK, N_HEADS = 2, 3, 2, 4
TEXT = "the cat sat on the mat and the dog sat on the log"


def build_tiny_hrm(path: Path, seed: int = 0) -> Path:
    from transformers import HrmTextConfig, HrmTextForCausalLM

    tokenizer = _tokenizer()
    config = HrmTextConfig(
        vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128, num_layers_per_stack=PER_STACK,
        num_attention_heads=N_HEADS, num_key_value_heads=2, H_cycles=H_CYCLES, L_cycles=L_CYCLES,
        max_position_embeddings=96, embedding_scale=1.0,
    )
    torch.manual_seed(seed)
    model = HrmTextForCausalLM(config).eval()
    with torch.no_grad():  # sharper attention than at init, so the patterns are not near uniform
        for name, param in model.named_parameters():
            if name.endswith(("q_proj.weight", "k_proj.weight")):
                param.mul_(6.0)
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def hrm_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("hrm_dirs")
    build_tiny_hrm(root / "hrm")
    return root


@pytest.fixture(scope="module")
def hrm(hrm_dir, tmp_path_factory):
    return ModelStore(Settings(model_dirs=[hrm_dir], zoo_dir=tmp_path_factory.mktemp("zoo"))).get("local/hrm")


def test_listed_with_both_stacks_and_its_cycles(hrm):
    entry = hrm.entry
    assert (entry.n_layers, entry.n_heads, entry.n_iterations, entry.n_ctx) == (2 * PER_STACK, N_HEADS, H_CYCLES * L_CYCLES, 96)
    assert hrm.block_names == ["L_blocks.0", "L_blocks.1", "H_blocks.0", "H_blocks.1"]
    assert "attention" in hrm.capabilities and "loop" in hrm.capabilities


@pytest.mark.parametrize("native", [True, False], ids=["fast path", "bridge hooks"])
def test_every_run_of_every_layer_equals_eager_attention(hrm, hrm_dir, native):
    from transformers import HrmTextForCausalLM

    tokens = hrm.tokenize(TEXT, 96)
    with hrm.lock:
        logits, patterns = capture_patterns(hrm, tokens, native=native)  # [iteration, layer, batch, head, q, k]
    reference = HrmTextForCausalLM.from_pretrained(hrm_dir / "hrm", attn_implementation="eager").eval()
    with torch.no_grad():
        out = reference(tokens, output_attentions=True)
    assert torch.allclose(logits, out.logits, atol=1e-4)
    calls = iter(out.attentions)  # one per layer call, in forward order
    assert patterns.shape[:2] == (H_CYCLES * L_CYCLES, 2 * PER_STACK)
    for h in range(H_CYCLES):
        for l in range(L_CYCLES):
            for layer in range(PER_STACK):  # the L stack: every iteration
                assert torch.allclose(patterns[h * L_CYCLES + l, layer], next(calls), atol=1e-5)
            if l < L_CYCLES - 1:  # the H stack did not run in this iteration: nothing shown
                assert torch.isnan(patterns[h * L_CYCLES + l, PER_STACK:]).all()
        for layer in range(PER_STACK):  # the H stack: at the end of each H cycle
            assert torch.allclose(patterns[h * L_CYCLES + L_CYCLES - 1, PER_STACK + layer], next(calls), atol=1e-5)
    assert next(calls, None) is None
    assert patterns[0, 0].max() > 0.6  # sharpened: not a uniform picture


def test_views_through_the_api(client_over, hrm_dir):
    client = client_over(hrm_dir)
    scores = client.post("/api/analyses", json={"analysis": "head_scores", "model": "local/hrm", "params": {"seq_len": 20}})
    assert scores.status_code == 200 and scores.json()["status"] == "done", scores.text
    induction = scores.json()["result"]["scores"]["induction"]  # [iteration][layer][head]
    assert len(induction) == H_CYCLES * L_CYCLES and induction[0][PER_STACK] == [None] * N_HEADS
    assert all(value is not None for value in induction[L_CYCLES - 1][PER_STACK])
    body = {"analysis": "attention", "model": "local/hrm", "text": TEXT, "params": {"loop": {"times": 2}}}
    assert "set by its config" in client.post("/api/analyses", json=body).json()["error"]
    probes = client.post("/api/analyses", json={"analysis": "probes", "model": "local/hrm", "params": {
        "dataset": "arithmetic_statements", "n": 40, "folds": 2}}).json()
    assert probes["status"] == "done", probes
    verification = probes["result"]["self_verification_accuracy"]
    exits = [(i + 1) % L_CYCLES == 0 for i in range(H_CYCLES * L_CYCLES)]  # the iterations ending an H cycle
    assert [value is not None for value in verification] == exits
    assert [row[PER_STACK] is not None for row in probes["result"]["probe_accuracy"]] == exits
    assert all(row[0] is not None for row in probes["result"]["probe_accuracy"])  # the L stack runs every iteration


def test_its_own_exit_after_each_h_cycle_is_the_model_run_for_that_many_cycles(client_over, hrm_dir):
    """The logit lens reads HRM where it exits: after each H cycle, the last H layer; that equals
    transformers' model run with H_cycles cut to that cycle."""
    from transformers import HrmTextForCausalLM

    client = client_over(hrm_dir)
    lens = client.post("/api/analyses", json={"analysis": "logit_lens", "model": "local/hrm", "text": TEXT}).json()
    assert lens["status"] == "done", lens
    result = lens["result"]
    assert result["exit_only"] and result["loop_layers"][1] == 2 * PER_STACK - 1
    tokens = torch.tensor([result["token_ids"]])
    for iteration, row in enumerate(result["top_token_ids"]):
        cycle, ends_cycle = divmod(iteration + 1, L_CYCLES)
        assert all(cell == [] for cell in row[:-1])  # only the exit layer is read
        if ends_cycle != 0:
            assert row[-1] == []
            continue
        cut = HrmTextForCausalLM.from_pretrained(hrm_dir / "hrm", H_cycles=cycle).eval()
        with torch.no_grad():
            probs = cut(tokens).logits[0, -1].softmax(-1)
        top = probs.topk(5)
        assert row[-1] == top.indices.tolist()
        assert result["top_probs"][iteration][-1] == pytest.approx(top.values.tolist(), abs=1e-4)
