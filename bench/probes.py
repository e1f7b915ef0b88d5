"""The probe sweep of the embedded looped model on 2,000 examples: total and forward-only time.

    .venv/bin/python -m bench.probes [--quick]

Runs Loupe's `probes` analysis on `looped-add` (2 weight-shared blocks x 4 iterations) over the
built-in `addition` set: one residual read per (iteration, layer, row), early-exit
self-verification, task accuracy by teacher forcing, and 8 x 5-fold logistic-regression probes.
`forward` is the time inside the model's forward passes (the residual reads and the task-accuracy
passes); the rest is tokenizing and fitting the probes. Target: the whole sweep in <= 60 s.
"""

import argparse
import json
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LOOPED = "looped-add"
TARGET_S = 60.0


def rows(quick: bool = False) -> list[dict]:
    from loupe.analyses import REGISTRY, Inputs
    from loupe.analyses import probes as probes_module
    from loupe.config import Settings
    from loupe.model_store import ModelStore

    n = 400 if quick else 2000
    name = f"probes ({n:,} examples)"
    if not (ROOT / "models" / LOOPED / "config.json").is_file():
        return [{"name": name, "value": None, "baseline": None, "target": f"<= {TARGET_S:g} s", "ok": None,
                 "note": f"models/{LOOPED} is missing"}]  # fmt: skip
    with tempfile.TemporaryDirectory(prefix="loupe-bench-probes-") as tmp:
        model = ModelStore(Settings(zoo_dir=ROOT / "models", data_dir=Path(tmp) / "data")).get(LOOPED)
        spec = REGISTRY["probes"]
        params = spec.params(dataset="addition", n=n)
        forward = {"s": 0.0}

        def timed(fn):
            def call(*args, **kwargs):
                started = time.perf_counter()
                try:
                    return fn(*args, **kwargs)
                finally:
                    forward["s"] += time.perf_counter() - started

            return call

        saved = {attr: getattr(probes_module, attr) for attr in ("read_residuals", "task_accuracy")}
        for attr, fn in saved.items():
            setattr(probes_module, attr, timed(fn))
        try:
            started = time.perf_counter()
            with model.lock:
                result = spec.fn(model, params, Inputs()).result
            total = time.perf_counter() - started
        finally:
            for attr, fn in saved.items():
                setattr(probes_module, attr, fn)
    probe = result.probe_accuracy[-1][-1]
    verify = (result.self_verification_accuracy or [None])[-1]
    return [
        {
            "name": name,
            "value": total,
            "baseline": forward["s"],
            "unit": "s",
            "limit": TARGET_S,
            "on": "value",
            "baseline_name": "forward passes only",
            "note": f"{result.n_iterations} iterations x {result.n_layers} layers x {result.folds} folds; "
            f"last iteration: probe {probe:.3f}, self-verification {verify}",
        }
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="400 examples")
    for row in rows(quick=parser.parse_args().quick):
        print(json.dumps(row))


if __name__ == "__main__":
    main()
