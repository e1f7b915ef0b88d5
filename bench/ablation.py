"""The ablation sweep on the GPT-2-small-shaped benchmark model: 144 heads, each knocked out alone, at T=128.

    .venv/bin/python -m bench.ablation [--quick]

Loupe's `ablation` (zero mode, loss metric, every head alone: the clean pattern pass, the clean
pass, then 144 ablated copies of the prompt in batches) against one bare HF forward of the same
tokens, timed in the same process (the baseline interleaved before and after). Target: <= 15x.
Each ablated copy runs the whole model, so 144 copies cost about 144 forwards' FLOPs, whatever the
batching; the ratio says how far the target is from that floor.
"""

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

N_TOKENS = 128
TARGET = 15.0


def rows(quick: bool = False) -> list[dict]:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from loupe.analyses import REGISTRY, Inputs
    from loupe.config import Settings
    from loupe.model_store import ModelStore

    from .model import MODEL_ID, build_model_dir, prompt

    with tempfile.TemporaryDirectory(prefix="loupe-bench-ablation-") as tmp:
        path = build_model_dir(Path(tmp) / "dirs")
        text = prompt(AutoTokenizer.from_pretrained(path), N_TOKENS).text
        hf = AutoModelForCausalLM.from_pretrained(path, attn_implementation="eager").eval()
        model = ModelStore(Settings(model_dirs=[Path(tmp) / "dirs"], zoo_dir=Path(tmp) / "zoo", data_dir=Path(tmp) / "data")).get(MODEL_ID)
        tokens = model.tokenize(text, N_TOKENS)  # [1, 128]
        spec = REGISTRY["ablation"]

        def forward() -> float:
            started = time.perf_counter()
            with torch.inference_mode():
                hf(tokens)
            return time.perf_counter() - started

        forward()  # warm
        baseline = [forward() for _ in range(2 if quick else 4)]
        started = time.perf_counter()
        with model.lock:
            result = spec.fn(model, spec.params(), Inputs(text=text, max_tokens=N_TOKENS)).result
        sweep = time.perf_counter() - started
        baseline += [forward() for _ in range(2 if quick else 4)]
    cells = sum(value is not None for row in result.delta[0] for value in row)
    one = statistics.median(baseline)
    return [
        {
            "name": f"ablation sweep ({cells} heads, T={N_TOKENS})",
            "value": sweep,
            "baseline": one,
            "unit": "s",
            "limit": TARGET,
            "on": "ratio",
            "baseline_name": "one bare HF forward",
            "note": f"{cells + 2} forward-equivalents of rows (patterns, clean, one per head); "
            f"baseline spread {min(baseline):.3g}..{max(baseline):.3g} s",
        }
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer baseline repetitions")
    for record in rows(parser.parse_args().quick):
        print(json.dumps(record))


if __name__ == "__main__":
    main()
