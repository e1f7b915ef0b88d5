"""`python -m bench.profile [T]`: where the time of one uncached attention analysis goes.

Runs the server's path for one POST in-process, stage by stage (the analysis: one forward pass
whose attention function hands each layer's probabilities to the analysis, which takes per-head
stats and keeps the quantized triangles; then compressing every head; then the SQLite write),
next to the forwards it is measured against (bare HF with SDPA, with and without the logits of
every position; HF eager returning its attentions; the TransformerBridge forward), and prints wall
and CPU seconds per stage plus a cProfile of the compression stage. CPU seconds (all threads of
this process) move less than wall time when other processes share the cores, so the split stays
readable on a busy machine.
"""

import cProfile
import io
import pstats
import sys
import time
from contextlib import contextmanager

import torch

from .context import Bench, log


@contextmanager
def stage(timings: list, name: str):
    wall, cpu = time.perf_counter(), time.process_time()
    yield
    timings.append((name, time.perf_counter() - wall, time.process_time() - cpu))


@contextmanager
def timed_calls(timings: list, module, names: dict[str, str]):
    """Time every call of module.<attr> as stage names[attr], for the duration of the block."""
    saved = {attr: getattr(module, attr) for attr in names}

    def wrap(attr: str, fn):
        def timed(*args, **kwargs):
            with stage(timings, names[attr]):
                return fn(*args, **kwargs)

        return timed

    for attr, fn in saved.items():
        setattr(module, attr, wrap(attr, fn))
    try:
        yield
    finally:
        for attr, fn in saved.items():
            setattr(module, attr, fn)


def main(n_tokens: int = 1024, reps: int = 2) -> None:
    from transformers import AutoModelForCausalLM

    from loupe import capture, codec
    from loupe.analyses import REGISTRY, Inputs
    from loupe.analyses import attention as attention_module
    from loupe.db.cache import ResultCache
    from loupe.db.engine import init_db, make_engine

    bench = Bench()
    try:
        model = bench.loupe_model
        spec = REGISTRY["attention"]
        inputs = Inputs(text=bench.text(n_tokens), max_tokens=n_tokens)
        tokens = bench.tokens(n_tokens)
        eager = AutoModelForCausalLM.from_pretrained(bench.model_dirs / "gpt2small", attn_implementation="eager").eval()
        cache = ResultCache(init_db(make_engine(f"sqlite:///{bench.workdir / 'profile.db'}")))
        profile_text = ""
        for rep in range(reps + 1):  # the first round warms up
            timings: list = []
            with stage(timings, "reference: bare HF forward (SDPA)"):
                bench.hf_forward(tokens)
            with stage(timings, "reference: bare HF forward (SDPA), last logits only"), torch.inference_mode():
                bench.hf_model(tokens, use_cache=False, logits_to_keep=1)
            with stage(timings, "reference: HF eager forward, output_attentions"), torch.inference_mode():
                eager(tokens, use_cache=False, output_attentions=True)
            with stage(timings, "reference: TransformerBridge forward, no hooks"), torch.inference_mode():
                model.bridge(tokens)
            parts: list = []
            with (
                timed_calls(parts, attention_module, {"head_stats": "  b head_stats (per layer, in the pass)"}),
                timed_calls(parts, codec, {"_stored_form": "  c quantize + triangle (per layer, in the pass)"}),
                timed_calls(parts, codec, {"_max_pool": "  d thumbnail pooling (per layer, in the pass)"}),
                stage(timings, "1 attention analysis (spec.fn)"),
                model.lock,
            ):
                output = spec.fn(model, spec.params(), inputs)
            summed: dict[str, list[float]] = {}
            for name, wall, cpu in parts:
                summed.setdefault(name, [0.0, 0.0])
                summed[name][0] += wall
                summed[name][1] += cpu
            total = timings[-1]
            rest = (total[1] - sum(w for w, _ in summed.values()), total[2] - sum(c for _, c in summed.values()))
            timings += [("  a forward with Loupe's attention, tokenize, result", *rest)]
            timings += [(name, wall, cpu) for name, (wall, cpu) in summed.items()]
            profiler = cProfile.Profile()
            with stage(timings, f"2 compress {len(output.patterns.values)} layers' heads + thumbnails"):
                profiler.enable()
                blobs = output.patterns.slices()
                profiler.disable()
            result = output.result.model_dump(mode="json")
            key = f"profile-{rep}"
            cache.begin(key, "attention", 1, "m", {"text": inputs.text})
            with stage(timings, "3 SQLite store"):
                cache.store(key, result, blobs)
            del output, blobs
            if rep == 0:
                continue
            print(f"\nT={n_tokens}, round {rep}: stage, wall s, CPU s (capture: {'native' if capture.runs_natively(model) else 'bridge hooks'})")
            for name, wall, cpu in timings:
                print(f"  {name:<58} {wall:7.2f} {cpu:7.2f}")
            out = io.StringIO()
            pstats.Stats(profiler, stream=out).sort_stats("tottime").print_stats(12)
            profile_text = out.getvalue()
        print("\ncProfile of stage 2 (last round), by own time:")
        print("\n".join(line for line in profile_text.splitlines() if line.strip())[:4000])
    finally:
        bench.cleanup()


if __name__ == "__main__":
    log("profiling one attention analysis")
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 1024)
