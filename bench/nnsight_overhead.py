"""nnsight's local overhead (docs/scale.md): a plain HF forward vs an nnsight trace that saves every
layer's attention (pattern and output), and the same trace through nnsight's serverless dry run of
a remote request (`remote="local"`: the request serialized and deserialized as NDIF would).

`OMP_NUM_THREADS=1 python -m bench.nnsight_overhead` (needs `pip install nnsight`; not a Loupe
dependency; one thread: on a shared machine two threads' timings spread 40x). Tiny
random-init GPT-2s (d_model 64, 4 heads) of 2 and 12 layers, T = 128: the fixed cost of tracing
shows against a forward that costs little, so these are upper bounds on the ratio for real models.
"""

import contextlib
import io
import tempfile
from pathlib import Path

import torch

from .rows import interleaved, median, spread

T = 128


def measure(path: Path, n_layers: int, reps: int) -> dict:
    from nnsight import LanguageModel, NNsight
    from transformers import AutoModelForCausalLM

    hf = AutoModelForCausalLM.from_pretrained(path, attn_implementation="eager").eval()
    traced = NNsight(hf)
    remote = LanguageModel(str(path), dispatch=True, attn_implementation="eager")
    ids = torch.randint(1, hf.config.vocab_size, (1, T), generator=torch.Generator().manual_seed(0))  # [1, pos]

    def plain() -> None:
        with torch.inference_mode():
            hf(ids)

    def hf_attentions() -> None:
        with torch.inference_mode():
            hf(ids, output_attentions=True)

    def every_layer(model, **trace) -> list:
        with torch.inference_mode(), model.trace(ids, **trace):
            kept = list().save()
            for layer in range(n_layers):
                output = model.transformer.h[layer].attn.output  # (attn output [batch, pos, d_model], pattern [batch, head, q, k])
                kept.append((output[0], output[1]))
        return kept

    kept = every_layer(traced)
    with torch.inference_mode():
        reference = hf(ids, output_attentions=True).attentions
    assert all(torch.equal(pattern, reference[layer]) for layer, (_, pattern) in enumerate(kept))  # exact, not close
    with contextlib.redirect_stdout(io.StringIO()) as printed:
        every_layer(remote, remote="local", verbose=True)
    payload = next(line for line in printed.getvalue().splitlines() if "payload" in line)
    times = interleaved(
        {"hf": plain, "hf_attentions": hf_attentions, "nnsight": lambda: every_layer(traced),
         "nnsight_remote_local": lambda: every_layer(remote, remote="local")},
        reps,
    )
    base = median(times["hf"])
    return {
        "n_layers": n_layers,
        "hf_ms": 1e3 * base,
        **{f"{name}_ms": 1e3 * median(values) for name, values in times.items() if name != "hf"},
        **{f"{name}_ratio": median(values) / base for name, values in times.items() if name != "hf"},
        # minima: on a shared machine the least disturbed run of each (the notes' "ratio of minima")
        **{f"{name}_min_ratio": min(values) / min(times["hf"]) for name, values in times.items() if name != "hf"},
        "spread_s": {name: spread(values) for name, values in times.items()},
        "request": payload.strip(),
        "saved_bytes": sum(t.numel() * t.element_size() for pair in kept for t in pair),
    }


def main() -> None:
    import json
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from tests.tiny_models import build_tiny_gpt2

    with tempfile.TemporaryDirectory() as root:
        for n_layers, reps in ((2, 100), (12, 40)):
            path = build_tiny_gpt2(Path(root) / f"gpt2-{n_layers}l", n_layer=n_layers)
            print(json.dumps(measure(path, n_layers, reps)))


if __name__ == "__main__":
    main()
