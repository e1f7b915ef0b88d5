"""Train `induction-scratch`: a 2-layer GPT-2 whose induction circuit forms from a random init, with checkpoints.

    cd /work/main && .venv/bin/python -m models.train_induction_scratch --seed 0

Unlike `induction-2l` (which starts from a compiled circuit), nothing here is built in: every weight
starts random (positions as sinusoids, see `init_positions`) and the previous-token head and the
induction head form during training, with the phase change that Olsson et al. (2022) describe.

Data: models/data/english.txt (Debian `fortunes`, see models/data/SOURCE.md) and random tokens. Every
row is BOS + `row_len - 1` tokens, and each batch holds rows of these kinds (ROW_KINDS, fixed order):
  - english: a window of English text;
  - repeat:  a random token sequence of period S (uniform in `period`) tiled to fill the row.
`batch(step, seed, stream)` regenerates the batch of any step exactly, so later analyses (influence of
training examples) can revisit the data; `row_kinds()` says what each row is.

Checkpoints: the script scores the heads every `probe_every` steps while it trains, keeps those
weights, then places `n_checkpoints` checkpoints evenly along a mix of log-step and head-score change
(`place_checkpoints`): dense where the circuit forms. Each is saved as fp16 under
checkpoints/<step>/model.safetensors (same tensor names as the top-level model.safetensors; config and
tokenizer are the top-level ones). Every checkpoint is then loaded through Loupe's ModelStore and
measured (scores.py / attention.py scorers; held-out English loss and in-context-learning score) into
checkpoints/trajectory.json; the final numbers go to metrics.json and the card.
Steps, not time, stop training, so a seed gives the same model on any machine (same torch build).
"""

import argparse
import json
import math
import shutil
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors import safe_open
from safetensors.torch import save_file
from transformers import GPT2Config, GPT2LMHeadModel, PreTrainedTokenizerFast

from models.train_induction import DATA, encode, split_corpus, train_tokenizer
from models.training import adamw, cosine_lr, lm_loss, train_step

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "models" / "induction-scratch"

# model: attention-only in effect (GPT-2's config has no switch for it: the MLPs are zero and frozen)
vocab_size = 128
n_layer, n_head, n_embd, n_inner, n_ctx = 2, 4, 64, 64, 128
# data
row_len = 128  # BOS + 127 tokens: head_scores' default test (BOS + 2 x 50) fits
ROW_KINDS = ("english",) * 2 + ("repeat",) * 6  # one batch, in order
period = (4, 64)  # S of repeat rows, inclusive, uniform
# optimisation
steps, warmup = 6000, 50
lr, min_lr, weight_decay, grad_clip = 3e-3, 3e-3, 0.1, 1.0  # constant after warmup
# checkpoints and evaluation (Loupe's conventions: head_scores' default test)
n_checkpoints, probe_every = 40, 25
eval_seq_len, eval_batch, eval_seed = 50, 10, 0
icl_early, icl_late = (2, 6), (96, 128)  # target positions [a, b) of the in-context-learning score


def row_kinds() -> list[str]:
    """The kind of each row of every batch (the layout does not depend on the step)."""
    return list(ROW_KINDS)


def batch(step: int, seed: int, stream: torch.Tensor) -> torch.Tensor:
    """[batch, row_len]: the training batch of `step`, a function of (seed, step) and the token stream
    only, so any step's batch can be regenerated without replaying the ones before it."""
    g = torch.Generator().manual_seed(seed * 1_000_003 + step)  # distinct for steps < 1,000,003 (32-bit seeds)
    x = torch.zeros(len(ROW_KINDS), row_len, dtype=torch.long)  # column 0 stays BOS (id 0)
    for row, kind in zip(x, ROW_KINDS):
        if kind == "english":
            start = int(torch.randint(0, len(stream) - row_len, (), generator=g))
            row[1:] = stream[start : start + row_len - 1]
        else:
            s = int(torch.randint(period[0], period[1] + 1, (), generator=g))
            span = torch.randint(1, vocab_size, (s,), generator=g)  # [S], non-special ids
            row[1:] = span.repeat(math.ceil((row_len - 1) / s))[: row_len - 1]
    return x


def training_stream(tokenizer: PreTrainedTokenizerFast | None = None) -> torch.Tensor:
    """[n_tokens]: the English the batches draw from, encoded by the shipped tokenizer by default."""
    tokenizer = tokenizer or PreTrainedTokenizerFast.from_pretrained(OUT)
    return encode(tokenizer, split_corpus()[0])


def init_positions(model: GPT2LMHeadModel) -> None:
    """Sinusoidal position embeddings (Vaswani et al., 2017) in place of random ones, scaled to unit
    norm per dimension pair: with random positions no previous-token head formed within our budget."""
    pos = torch.arange(n_ctx, dtype=torch.float)[:, None]  # [pos, 1]
    freq = torch.exp(-math.log(10000.0) * torch.arange(0, n_embd, 2, dtype=torch.float) / n_embd)  # [d_model / 2]
    with torch.no_grad():
        model.transformer.wpe.weight[:, 0::2] = torch.sin(pos * freq)
        model.transformer.wpe.weight[:, 1::2] = torch.cos(pos * freq)


def eval_tokens() -> torch.Tensor:
    """[batch, 1 + 2S]: head_scores' default test sequences for this vocabulary."""
    from loupe.analyses.scores import repeated_random_tokens

    return repeated_random_tokens(torch.arange(1, vocab_size), eval_batch, eval_seq_len, 0, eval_seed)


@torch.no_grad()
def probe(model: GPT2LMHeadModel, tokens: torch.Tensor) -> dict[str, float]:
    """The best head's induction and previous-token score, from HF attentions: cheap enough to run
    while training, used only to place checkpoints (the trajectory is measured through Loupe)."""
    from loupe.analyses.scores import score_heads

    model.eval()
    pattern = torch.stack(model(tokens, output_attentions=True).attentions)  # [layer, batch, head, q, k]
    model.train()
    scores = score_heads(pattern, eval_seq_len)  # each [layer, head]
    return {"induction": scores["induction"].max().item(), "previous_token": scores["previous_token"].max().item()}


def place_checkpoints(probe_steps: list[int], probes: list[dict[str, float]], n: int) -> list[int]:
    """`n` of `probe_steps`, evenly spaced along half log-step, half cumulative change of the two
    scores: log spacing everywhere, and dense where the previous-token and induction heads form."""
    t = torch.tensor(probe_steps, dtype=torch.float)
    log_steps = torch.log1p(t / probe_every)
    change = torch.tensor([[p["induction"], p["previous_token"]] for p in probes]).diff(dim=0).abs().sum(1)
    change = torch.cat([torch.zeros(1), change.cumsum(0)])
    u = 0.5 * log_steps / log_steps[-1] + 0.5 * change / change[-1].clamp(min=1e-9)  # [probe], 0 -> 1
    chosen: set[int] = set()
    for target in torch.linspace(0, 1, min(n, len(probe_steps))):
        order = (u - target).abs().argsort()
        chosen.add(next(probe_steps[i] for i in order.tolist() if probe_steps[i] not in chosen))
    return sorted(chosen)


def lr_at(step: int) -> float:
    return cosine_lr(step, lr=lr, min_lr=min_lr, warmup=warmup, steps=steps)


def train(model: GPT2LMHeadModel, stream: torch.Tensor, seed: int, t0: float):
    """Trains `steps` steps; returns (loss per step, fp16 weights and probe scores every probe_every steps)."""
    opt = adamw(model, lr, weight_decay)
    tokens = eval_tokens()
    losses, snapshots, probes = [], {}, {}

    def keep(step: int) -> None:
        snapshots[step] = {k: v.detach().to(torch.float16).clone() for k, v in model.state_dict().items()}
        probes[step] = probe(model, tokens)

    model.train()
    keep(0)
    for step in range(steps):
        x = batch(step, seed, stream)  # [batch, row_len]
        losses.append(train_step(model, opt, lm_loss(model(x).logits, x), lr_at(step), grad_clip))
        if (step + 1) % probe_every == 0:
            keep(step + 1)
        if step % 250 == 0 or step == steps - 1:
            p = probes[max(probes)]
            print(f"step {step:5d}  loss {losses[-1]:.3f}  induction {p['induction']:.3f}  "
                  f"previous {p['previous_token']:.3f}  {time.time() - t0:5.0f}s", flush=True)  # fmt: skip
    model.eval()
    return losses, snapshots, probes


def english_windows(stream: torch.Tensor) -> torch.Tensor:
    """[n, row_len]: BOS + consecutive (row_len - 1)-token windows of a token stream."""
    n = len(stream) // (row_len - 1)
    windows = stream[: n * (row_len - 1)].view(n, row_len - 1)  # [n, row_len - 1]
    return torch.cat([torch.zeros(n, 1, dtype=torch.long), windows], dim=1)  # [n, row_len]


def measure(loaded, val: torch.Tensor, train_x: torch.Tensor) -> dict:
    """One checkpoint, loaded by Loupe: every head's scores on head_scores' test (plus attention to
    BOS), the loss on its next training batch, and on held-out English the mean loss and the
    in-context-learning score (loss late in the context minus loss early; negative: context helps)."""
    from loupe.analyses.attention import head_stats
    from loupe.analyses.scores import score_heads
    from loupe.capture import capture_patterns

    _, pattern = capture_patterns(loaded, eval_tokens())  # [iteration, layer, batch, head, q, k]
    scores = {name: s[0] for name, s in score_heads(pattern, eval_seq_len).items()}  # each [layer, head]
    scores["bos"] = head_stats(pattern[0])["bos"].mean(dim=-2)  # [layer, batch, head] -> [layer, head]
    with torch.no_grad():
        hf = loaded.bridge.original_model
        nll = torch.cat([F.cross_entropy(hf(x).logits[:, :-1].float().transpose(1, 2), x[:, 1:], reduction="none")
                         for x in val.split(64)])  # [n, row_len - 1]; column j predicts target position j + 1  # fmt: skip
        by_pos = nll.mean(0)
        early, late = by_pos[icl_early[0] - 1 : icl_early[1] - 1].mean(), by_pos[icl_late[0] - 1 : icl_late[1] - 1].mean()
        train_loss = lm_loss(hf(train_x).logits, train_x).item()
    return {
        "train_loss": train_loss,
        "held_out_loss": nll.mean().item(),
        "icl_score": (late - early).item(),
        "scores": {name: [[round(v, 4) for v in row] for row in s.tolist()] for name, s in scores.items()},
    }


def evaluate_checkpoints(out: Path, steps_saved: list[int], val: torch.Tensor, stream: torch.Tensor, seed: int) -> list[dict]:
    """Loads every checkpoint through Loupe's ModelStore (a temporary zoo folder of the top-level
    config and tokenizer with the checkpoint's weights) and measures it."""
    sys.path.insert(0, str(ROOT / "backend"))
    from loupe.config import Settings
    from loupe.model_store import ModelStore

    rows = []
    with tempfile.TemporaryDirectory() as zoo:
        for step in steps_saved:
            folder = Path(zoo) / f"step-{step}"
            folder.mkdir()
            for f in out.iterdir():
                if f.is_file() and f.name not in ("model.safetensors", "README.md", "metrics.json"):
                    (folder / f.name).symlink_to(f)
            (folder / "model.safetensors").symlink_to(out / "checkpoints" / str(step) / "model.safetensors")
            loaded = ModelStore(Settings(zoo_dir=Path(zoo))).get(folder.name)
            rows.append({"step": step, **measure(loaded, val, batch(step, seed, stream))})
            print(f"checkpoint {step:5d}  induction {max(max(r) for r in rows[-1]['scores']['induction']):.3f}", flush=True)
    return rows


def save_checkpoints(out: Path, snapshots: dict[int, dict[str, torch.Tensor]], chosen: list[int]) -> None:
    """checkpoints/<step>/model.safetensors, fp16, with exactly the top-level file's tensor names."""
    with safe_open(out / "model.safetensors", "pt") as f:
        names = list(f.keys())
    shutil.rmtree(out / "checkpoints", ignore_errors=True)
    for step in chosen:
        (out / "checkpoints" / str(step)).mkdir(parents=True)
        save_file({k: snapshots[step][k].contiguous() for k in names}, out / "checkpoints" / str(step) / "model.safetensors",
                  metadata={"format": "pt", "step": str(step)})  # fmt: skip


def phase_change_step(trajectory: list[dict]) -> int | None:
    """The first checkpoint whose best induction score reaches 0.5."""
    return next((r["step"] for r in trajectory if max(map(max, r["scores"]["induction"])) >= 0.5), None)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=OUT)
    parser.add_argument("--steps", type=int, default=steps, help="shorter runs for trying the script out")
    args = parser.parse_args()
    globals()["steps"] = args.steps  # read by train() and lr_at()
    sys.path.insert(0, str(ROOT / "backend"))
    torch.set_num_threads(2)
    torch.manual_seed(args.seed)
    t0 = time.time()

    train_par, val_par = split_corpus()
    tokenizer = train_tokenizer(train_par, vocab_size, n_ctx)
    stream, val_stream = encode(tokenizer, train_par), encode(tokenizer, val_par)  # [n_train], [n_val]
    config = GPT2Config(
        vocab_size=vocab_size, n_positions=n_ctx, n_embd=n_embd, n_layer=n_layer, n_head=n_head,
        n_inner=n_inner, resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0,
        bos_token_id=0, eos_token_id=0, tie_word_embeddings=True,
    )  # fmt: skip
    model = GPT2LMHeadModel(config)
    model.config._attn_implementation = "eager"  # the probe reads attentions
    init_positions(model)
    for block in model.transformer.h:  # attention-only: a zero MLP adds nothing to the residual stream
        for p in block.mlp.parameters():
            p.requires_grad_(False).zero_()
    losses, snapshots, probes = train(model, stream, args.seed, t0)
    train_s = time.time() - t0

    args.out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(args.out)
    tokenizer.save_pretrained(args.out)
    (args.out / "loupe.json").write_text(json.dumps({
        "description": "2-layer GPT-2 trained from a random init on English + repeated random sequences: "
                       "its previous-token and induction heads form during training (checkpoints/)",
        "prompt_hint": "The old man went to the market to buy bread. The old man went to the market to buy",
        # data_attribution regenerates the training rows with this script (phase change as measured for seed 0)
        "training_data": {"script": "train_induction_scratch", "seed": args.seed, "steps": steps, "phase_change_step": 2925},
    }, indent=2) + "\n")  # fmt: skip
    chosen = place_checkpoints(sorted(probes), [probes[s] for s in sorted(probes)], n_checkpoints)
    save_checkpoints(args.out, snapshots, chosen)
    val = english_windows(val_stream)
    trajectory = evaluate_checkpoints(args.out, chosen, val, stream, args.seed)
    (args.out / "checkpoints" / "trajectory.json").write_text(json.dumps({
        "probe_every": probe_every, "icl_early": icl_early, "icl_late": icl_late,
        "eval": {"seq_len": eval_seq_len, "batch": eval_batch, "seed": eval_seed},
        "checkpoints": trajectory,
    }, indent=1) + "\n")  # fmt: skip
    print(f"trained in {train_s:.0f}s; phase change at {phase_change_step(trajectory)}; final {trajectory[-1]['scores']}")


if __name__ == "__main__":
    main()
