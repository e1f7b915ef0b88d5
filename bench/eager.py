"""The exactness rows' reference: a head's attention weights from the HF model's own eager attention,
at any length, in bounded memory."""

from pathlib import Path

EAGER_CHUNK = 1024  # query rows per block
CHUNKED_EAGER = "loupe_bench_chunked_eager"


class _Captured(Exception):
    """Stops the reference forward after the last layer it needed."""


def eager_patterns(model_dir: Path, tokens, wanted: list[tuple[int, int]], chunk: int) -> dict[tuple[int, int], object]:
    """(layer, head) -> [T, T] float32: the HF model's eager attention weights of those heads.

    The forward is transformers' own, every layer's attention its eager_attention_forward (float32
    softmax), called on blocks of `chunk` query rows with the causal mask of those rows (the text
    has no padding): the same numbers as attn_implementation="eager", without holding [head, T, T]
    per layer (3.2 GB at T = 8,192). It stops after the last layer it needed."""
    import torch
    from transformers import AttentionInterface, AutoModelForCausalLM
    from transformers.masking_utils import AttentionMaskInterface
    from transformers.models.llama.modeling_llama import eager_attention_forward

    n_tokens, last = tokens.shape[1], max(layer for layer, _ in wanted)
    found = {key: torch.empty(n_tokens, n_tokens) for key in wanted}  # [query_pos, key_pos] each

    def chunked_eager(module, query, key, value, attention_mask, scaling, dropout=0.0, **kwargs):
        positions = torch.arange(n_tokens)
        outputs = []
        for q0 in range(0, n_tokens, chunk):
            q1 = min(n_tokens, q0 + chunk)
            later = positions[None, :] > positions[q0:q1, None]  # [chunk, key_pos]: keys after the query
            mask = torch.zeros(q1 - q0, n_tokens).masked_fill(later, torch.finfo(query.dtype).min)[None, None]
            output, weights = eager_attention_forward(module, query[:, :, q0:q1], key, value, mask, scaling, dropout, **kwargs)
            outputs.append(output)  # [1, chunk, head, d_head]
            for layer, head in wanted:
                if layer == module.layer_idx:
                    found[layer, head][q0:q1] = weights[0, head]  # [chunk, key_pos]
        if module.layer_idx == last:
            raise _Captured
        return torch.cat(outputs, dim=1), None  # [1, pos, head, d_head]

    AttentionInterface.register(CHUNKED_EAGER, chunked_eager)
    AttentionMaskInterface.register(CHUNKED_EAGER, lambda *args, **kwargs: None)  # each block makes its own
    model = AutoModelForCausalLM.from_pretrained(model_dir, attn_implementation=CHUNKED_EAGER).eval()
    try:
        with torch.inference_mode():
            model(tokens, use_cache=False)
    except _Captured:
        pass
    return found


def eager_reference_check(model_dir: Path, tokens, reference: dict) -> float:
    """Max |reference - a whole HF eager forward's output_attentions|; raises past 1e-6 (they should
    be the same numbers)."""
    import torch
    from transformers import AutoModelForCausalLM

    eager = AutoModelForCausalLM.from_pretrained(model_dir, attn_implementation="eager").eval()
    with torch.inference_mode():
        attentions = eager(tokens, use_cache=False, output_attentions=True).attentions  # layer -> [1, head, q, k]
    worst = max(float((pattern - attentions[layer][0, head]).abs().max()) for (layer, head), pattern in reference.items())
    if worst > 1e-6:
        raise RuntimeError(f"the chunked eager reference is {worst:.3g} off HF's eager forward")
    return worst
