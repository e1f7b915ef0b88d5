"""Train `looped-lag`: looped-add's model and task, but the Y/N verdict is trained at the last iteration only.

    cd /work/main && .venv/bin/python -m models.train_looped_lag --seed 0

Same architecture, data, optimiser and step count as `models/train_looped.py` (imported from it): 2
weight-shared Llama blocks run K=4 times, rows `BOS a+b=c?L` of 2-digit addition with the sum written
least significant digit first, half right (`Y`) and half wrong (`N`). One change: the answer digits are
trained at every early exit (weight k for iteration k, as in looped-add), the label after `?` only at
the trained exit K (weight `label_weight`). Nothing asks iterations 1..K-1 or K+1..2K to say Y or N, so
whatever the loop knows about the shown sum before (or after) K need not reach the verdict there; Loupe's
`probes` then shows the residual at `?` encoding correctness at iterations where the model's own verdict
does not. Designs tried first (same budget, measured on a dev set of training pairs, not the held-out
ones): the label on 1% or 3% of rows at every exit (verdict and probe both near chance, no gap), and
the label on every row but wrong sums only off by 1 or 10 in training (the verdict was not learned at
all in 2000 steps); see the card.

The held-out rule of train_looped.py holds: pairs with (7a + 13b) % 20 == 0 never appear in training.
The training curve is measured on training pairs (fresh shown sums); every number in the card is measured
on the held-out pairs: task accuracy and self-verification from the early exits, and Loupe's `probes`
analysis run through ModelStore on each of the 500 held-out pairs shown once with its right sum and once
with a wrong one (1000 rows). Steps, not time, stop training: a seed gives the same model.
"""

import argparse
import json
import random
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from sklearn.metrics import roc_auc_score

from models import train_looped as looped  # noqa: I001  (puts backend/ on sys.path)
from loupe.analyses.datasets import Row, addition_example
from loupe.looped_model import LoopedLlamaForCausalLM, char_tokenizer, looped_config, save_looped
from models.training import adamw, train_step

ROOT = looped.ROOT
MODEL_ID = "looped-lag"
label_weight = 0.5  # the label's loss at exit K, beside the answer loss (a mean over iterations and digits)
dev_rows, dev_seed = 1000, 777  # the training curve: training pairs only
probe_seed = 1234  # draws the wrong sums of the held-out rows Loupe probes


def held_out_rows() -> list[Row]:
    """Every held-out pair (a, b), once with its right sum (Y) and once with a wrong one (N): 1000 rows."""
    rng = random.Random(probe_seed)
    pairs = [(a, b) for a in range(10**looped.digits) for b in range(10**looped.digits) if looped.held_out(a, b)]
    return [addition_example(a, b, correct, looped.digits, rng) for a, b in pairs for correct in (True, False)]


def probe_params(times: int = 2 * looped.n_iterations):
    """Loupe's `probes` params of the card's Loupe columns: the held-out rows, 5-fold CV, 1..2K iterations."""
    from loupe.analyses.probes import ProbeParams

    rows = held_out_rows()
    return ProbeParams(dataset="rows", rows=rows, label_tokens={"Y": "Y", "N": "N"}, folds=5, seed=0, loop={"times": times})


def loss(exits: torch.Tensor, tokens: torch.Tensor, answer_mask: torch.Tensor, label_mask: torch.Tensor) -> torch.Tensor:
    """Answer digits at every exit (iteration-weighted), the label at the last exit only. exits [iteration, batch, pos, vocab]."""
    return looped.loss_fn(exits, tokens, answer_mask) + label_weight * looped.loss_fn(exits[-1:], tokens, label_mask)


def initial(seed: int) -> tuple[LoopedLlamaForCausalLM, object]:
    """The model as training starts from it (seeded weights) and the tokenizer."""
    torch.manual_seed(seed)
    tokenizer = char_tokenizer()
    config = looped_config(
        len(tokenizer), d_model=looped.d_model, n_layers=looped.n_layers, n_heads=looped.n_heads,
        d_mlp=looped.d_mlp, n_ctx=looped.n_ctx, n_iterations=looped.n_iterations,
    )  # fmt: skip
    return LoopedLlamaForCausalLM(config), tokenizer


def train(seed: int) -> tuple[LoopedLlamaForCausalLM, object, list[float], list[dict], tuple[float, float]]:
    """The trained model and tokenizer, the loss per step, the curve on training pairs, (wall, CPU) seconds."""
    model, tokenizer = initial(seed)
    rng = random.Random(seed)
    opt = adamw(model, looped.lr, looped.weight_decay)
    dev = looped.make_rows(random.Random(dev_seed), dev_rows, test=False)
    losses, curve, t0, cpu0 = [], [], time.time(), time.process_time()
    model.train()
    for step in range(looped.steps):
        tokens, answer_mask, label_mask = looped.encode_rows(tokenizer, looped.make_rows(rng, looped.batch, test=False))
        exits = model.exit_logits(tokens, looped.n_iterations)  # [iteration, batch, pos, vocab]
        step_loss = loss(exits, tokens, answer_mask, label_mask)
        losses.append(train_step(model, opt, step_loss, looped.lr_at(step), looped.grad_clip))
        if step % 250 == 0 or step == looped.steps - 1:
            model.eval()
            acc = looped.per_iteration_accuracy(model, tokenizer, dev, 2 * looped.n_iterations)
            model.train()
            curve.append({"step": step, **acc})
            print(
                f"step {step:5d}  loss {losses[-1]:.3f}  task@K {acc['task_accuracy'][looped.n_iterations - 1]:.3f}  "
                f"verify by iteration {' '.join(f'{v:.2f}' for v in acc['self_verification_accuracy'])}  "
                f"{time.time() - t0:5.0f}s",
                flush=True,
            )
    model.eval()
    return model, tokenizer, losses, curve, (time.time() - t0, time.process_time() - cpu0)


@torch.no_grad()
def verdict_detail(model, tokenizer, rows, n_it: int) -> dict[str, list[float]]:
    """Per iteration on `rows`: the share of rows the early exit calls `Y` (half are right); the accuracy of
    its Y - N logit margin cut at the best threshold for these rows (in-sample: an upper bound on what a
    recalibrated verdict would score), and the margin's AUROC. Where accuracy is low but the best threshold
    high, the verdict's threshold is off; where both are low, its margin does not carry the answer."""
    tokens, _, _ = looped.encode_rows(tokenizer, rows)
    y_id, n_id = tokenizer.convert_tokens_to_ids(["Y", "N"])
    truth = tokens[:, -1].eq(y_id).numpy()
    exits = model.exit_logits(tokens, n_it)[:, :, -2]  # [iteration, row, vocab] at `?`
    margin = exits[..., y_id] - exits[..., n_id]  # [iteration, row]
    return {
        "says_y": [round((m > 0).float().mean().item(), 4) for m in margin],
        "best_threshold": [round(best_threshold_accuracy(truth, m.numpy()), 4) for m in margin],
        "margin_auroc": [round(float(roc_auc_score(truth, m.numpy())), 4) for m in margin],
    }


def best_threshold_accuracy(truth: np.ndarray, score: np.ndarray) -> float:
    """The best accuracy of `score > t` against `truth` over all thresholds t (in-sample)."""
    order = np.argsort(-score, kind="stable")
    positives = np.concatenate([[0], np.cumsum(truth[order])])  # right rows among the top j scores
    top = np.arange(len(score) + 1)
    correct = positives + (len(score) - top - (truth.sum() - positives))  # top j called Y, the rest N
    ranked = score[order]
    cuts = np.concatenate([[True], ranked[:-1] != ranked[1:], [True]])  # no threshold splits tied scores
    return float(correct[cuts].max() / len(score))


def loupe_probes(out_dir: Path, params=None) -> dict:
    """Load the saved folder the way Loupe does (ModelStore -> TransformerBridge, per-iteration hooks)
    and run Loupe's own `probes` analysis (default: on the held-out rows at 1..2K iterations)."""
    from loupe.analyses.probes import probes
    from loupe.analyses.registry import Inputs
    from loupe.config import Settings
    from loupe.model_store import ModelStore

    loaded = ModelStore(Settings(zoo_dir=out_dir.parent, model_dirs=[], hub_models=[])).get(out_dir.name)
    with loaded.lock:
        return probes(loaded, params or probe_params(), Inputs(progress=lambda stage, fraction: None)).result.model_dump()


def curves(result: dict) -> dict[str, list[float]]:
    """The per-iteration curves of a `probes` result: probe at the last layer, best layer's probe, verdict."""
    return {
        "probe_last_layer": [row[-1] for row in result["probe_accuracy"]],
        "probe_best_layer": [max(row) for row in result["probe_accuracy"]],
        "self_verification_accuracy": result["self_verification_accuracy"],
    }


def untrained_probes(seed: int, tokenizer) -> dict[str, list[float]]:
    """The same held-out probes on the model as training starts from it: what a probe reads at `?` from
    the tokens alone (a random network's features), the floor the trained curves stand on."""
    model, _ = initial(seed)
    with tempfile.TemporaryDirectory() as tmp:
        out = save_looped(Path(tmp) / f"{MODEL_ID}-untrained", model.eval(), tokenizer)
        (out / "loupe.json").write_text(json.dumps({"loader": "looped", "n_iterations": looped.n_iterations}))
        return curves(loupe_probes(out))


def first(values: list[float], at_least: float) -> int | None:
    """The first iteration (from 1) whose value reaches `at_least`, or None."""
    return next((i + 1 for i, v in enumerate(values) if v >= at_least), None)


def model_card(m: dict) -> str:
    """models/looped-lag/README.md from the metrics."""
    held, probe, detail = m["held_out"], m["loupe_probes"], m["held_out_verdict"]
    floor, dash = m["loupe_probes_untrained"], m["loupe_probes_dashboard"]
    k, n_it, last = looped.n_iterations, 2 * looped.n_iterations, looped.n_layers - 1
    probe_last = [row[last] for row in probe["probe_accuracy"]]
    verdict = probe["self_verification_accuracy"]
    gaps = [p - v for p, v in zip(probe_last, verdict)]
    rows = []
    for i in range(n_it):
        accuracy, std = probe["probe_accuracy"][i], probe["probe_accuracy_std"][i]
        rows.append(
            f"| {i + 1}{' (trained)' if i + 1 == k else ''} | {held['task_accuracy'][i]:.3f} "
            f"| {held['self_verification_accuracy'][i]:.3f} | {detail['says_y'][i]:.2f} | {detail['best_threshold'][i]:.3f} "
            f"| {verdict[i]:.3f} | {accuracy[last]:.3f} ± {std[last]:.3f} | {max(accuracy):.3f} (L{accuracy.index(max(accuracy))}) "
            f"| {gaps[i]:+.3f} | {floor['probe_last_layer'][i]:.3f} |"
        )
    table = "\n".join(rows)
    dash_rows = "\n".join(
        f"| {name} | " + " | ".join(f"{v:.3f}" for v in dash[key]) + " |"
        for name, key in (("probe, last layer", "probe_last_layer"), ("self-verification", "self_verification_accuracy"))
    )
    tried = "\n".join(f"- {t['design']}: {t['result']}" for t in m["designs_tried"])
    h = m["hyperparameters"]
    # iterations (from 0) before K where the probe leads the verdict and stands above the untrained floor
    lead = [i for i in range(k - 1) if min(gaps[i], probe_last[i] - floor["probe_last_layer"][i]) >= 0.05]
    after = range(k, n_it)
    fmt = lambda values: ", ".join(f"{v:.3f}" for v in values)  # noqa: E731
    example = m["example"]
    return f"""# looped-lag

`looped-add`'s model and task ({m['n_params']:,} parameters: **{looped.n_layers} weight-shared Llama blocks applied
{k} times**, early exit after every iteration, {looped.digits}-digit addition and Y/N checking of shown sums), trained so
that its **verdict lags what its residual stream encodes**: the answer digits are trained at every early exit, the
Y/N label only at the trained exit K = {k}. A linear probe at `?` reads the sum's correctness at iterations where the
model itself does not say it: the probe-over-verdict gap that "Loop as a Bridge" (arXiv 2601.10242) reports for
Ouro, which `looped-add` (trained to say Y/N at every exit) does not show.
Reproduce it with `python -m models.train_looped_lag --seed {m['seed']}` (torch {m['torch']}): training took
{m['wall_time_s'] / 60:.1f} minutes on 2 CPU cores shared with other jobs ({m['cpu_time_s'] / 60:.1f} CPU-minutes, one thread).

## Task, model and training
As `looped-add` (see its card; `models/train_looped_lag.py` imports everything from `models/train_looped.py`):
character tokens, `{example['text']}{example['label']}` means {example['meaning']} (sum least significant digit first);
half the rows show the right sum (`Y`), half a wrong one (one digit changed, or off by 1 or 10: `N`). AdamW lr
{h['lr']} (warmup {h['warmup']}, cosine to {h['min_lr']}), weight decay {h['weight_decay']}, batch {h['batch']}, {h['steps']}
steps, seed {m['seed']}, d_model {h['d_model']}, {h['n_heads']} heads, MLP {h['d_mlp']}.
The one difference is the loss: the sum's digits (right rows) at every exit, weight k for iteration k, plus
{h['label_weight']} x the label's cross-entropy at `?` **at exit {k} only**. Pairs with (7a + 13b) % 20 == 0 never
appear in training; every number in the table is measured on them. The training curve in `metrics.json` is measured
on training pairs, and the design was chosen on such a set too, never on the held-out pairs.

## Per iteration (held-out pairs)
Held-out: {m['held_out_rows']} rows of held-out pairs, half with a right sum (task accuracy: every sum digit right
under greedy decoding from `a+b=`; self-verification: `Y` vs `N` logit at `?`; "says Y": the share of rows it
calls right; "best threshold": the verdict's accuracy had its Y - N margin been cut at the best threshold for
these very rows, in-sample, so it flatters the model). Loupe: the `probes` analysis run through ModelStore as the
dashboard runs it, on `held_out.jsonl`: all {probe['n_rows'] // 2} held-out pairs, each once with its right sum and once
with a wrong one (`dataset: rows, folds: 5, seed: 0, loop: {{times: {n_it}}}`): the model's verdict from the early
exit, and a logistic-regression probe on the residual at `?` (5-fold CV, mean ± std over folds) after the last
layer of each iteration, and the best layer; gap = probe (last layer) - verdict (Loupe). The last column is the
same probe on the model as training starts from it (seeded, untrained weights).

| iteration | task accuracy | self-verification | says Y | best threshold | self-verification (Loupe) | probe, last layer (Loupe) | probe, best layer | gap | probe, untrained |
|---|---|---|---|---|---|---|---|---|---|
{table}

Chance is 0.5 for verification and the probe. Iterations here count passes from 1; the dashboard indexes them
from 0 (its iteration 0 is iteration 1 here).

Reading:
- The answer does not lag: the sum is right for {held['task_accuracy'][0]:.3f} of held-out pairs after one pass and
  {held['task_accuracy'][1]:.3f} after two.
- Before K the probe leads the verdict{'' if lead else ' nowhere'}{': ' + '; '.join(f'at iteration {i + 1} by {gaps[i]:.3f} ({probe_last[i]:.3f} vs {verdict[i]:.3f})' for i in lead) if lead else ''}.
  The probe reaches 0.9 at iteration {first(probe_last, 0.9)}, the verdict at iteration {first(verdict, 0.9)}. Not a mere
  threshold: cut at its best threshold in-sample, the verdict's margin reaches only {fmt(detail['best_threshold'][i] for i in lead)}
  there; the Y - N direction does not yet carry what a linear read of the same residual finds.
- At K = {k}, the one exit where the label is trained, the two agree ({probe_last[k - 1]:.3f} vs {verdict[k - 1]:.3f}).
- Past K the residual keeps encoding correctness (probe {fmt(probe_last[i] for i in after)}) while the verdict falls
  ({fmt(verdict[i] for i in after)}; gap up to {max(gaps[k:]):.3f}). Most of it is a threshold that drifts: the model
  calls fewer and fewer sums right (says Y {fmt(detail['says_y'][i] for i in after)}), while its margin cut at the best
  threshold still scores {fmt(detail['best_threshold'][i] for i in after)}; the rest, the probe's
  {fmt(probe_last[i] - detail['best_threshold'][i] for i in after)} over that, is information the margin loses.
- The probe's {probe_last[0]:.3f} after one pass is no more than a probe reads from the tokens alone: on the untrained
  model it reads {min(floor['probe_last_layer']):.3f}-{max(floor['probe_last_layer']):.3f} at every iteration.

With the probes card's defaults instead (built-in `addition` set, 400 rows drawn from all pairs, most of them seen
in training as sums; `folds: 5, seed: 0`) and the Loop card's times at {n_it}, Loupe shows the same shape:

| iteration | {' | '.join(str(i + 1) for i in range(n_it))} |
|---|{'---|' * n_it}
{dash_rows}

What was tried first, with the same budget and seed, each measured on 1000 rows of training pairs (fresh shown
sums) with a probe like Loupe's (standardized logistic regression, 5-fold CV); that exploration code is not shipped:
{tried}

## What it shows in Loupe
- Probes: where the selected model has no probes card, the page offers "Probes: use looped-lag" under the
  model list (the probes card names this model as its own). With the Loop card's times at {n_it} (the model runs its
  trained {k} without it), the probe curve rises ahead of the verdict and stays up past K while the verdict
  falls. Upload `held_out.jsonl` from this folder as the probes dataset to reproduce the Loupe columns above.
- Attention and logit lens per iteration, as for looped-add.
"""


DESIGNS_TRIED = [
    {"design": "the label on 3% of rows (1%: the same) at every exit, the answer on every right row",
     "result": "verdict 0.54-0.59 (1%: 0.50), probe at `?` 0.57-0.60 (1%: 0.52-0.57): neither tells, no gap: "
               "with so few labels the residual at `?` does not encode correctness either"},
    {"design": "the label on every row at every exit, but wrong sums in training only off by 1 or 10",
     "result": "the label loss never left its plateau in 2000 steps: verdict 0.51-0.54, probe 0.57-0.59 "
               "even on training pairs with all kinds of wrong sums; no gap"},
]  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=ROOT / "models" / MODEL_ID)
    args = parser.parse_args()
    torch.set_num_threads(1)  # on 2 shared cores a second thread mostly waits
    model, tokenizer, losses, curve, (wall, cpu) = train(args.seed)
    k, n_it = looped.n_iterations, 2 * looped.n_iterations

    save_looped(args.out, model, tokenizer)
    description = (
        f"Looped transformer like looped-add ({looped.n_layers} weight-shared Llama blocks run {k} times; 2-digit addition "
        f"and Y/N checking of shown sums), its verdict trained at iteration {k} only: probes at `?` lead the verdict"
    )
    loupe = {"description": description, "loader": "looped", "n_iterations": k, "generating_lm": False}
    (args.out / "loupe.json").write_text(json.dumps(loupe, indent=2) + "\n")
    rows = "".join(json.dumps(row.model_dump()) + "\n" for row in held_out_rows())
    (args.out / "held_out.jsonl").write_text(rows)  # the rows of the Loupe columns, to upload in the probes card

    from loupe.analyses.probes import ProbeParams

    # what the probes card runs by default on this model, with the Loop card's times at 2K
    dashboard = {"dataset": "addition", "n": 400, "folds": 5, "seed": 0, "loop": {"times": n_it}}
    held_rows = looped.make_rows(random.Random(looped.eval_seed), looped.eval_rows, test=True)
    a, b = 23, 45
    example = addition_example(a, b, True, looped.digits, random.Random(0))
    metrics = {
        "seed": args.seed,
        "torch": torch.__version__,
        "n_params": sum(p.numel() for p in model.parameters()),
        "hyperparameters": {"steps": looped.steps, "batch": looped.batch, "lr": looped.lr, "min_lr": looped.min_lr,
                            "warmup": looped.warmup, "weight_decay": looped.weight_decay, "grad_clip": looped.grad_clip,
                            "digits": looped.digits, "n_layers": looped.n_layers, "d_model": looped.d_model,
                            "d_mlp": looped.d_mlp, "n_heads": looped.n_heads, "n_iterations": k,
                            "label_weight": label_weight, "label_exits": [k]},
        "wall_time_s": round(wall, 1),
        "cpu_time_s": round(cpu, 1),
        "final_train_loss": sum(losses[-50:]) / 50,
        "curve_rows": f"{dev_rows} rows of training pairs (seed {dev_seed})",
        "curve": curve,
        "held_out_rows": looped.eval_rows,
        "held_out": looped.per_iteration_accuracy(model, tokenizer, held_rows, n_it),
        "held_out_verdict": verdict_detail(model, tokenizer, held_rows, n_it),
        "loupe_probes_rows": f"held_out.jsonl: every held-out pair with its right sum and a wrong one (seed {probe_seed})",
        "loupe_probes": loupe_probes(args.out),
        "loupe_probes_untrained": untrained_probes(args.seed, tokenizer),
        "loupe_probes_dashboard_params": dashboard,
        "loupe_probes_dashboard": curves(loupe_probes(args.out, ProbeParams(**dashboard))),
        "designs_tried": DESIGNS_TRIED,
        "example": {**example.model_dump(), "meaning": f"{a} + {b} = {a + b}"},
    }  # fmt: skip
    (args.out / "metrics.json").write_text(json.dumps(metrics, indent=1) + "\n")
    (args.out / "README.md").write_text(model_card(metrics))

    held, probe = metrics["held_out"], metrics["loupe_probes"]
    print(f"wall time {wall:.0f}s  CPU time {cpu:.0f}s  final train loss {metrics['final_train_loss']:.3f}")
    for i in range(n_it):
        p, v = probe["probe_accuracy"][i][-1], probe["self_verification_accuracy"][i]
        print(
            f"iteration {i + 1}: task {held['task_accuracy'][i]:.3f}  self-verification {held['self_verification_accuracy'][i]:.3f}"
            f"  (Loupe {v:.3f})  probe@last layer {p:.3f}  gap {p - v:+.3f}"
        )


if __name__ == "__main__":
    main()
