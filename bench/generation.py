"""Generation with the hallucination capture vs plain HF `generate` with the KV cache, same tokens.

    .venv/bin/python -m bench.generation [--quick]

Capture is Loupe's `generate_with_attention` (the model's own HF forward with the KV cache and
Loupe's attention function, capture.py, keeping three sums per head and step); the baseline is
transformers' `generate` (greedy, KV cache, default SDPA attention) on a bare HF model loaded from
the same folder, producing the same tokens. Rows: the embedded `retrieval-2l` (tiny: per-step
Python overhead dominates) and a GPT-2-small-shaped random-init model (compute dominates).
Timings are interleaved medians (bench.rows.interleaved).
"""

import argparse
import json
import tempfile
from pathlib import Path

import torch

from .rows import interleaved, median, spread

ROOT = Path(__file__).resolve().parents[1]

TARGET = 1.3
RETRIEVAL = "retrieval-2l"
PROMPT = "alice red fox . bob blue owl . carl green cat . dora gold bee . emma pink elk . ? carl"


def _measure(model, prompt_ids: torch.Tensor, n_new: int, reps: int) -> dict[str, list[float]]:
    from transformers import AutoModelForCausalLM

    from loupe.generation import generate_with_attention

    hf = AutoModelForCausalLM.from_pretrained(model.entry.location).eval()
    eos = model.tokenizer.eos_token_id

    def plain() -> torch.Tensor:
        with torch.inference_mode():
            out = hf.generate(prompt_ids, max_new_tokens=n_new, min_new_tokens=n_new, do_sample=False, use_cache=True, pad_token_id=eos)
        return out[0, prompt_ids.shape[1] :]

    def capture() -> torch.Tensor:
        with model.lock:
            return generate_with_attention(model, prompt_ids, n_new).new_ids

    if plain().tolist() != capture().tolist():
        raise RuntimeError(f"{model.id}: capture and HF generate chose different tokens")
    return interleaved({"capture": capture, "hf_generate": plain}, reps)


def _row(name: str, times: dict[str, list[float]], baseline: str, baseline_name: str, n_new: int, note: str) -> dict:
    value, base = median(times["capture"]), median(times[baseline])
    return {
        "name": name,
        "value": value,
        "baseline": base,
        "ratio": value / base,
        "target": f"<= {TARGET:g}x",
        "ok": value / base <= TARGET,
        "unit": "s",
        "limit": TARGET,
        "on": "ratio",
        "baseline_name": baseline_name,
        "note": f"{n_new} new tokens; spread capture {spread(times['capture'])} s, baseline {spread(times[baseline])} s; {note}",
    }


def rows(quick: bool = False) -> list[dict]:
    """One dict per row: name, value (s, capture), baseline (s), ratio, target, ok, and notes."""
    from loupe.config import Settings
    from loupe.model_store import ModelStore

    from .model import MODEL_NAME, build_model_dir

    reps = 3 if quick else 9
    found = []
    with tempfile.TemporaryDirectory(prefix="loupe-bench-generation-") as tmp:
        zoo = ROOT / "models"
        if (zoo / RETRIEVAL / "config.json").is_file():
            model = ModelStore(Settings(zoo_dir=zoo, data_dir=Path(tmp) / "data")).get(RETRIEVAL)
            prompt_ids = model.tokenize(PROMPT, model.n_ctx)
            n_new = min(64, model.n_ctx - prompt_ids.shape[1])
            times = _measure(model, prompt_ids, n_new, reps)
            found.append(_row(f"generation signal ({RETRIEVAL}) vs HF generate", times, "hf_generate", "HF generate, KV cache", n_new,
                              "a 2-layer d_model-128 model: per-step Python overhead dominates"))  # fmt: skip
        if not quick:
            build_model_dir(Path(tmp) / "models")
            store = ModelStore(Settings(model_dirs=[Path(tmp) / "models"], zoo_dir=Path(tmp) / "empty", data_dir=Path(tmp) / "data"))
            model = store.get(f"local/{MODEL_NAME}")
            prompt_ids = torch.randint(1, 400, (1, 128), generator=torch.Generator().manual_seed(0))
            prompt_ids[0, 0] = model.tokenizer.bos_token_id
            times = _measure(model, prompt_ids, 32, 5)
            found.append(_row("generation signal (GPT-2-small shape, T=128) vs HF generate", times, "hf_generate",
                              "HF generate, KV cache", 32, "12 layers x 12 heads, d_model 768, random init"))  # fmt: skip
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="the embedded model only, 3 repetitions")
    parser.add_argument("--threads", type=int, help="torch threads (on a busy machine 1 is steadier)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    for row in rows(quick=args.quick):
        print(json.dumps(row))


if __name__ == "__main__":
    main()
