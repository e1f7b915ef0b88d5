"""logit_attribution against an independent computation: the Hugging Face model alone (no Loupe, no
TransformerLens), its heads' slices of the output projection's input and weight taken by plain torch
hooks, the final norm's scale recomputed from its input, the unembedding's row of the target."""

import pytest
import torch
from transformers import AutoModelForCausalLM

from loupe.analyses import Inputs
from loupe.analyses.logit_attribution import LogitAttributionParams, logit_attribution
from loupe.config import Settings
from loupe.errors import InvalidInput
from loupe.looped_model import load_looped
from loupe.model_store import ModelStore

from ..conftest import refused
from ..tiny_models import build_tiny_gpt2, build_tiny_llama

TEXT = "When Mary and John went to the store, John gave a drink to Mary."


def _run(model, text=TEXT, **params):
    with model.lock:
        return logit_attribution(model, LogitAttributionParams(**params), Inputs(text=text)).result


def _parts(hf):
    """(blocks, output projection of a block, mlp of a block, final norm, lm_head) of a GPT-2 or Llama."""
    if hasattr(hf, "transformer"):
        return hf.transformer.h, lambda b: b.attn.c_proj, lambda b: b.mlp, hf.transformer.ln_f, hf.lm_head
    return hf.model.layers, lambda b: b.self_attn.o_proj, lambda b: b.mlp, hf.model.norm, hf.lm_head


def _head_out(projection, z: torch.Tensor, head: int, d_head: int) -> torch.Tensor:
    """One head's output [d_model] from z [n_heads * d_head] at one position: its slice times W_O's slice."""
    piece = z[head * d_head : (head + 1) * d_head]
    if type(projection).__name__ == "Conv1D":  # GPT-2: weight [in, out]
        return piece @ projection.weight[head * d_head : (head + 1) * d_head]
    return piece @ projection.weight[:, head * d_head : (head + 1) * d_head].T  # nn.Linear: weight [out, in]


class Frozen:
    """The final norm's linear map with the scale of the clean run's residual at the position."""

    def __init__(self, norm, resid: torch.Tensor):
        self.centre = isinstance(norm, torch.nn.LayerNorm)
        eps = getattr(norm, "eps", None) or norm.variance_epsilon
        x = resid - resid.mean() if self.centre else resid
        self.scale = 1 / torch.sqrt((x**2).mean() + eps)
        self.weight, self.bias = norm.weight, norm.bias if getattr(norm, "bias", None) is not None else torch.zeros_like(norm.weight)

    def __call__(self, part: torch.Tensor) -> torch.Tensor:
        return (part - part.mean() if self.centre else part) * self.scale * self.weight


def _hf_attribution(hf, token_ids: list[int], index: int, target: int):
    """(heads [firing, layer, head], logit, residual, frozen norm, last-layer clean mlp output) from HF alone."""
    blocks, proj, mlp, norm, head_out = _parts(hf)
    n_heads = hf.config.num_attention_heads
    d_head = hf.config.hidden_size // n_heads
    zs = {layer: [] for layer in range(len(blocks))}
    finals, mlps = [], []
    handles = [proj(b).register_forward_pre_hook(lambda m, a, layer=layer: zs[layer].append(a[0][0, index].clone())) for layer, b in enumerate(blocks)]
    handles.append(norm.register_forward_pre_hook(lambda m, a: finals.append(a[0][0, index].clone())))
    handles.append(mlp(blocks[-1]).register_forward_hook(lambda m, a, out: mlps.append(out.clone())))
    with torch.no_grad():
        logits = hf(torch.tensor([token_ids])).logits[0, index]
        for handle in handles:
            handle.remove()
        frozen = Frozen(norm, finals[-1])
        u = head_out.weight[target]
        heads = torch.tensor(
            [[[float(frozen(_head_out(proj(blocks[layer]), zs[layer][firing], h, d_head)) @ u) for h in range(n_heads)]
              for layer in range(len(blocks))] for firing in range(len(zs[0]))]
        )
        residual = float(frozen.bias @ u + (head_out.bias[target] if head_out.bias is not None else 0))
    return heads, float(logits[target]), residual, frozen, mlps[-1]


def _ablated_logit(hf, token_ids, index, target, head, frozen, clean_mlp) -> float:
    """The target logit with `head` of the last layer zeroed at its last firing, the last MLP held at its
    clean output (the one component downstream) and the final norm's scale frozen: exactly logit - DLA."""
    blocks, proj, mlp, norm, head_out = _parts(hf)
    d_head = hf.config.hidden_size // hf.config.num_attention_heads
    fired, finals = [0], []
    n_firings = None

    def zero(module, args):
        fired[0] += 1
        if fired[0] == n_firings:
            z = args[0].clone()
            z[..., head * d_head : (head + 1) * d_head] = 0
            return (z,)

    def hold(module, args, out):
        return clean_mlp if fired[0] == n_firings else out

    with torch.no_grad():
        counts = []
        probe = proj(blocks[-1]).register_forward_pre_hook(lambda m, a: counts.append(1))
        hf(torch.tensor([token_ids]))
        probe.remove()
        n_firings = len(counts)
        handles = [proj(blocks[-1]).register_forward_pre_hook(zero), mlp(blocks[-1]).register_forward_hook(hold),
                   norm.register_forward_pre_hook(lambda m, a: finals.append(a[0][0, index].clone()))]
        try:
            hf(torch.tensor([token_ids]))
        finally:
            for handle in handles:
                handle.remove()
        x = finals[-1]
        return float((frozen(x) + frozen.bias) @ head_out.weight[target] + (head_out.bias[target] if head_out.bias is not None else 0))


def _check_against_hf(result, hf):
    heads, logit, residual, frozen, clean_mlp = _hf_attribution(hf, result.token_ids, result.position, result.target_id)
    got = torch.tensor(result.heads)  # [iteration, layer, head]
    assert got.shape == heads.shape
    assert torch.allclose(got, heads, atol=2e-5), (got, heads)
    assert got.abs().max() > 1e-3  # heads matter: the check is not of zeros
    assert result.target_logit == pytest.approx(logit, abs=1e-5)
    assert result.residual == pytest.approx(residual, abs=1e-4)
    # the components and the named residual make up the model's own logit
    parts = got.sum() + torch.tensor(result.mlp).sum() + result.embed + (result.pos_embed or 0)
    parts += torch.tensor(result.attn_bias).nansum() if result.attn_bias is not None else 0
    assert float(parts) == pytest.approx(result.sum_of_components, abs=1e-4)
    assert result.sum_of_components + result.residual == pytest.approx(result.target_logit, abs=1e-5)
    # zero-ablating a head of the last layer at its last firing, the norm's scale frozen, lowers the logit by its DLA
    for head in range(result.n_heads):
        ablated = _ablated_logit(hf, result.token_ids, result.position, result.target_id, head, frozen, clean_mlp)
        assert ablated - logit == pytest.approx(-result.heads[-1][-1][head], abs=2e-5)


def _perturbed_gpt2(path):
    """The tiny GPT-2 with every bias and norm weight random (its init leaves them 0 and 1), so the
    attention output bias, the norm's weight and bias and the residual are all nontrivial."""
    build_tiny_gpt2(path)
    hf = AutoModelForCausalLM.from_pretrained(path)
    torch.manual_seed(1)
    with torch.no_grad():
        for name, param in hf.named_parameters():
            if name.endswith("bias") or ".ln_" in name or name.startswith("transformer.ln_f"):
                param.add_(0.2 * torch.randn_like(param))
    hf.save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def gpt2_biased(tmp_path_factory):
    root = tmp_path_factory.mktemp("biased")
    _perturbed_gpt2(root / "gpt2biased")
    return ModelStore(Settings(model_dirs=[root], zoo_dir=root / "zoo")).get("local/gpt2biased"), root / "gpt2biased"


def test_gpt2_layernorm_equals_hugging_face(gpt2_biased):
    model, path = gpt2_biased
    result = _run(model, position=7)
    assert result.norm == "LayerNorm" and result.n_iterations == 1 and result.position == 7
    assert result.attn_bias is not None and result.pos_embed is not None and abs(result.residual) > 1e-3
    _check_against_hf(result, AutoModelForCausalLM.from_pretrained(path, attn_implementation="eager").eval())


def test_grouped_query_llama_rmsnorm_equals_hugging_face(tmp_path):
    build_tiny_llama(tmp_path / "llamatiny")
    model = ModelStore(Settings(model_dirs=[tmp_path], zoo_dir=tmp_path / "zoo")).get("local/llamatiny")
    result = _run(model)
    assert result.norm == "RMSNorm" and result.attn_bias is None and result.pos_embed is None
    _check_against_hf(result, AutoModelForCausalLM.from_pretrained(tmp_path / "llamatiny", attn_implementation="eager").eval())


def test_looped_model_attributes_every_iteration(looped_model):
    result = _run(looped_model, "12+34=")
    assert result.n_iterations == 3
    hf, _ = load_looped(looped_model.entry.location)
    _check_against_hf(result, hf)
    assert not torch.allclose(torch.tensor(result.heads[0]), torch.tensor(result.heads[2]))
    assert any("@it2" in c.label for c in result.components)


def test_target_default_text_and_refusals(tiny_model):
    top = _run(tiny_model, position=3)
    assert top.components[-1].kind == "residual"
    assert top.components[-1].value == top.residual
    other = tiny_model.str_tokens(torch.tensor([5]))[0]
    chosen = _run(tiny_model, position=3, target=tiny_model.tokenizer.decode([5]))
    assert chosen.target_id == 5 and chosen.target == other and chosen.target_logit <= top.target_logit
    assert chosen.target_prob <= top.target_prob  # the default is the model's top prediction
    with pytest.raises(InvalidInput, match="exactly one token"):
        _run(tiny_model, position=3, target="When Mary and John")
    with pytest.raises(InvalidInput, match="position"):
        _run(tiny_model, position=99)
    retrofit = _run(tiny_model, loop={"start": 0, "end": 1, "times": 2})
    assert retrofit.n_iterations == 2 and retrofit.sum_of_components + retrofit.residual == pytest.approx(retrofit.target_logit, abs=1e-5)


def test_api_refuses_bad_targets_in_the_one_error_shape(client):
    from ..conftest import TINY

    body = {"analysis": "logit_attribution", "model": TINY, "text": TEXT, "params": {"target": "Mary and John"}}
    assert "exactly one token" in refused(client.post("/api/analyses", json=body), "invalid_input")
    ok = client.post("/api/analyses", json={**body, "params": {"position": 2}}).json()
    assert ok["status"] == "done" and ok["result"]["components"][-1]["kind"] == "residual"


def test_a_logit_difference_is_the_difference_of_the_two_attributions(gpt2_biased):
    """With `other`, every component is its share of logit(target) - logit(other): exactly the
    target's attribution minus the other token's (the frozen norm scale is the same), each of them
    checked against Hugging Face above; and the difference is the model's own."""
    model, path = gpt2_biased
    one, two = (_run(model, position=7, target=model.tokenizer.decode([token])) for token in (5, 9))
    diff = _run(model, position=7, target=model.tokenizer.decode([5]), other=model.tokenizer.decode([9]))
    assert (diff.target_id, diff.other_id, diff.other) == (5, 9, two.target)
    assert diff.logit_diff == pytest.approx(one.target_logit - two.target_logit, abs=1e-5)
    assert torch.allclose(torch.tensor(diff.heads), torch.tensor(one.heads) - torch.tensor(two.heads), atol=2e-5)
    assert torch.allclose(torch.tensor(diff.mlp), torch.tensor(one.mlp) - torch.tensor(two.mlp), atol=2e-5)
    assert diff.residual == pytest.approx(one.residual - two.residual, abs=1e-4)
    assert diff.sum_of_components + diff.residual == pytest.approx(diff.logit_diff, abs=1e-5)
    hf = AutoModelForCausalLM.from_pretrained(path, attn_implementation="eager").eval()
    logits = hf(torch.tensor([diff.token_ids])).logits[0, 7]
    assert diff.logit_diff == pytest.approx(float(logits[5] - logits[9]), abs=1e-4)
    assert one.other is None and one.logit_diff is None
    with pytest.raises(InvalidInput, match="two different tokens"):
        _run(model, position=7, target=model.tokenizer.decode([5]), other=model.tokenizer.decode([5]))
