"""In-process rows: attention capture at each T and head scores, against one bare HF forward."""

import torch

from .context import Bench, log
from .rows import Row, interleaved, median, versus

CAPTURE_TARGET = 1.15
HEAD_SCORES_TARGET = 1.2


def attention_capture(bench: Bench) -> list[Row]:
    """Loupe's `attention` analysis (tokenize, capture every pattern in one forward, per-head
    stats) vs a bare HF forward of the same tokens; TransformerLens' `run_with_cache` keeping
    only the patterns is the reference column."""
    from loupe.analyses import REGISTRY, Inputs

    model = bench.loupe_model
    spec = REGISTRY["attention"]
    names = list(model.pattern_hook_names().values())
    rows = []
    for index, n_tokens in enumerate(bench.lengths):
        text = bench.text(n_tokens)
        tokens = bench.tokens(n_tokens)
        inputs = Inputs(text=text, max_tokens=n_tokens)

        def loupe() -> None:
            with model.lock:
                spec.fn(model, spec.params(), inputs)

        def transformer_lens() -> None:
            with torch.inference_mode():
                _, cache = model.bridge.run_with_cache(tokens, names_filter=names)
            assert len(cache) == len(names)

        reps = bench.repetitions({128: 5, 512: 4}.get(n_tokens, 3))
        log(f"attention capture T={n_tokens}: {reps} repetitions")
        times = interleaved(
            {"hf": lambda: bench.hf_forward(tokens), "loupe": loupe, "tl": transformer_lens},
            reps,
            warmup=0 if bench.quick or index > 0 else 1,  # code paths are warm after the first T
        )
        tl = median(times["tl"])
        rows.append(
            versus(f"attention capture T={n_tokens}", times, "loupe", "hf", CAPTURE_TARGET, "bare HF forward",
                   {"TransformerLens run_with_cache": f"{tl:.3g} s = {tl / median(times['hf']):.2f}x"})  # fmt: skip
        )
    return rows


def head_scores(bench: Bench) -> list[Row]:
    """`head_scores` (seq 50, batch 10) vs one bare forward of the same [10, 101] batch."""
    from loupe.analyses import REGISTRY, Inputs
    from loupe.analyses.head_scores import _bos_id, _candidate_vocab  # the analysis' own token choice
    from loupe.analyses.scores import repeated_random_tokens

    model = bench.loupe_model
    spec = REGISTRY["head_scores"]
    params = spec.params(seq_len=50, batch=10, seed=0)
    tokens = repeated_random_tokens(_candidate_vocab(model), params.batch, params.seq_len, _bos_id(model), params.seed)

    def loupe() -> None:
        with model.lock:
            spec.fn(model, params, Inputs())

    reps = bench.repetitions(5)
    log(f"head scores: {reps} repetitions")
    times = interleaved({"hf": lambda: bench.hf_forward(tokens), "loupe": loupe}, reps, warmup=0 if bench.quick else 1)
    return [versus("head scores (seq 50, batch 10)", times, "loupe", "hf", HEAD_SCORES_TARGET, "bare HF forward")]
