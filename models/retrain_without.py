"""Causal check of `data_attribution` on induction-scratch: retrain from the same seed without the top-k most
influential training rows, and without k random ones, and say when (and whether) the induction head forms.

    cd /work/main && .venv/bin/python -m models.retrain_without --k 80 --n-steps 100 --steps 4000

1. Ranks the rows of `n_steps` sampled training steps (before the phase change) by their TracIn influence
   on the induction head's score, exactly as the `data_attribution` analysis does (same function).
2. Trains three models with train_induction_scratch's recipe, seed and data order: all rows (the baseline,
   which reproduces the shipped run), without the top-k rows, and without k rows drawn at random from the
   same candidates. A removed row is dropped from its batch (that step's loss averages the rows left).
   The three run in parallel processes of one thread each (torch on one thread: same numbers as the
   shipped run's, which used two, up to float reassociation).
3. Every `probe_every` steps, scores the head (head_scores' default test, scores.py) and reports the first
   step where it reaches 0.5 and 0.8, and its final score. Writes the numbers as JSON (--out).
"""

import argparse
import json
import multiprocessing
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import torch
from transformers import GPT2Config, GPT2LMHeadModel

from models import train_induction_scratch as recipe
from models.training import adamw, lm_loss, train_step

ROOT = Path(__file__).resolve().parents[1]


def rank(layer: int, head: int, n_steps: int, n_checkpoints: int, seed: int) -> list[list]:
    """[step, row, kind, influence] of every candidate row, most influential first (data_attribution)."""
    sys.path.insert(0, str(ROOT / "backend"))
    from loupe.analyses import REGISTRY, Inputs
    from loupe.analyses.data_attribution import DataAttributionParams
    from loupe.config import Settings
    from loupe.model_store import ModelStore

    model = ModelStore(Settings()).get("induction-scratch")
    params = DataAttributionParams(layer=layer, head=head, n_steps=n_steps, n_checkpoints=n_checkpoints, seed=seed)
    result = REGISTRY["data_attribution"].fn(model, params, Inputs(progress=lambda s, f: print(f"  ranking: {s}", flush=True)))
    return result.result.examples


def head_score(model: GPT2LMHeadModel, tokens: torch.Tensor, layer: int, head: int) -> float:
    from loupe.analyses.scores import score_heads

    model.eval()
    with torch.no_grad():
        pattern = model(tokens, output_attentions=True).attentions[layer]  # [batch, head, q, k]
    model.train()
    return score_heads(pattern, recipe.eval_seq_len)["induction"][head].item()


def retrain(removed: set[tuple[int, int]], steps: int, layer: int, head: int, seed: int = 0, name: str = "") -> dict:
    """train_induction_scratch's run (same init, data and schedule) without the rows in `removed`."""
    sys.path.insert(0, str(ROOT / "backend"))
    torch.set_num_threads(1)
    t0 = time.time()
    torch.manual_seed(seed)
    config = GPT2Config(
        vocab_size=recipe.vocab_size, n_positions=recipe.n_ctx, n_embd=recipe.n_embd, n_layer=recipe.n_layer,
        n_head=recipe.n_head, n_inner=recipe.n_inner, resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0,
        bos_token_id=0, eos_token_id=0, tie_word_embeddings=True,
    )  # fmt: skip
    model = GPT2LMHeadModel(config)
    model.config._attn_implementation = "eager"
    recipe.init_positions(model)
    for block in model.transformer.h:
        for p in block.mlp.parameters():
            p.requires_grad_(False).zero_()
    stream, tokens = recipe.training_stream(), recipe.eval_tokens()
    opt = adamw(model, recipe.lr, recipe.weight_decay)
    trajectory = [(0, head_score(model, tokens, layer, head))]
    model.train()
    for step in range(steps):
        x = recipe.batch(step, seed, stream)  # [batch, row_len]
        keep = [r for r in range(len(x)) if (step, r) not in removed]
        x = x[keep]
        train_step(model, opt, lm_loss(model(x).logits, x), recipe.lr_at(step), recipe.grad_clip)
        if (step + 1) % recipe.probe_every == 0:
            trajectory.append((step + 1, head_score(model, tokens, layer, head)))
        if (step + 1) % 500 == 0:
            print(f"  {name} step {step + 1}: score {trajectory[-1][1]:.3f}  {time.time() - t0:.0f}s", flush=True)
    reach = {f"steps_to_{t}": next((s for s, v in trajectory if v >= t), None) for t in (0.5, 0.8)}
    return {**reach, "final_score": round(trajectory[-1][1], 4), "removed": len(removed),
            "trajectory": [[s, round(v, 4)] for s, v in trajectory]}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--k", type=int, default=80)
    parser.add_argument("--n-steps", type=int, default=100, help="sampled training steps whose rows are candidates")
    parser.add_argument("--n-checkpoints", type=int, default=6)
    parser.add_argument("--steps", type=int, default=recipe.steps, help="training steps of each retrain")
    parser.add_argument("--layer", type=int, default=1)
    parser.add_argument("--head", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0, help="seed of the sampled steps and of the random k")
    parser.add_argument("--out", type=Path, default=ROOT / "models" / "induction-scratch" / "retrain_without.json")
    parser.add_argument("--random-seeds", type=lambda v: [int(x) for x in v.split(",")], default=[0], help="e.g. 0,1,2")
    parser.add_argument("--runs", type=lambda v: v.split(","), default=None, help="only these runs (names as in the report)")
    parser.add_argument("--ranking", type=Path, help="a JSON file: the ranking is read from it if it exists, else written to it")
    args = parser.parse_args()
    sys.path.insert(0, str(ROOT / "backend"))
    torch.set_num_threads(2)
    t0 = time.time()
    if args.ranking and args.ranking.is_file():
        ranked = json.loads(args.ranking.read_text())
    else:
        ranked = rank(args.layer, args.head, args.n_steps, args.n_checkpoints, args.seed)
        if args.ranking:
            args.ranking.write_text(json.dumps(ranked))
    print(f"ranked {len(ranked)} rows in {time.time() - t0:.0f}s", flush=True)
    top = {(s, r) for s, r, _, _ in ranked[: args.k]}
    rands = {}
    for seed in args.random_seeds:  # a k-row random draw from the same candidates per seed
        g = torch.Generator().manual_seed(seed)
        rands[seed] = {(ranked[i][0], ranked[i][1]) for i in torch.randperm(len(ranked), generator=g)[: args.k].tolist()}
    report = {"k": args.k, "candidates": len(ranked), "n_checkpoints": args.n_checkpoints, "steps": args.steps,
              "head": f"L{args.layer}H{args.head}",
              "top_kinds": {kind: sum(1 for e in ranked[: args.k] if e[2] == kind) for kind in dict.fromkeys(recipe.row_kinds())},
              "candidate_kinds": {kind: sum(1 for e in ranked if e[2] == kind) for kind in dict.fromkeys(recipe.row_kinds())},
              "top_influence_sum": sum(e[3] for e in ranked[: args.k]),
              "random_influence_sum": {f"seed_{seed}": sum(e[3] for e in ranked if (e[0], e[1]) in rand) for seed, rand in rands.items()},
              "runs": {}}  # fmt: skip
    runs = {"baseline": set(), "without_top_k": top, **{f"without_random_k_seed_{seed}": rand for seed, rand in rands.items()}}
    runs = {name: removed for name, removed in runs.items() if not args.runs or name in args.runs}
    with ProcessPoolExecutor(len(runs), mp_context=multiprocessing.get_context("spawn")) as pool:
        from models.retrain_without import retrain as by_name  # picklable however this script was started

        futures = {name: pool.submit(by_name, removed, args.steps, args.layer, args.head, 0, name) for name, removed in runs.items()}
        for name, future in futures.items():
            run = report["runs"][name] = future.result()
            print(f"{name:17s} 0.5 at {run['steps_to_0.5']}  0.8 at {run['steps_to_0.8']}  final {run['final_score']}  "
                  f"{time.time() - t0:.0f}s", flush=True)  # fmt: skip
    args.out.write_text(json.dumps(report, indent=1) + "\n")


if __name__ == "__main__":
    main()
