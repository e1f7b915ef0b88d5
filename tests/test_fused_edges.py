"""The compiled kept-path attention (kept_attention.cpp) at its edges: tiny prompts, one-row blocks
and one-key tiles, intervals that start late, running maxima that climb by large steps across tiles,
GQA with value heads wider than key heads read in place from [T, head, d], sinks far above every
score, NaN scores; and the build and call around it (a build lock that goes stale while waited on, the GIL)."""

import math
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import torch

from loupe import fused
from loupe.analyses.attention import StreamedStats
from loupe.attention_rule import AttentionRule
from loupe.codec import KeptAttention

from .test_fused import check, kernel  # noqa: F401 (kernel: the fixture)


def reference(query, key, value, rule):
    """float64 eager attention of a rule: (probabilities [head, q, k], output [q, head, d_v])."""
    groups = rule.groups
    key, value = key.double().repeat_interleave(groups, 0), value.double().repeat_interleave(groups, 0)
    scores = query.double() @ key.transpose(-1, -2) * rule.scaling
    if rule.softcap is not None:
        scores = torch.tanh(scores / rule.softcap) * rule.softcap
    pos = torch.arange(rule.n_pos)
    allowed = (pos[None] >= rule.lo[:, None]) & (pos[None] < rule.hi[:, None])
    scores = scores.masked_fill(~allowed, -math.inf)
    if rule.sinks is None:
        probs = scores.softmax(-1)
    else:
        sinks = rule.sinks.double().view(-1, 1, 1).expand(-1, scores.shape[1], 1)
        probs = torch.cat([scores, sinks], -1).softmax(-1)[..., :-1]
    return probs, (probs @ value).transpose(0, 1)


def check_rule(kernel, monkeypatch, query, key, value, rule, rows, keys, tolerance=1e-5):
    """test_fused.check against float64 eager attention of the rule."""
    check(kernel, monkeypatch, rule, query, key, value, reference(query, key, value, rule)[0], rows, keys, tolerance)


def intervals(name: str, n_pos: int) -> tuple[torch.Tensor, torch.Tensor]:
    pos = torch.arange(n_pos)
    return {
        "causal": (torch.zeros_like(pos), pos + 1),
        "sliding window 5": ((pos - 4).clamp(min=0), pos + 1),
        "chunks of 13": (pos // 13 * 13, pos + 1),
        "bidirectional window 4": ((pos - 3).clamp(min=0), (pos + 4).clamp(max=n_pos)),
        # every other row sees only its own key: a tile holds visible keys for some rows of a block, none for others
        "late and early rows": (torch.where(pos % 2 == 0, pos, 0), pos + 1),
    }[name]


@pytest.mark.parametrize("n_pos", [1, 2, 3])
@pytest.mark.parametrize("rows, keys", [(1, 1), (64, 512)])
def test_prompts_of_one_to_three_tokens(kernel, monkeypatch, n_pos, rows, keys):
    generator = torch.Generator().manual_seed(n_pos)
    query, key, value = (torch.randn(2, n_pos, 4, generator=generator) * 2 for _ in range(3))
    for lo, hi in ((torch.zeros(n_pos, dtype=torch.long), torch.arange(1, n_pos + 1)), (torch.zeros(n_pos, dtype=torch.long), torch.full((n_pos,), n_pos))):
        check_rule(kernel, monkeypatch, query, key, value, AttentionRule(0.5, 1, lo, hi), rows, keys)


@pytest.mark.parametrize("mask_name", ["causal", "sliding window 5", "chunks of 13", "bidirectional window 4", "late and early rows"])
@pytest.mark.parametrize("extra", ["plain", "softcap and sinks"])
@pytest.mark.parametrize("rows, keys", [(1, 1), (3, 5), (7, 16)])
def test_gqa_of_four_with_wider_values_read_in_place(kernel, monkeypatch, mask_name, extra, rows, keys):
    """8 query heads on 2 key heads, values of 24 for keys of 16, every tensor a [head, T, d] view of a
    [T, head, d] projection (strided heads and rows), T = 45 over 32 overlapping column bins."""
    n_pos, generator = 45, torch.Generator().manual_seed(45)
    query = torch.randn(n_pos, 8, 16, generator=generator).transpose(0, 1) * 2
    key = torch.randn(n_pos, 2, 16, generator=generator).transpose(0, 1) * 2
    value = torch.randn(n_pos, 2, 24, generator=generator).transpose(0, 1)
    lo, hi = intervals(mask_name, n_pos)
    softcap, sinks = (2.5, torch.randn(8, generator=generator) * 3) if extra != "plain" else (None, None)
    check_rule(kernel, monkeypatch, query, key, value, AttentionRule(0.25, 4, lo, hi, softcap, sinks), rows, keys)


@pytest.mark.parametrize("step", [1.0, 30.0, 100.0])
@pytest.mark.parametrize("rows, keys", [(1, 1), (16, 8)])
def test_a_running_maximum_that_climbs_by_large_steps_across_tiles(kernel, monkeypatch, step, rows, keys):
    """Key j scores step * j: every tile raises each row's maximum, by up to 800 (the earlier sums shrink
    to 0), and one late key far above a falling row."""
    n_pos = 40
    pos = torch.arange(n_pos)
    query = torch.ones(1, n_pos, 1)
    key = (pos.float() * step / 8).view(1, n_pos, 1)
    value = torch.randn(1, n_pos, 3, generator=torch.Generator().manual_seed(0))
    rule = AttentionRule(8.0, 1, torch.zeros(n_pos, dtype=torch.long), pos + 1)
    check_rule(kernel, monkeypatch, query, key, value, rule, rows, keys, tolerance=2e-5)
    falling = -pos.float().view(1, n_pos, 1)
    falling[0, -1] = 500.0
    check_rule(kernel, monkeypatch, query, falling, value, AttentionRule(1.0, 1, rule.lo, rule.hi), rows, keys)


def test_the_entropy_keeps_its_precision_under_large_logits(kernel):
    """Scores of about 3,000, each exact in float32 (3000 + j/8 for j mod 8): the entropy is summed as
    p (s - running max), not as log Z - sum p s, where two numbers of 3,000 would cancel to float32's 2e-4."""
    n_pos = 64
    query = torch.ones(1, n_pos, 1)
    key = (3000 + (torch.arange(n_pos) % 8) / 8).float().view(1, n_pos, 1)
    rule = AttentionRule(1.0, 1, torch.zeros(n_pos, dtype=torch.long), torch.arange(1, n_pos + 1))
    _, got = fused.attend(kernel, rule, query, key, key, n_pos)
    want, _ = reference(query, key, key, rule)
    assert (got.entropy.double() - -torch.special.xlogy(want, want).sum(-1)).abs().max() < 2e-6


@pytest.mark.parametrize("sink", [80.0, 100.0, 200.0])
def test_a_sink_far_above_every_score_leaves_finite_stats(kernel, sink):
    """A head whose sink outweighs every key by more than e^88 (float32's largest): its rows put ~0 on
    every key, so their entropy is ~0 and log Z is the sink's logit, as the torch rows compute them."""
    n_pos = 9
    generator = torch.Generator().manual_seed(0)
    query, key, value = (torch.randn(1, n_pos, 4, generator=generator) for _ in range(3))
    rule = AttentionRule(1.0, 1, torch.zeros(n_pos, dtype=torch.long), torch.arange(1, n_pos + 1), None, torch.tensor([sink]))
    output, got = fused.attend(kernel, rule, query, key, value, n_pos)
    assert torch.isfinite(got.log_total).all() and (got.log_total - sink).abs().max() < 1e-3
    assert torch.isfinite(got.entropy).all() and got.entropy.abs().max() < 1e-6
    assert output.abs().max() < 1e-6 and got.column_max(n_pos).max() < 1e-30
    stats = StreamedStats(n_pos)
    stats.add(0, 0, got)
    assert not any(value.isnan().any() for value in stats.stacked(1).values())


def test_a_nan_score_reaches_the_output_as_in_eager(kernel):
    """A NaN key (a broken model): eager attention's rows that see it are NaN; the kernel must not
    quietly weigh it e^-64 and hand the next layer finite numbers."""
    n_pos = 20
    generator = torch.Generator().manual_seed(4)
    query, key, value = (torch.randn(1, n_pos, 4, generator=generator) for _ in range(3))
    key[0, 5, 0] = math.nan
    rule = AttentionRule(1.0, 1, torch.zeros(n_pos, dtype=torch.long), torch.arange(1, n_pos + 1))
    output, _ = fused.attend(kernel, rule, query, key, value, n_pos)
    _, want = reference(query, key, value, rule)
    assert torch.equal(output.isnan().any(-1), want.isnan().any(-1))  # rows 5.. NaN, rows 0..4 finite


def test_one_row_whose_row_stride_is_arbitrary(kernel):
    """T = 1: the row dimension has size 1, so its stride means nothing (torch may leave it 1 or 0 in a
    tensor it calls contiguous); the kernel must not refuse it."""
    query = torch.randn(2 * 4).as_strided((2, 1, 4), (4, 1, 1))
    key, value = (torch.randn(2 * 4).as_strided((2, 1, 4), (4, 0, 1)) for _ in range(2))
    assert query.is_contiguous()
    rule = AttentionRule(1.0, 1, torch.zeros(1, dtype=torch.long), torch.ones(1, dtype=torch.long))
    output, got = fused.attend(kernel, rule, query, key, value, 1)
    assert torch.allclose(output[0], value[:, 0]) and (got.entropy == 0).all()


@pytest.mark.parametrize("mask_name", ["sliding window 5", "late and early rows"])
def test_streamed_stats_and_thumbnails_of_the_kernel_equal_the_torch_rows(kernel, monkeypatch, mask_name):
    """StreamedStats.add and KeptAttention.pool take LayerRows as they take Rows: the same head stats
    and thumbnails, with GQA, soft-capping and sinks."""
    monkeypatch.setattr(fused, "BLOCK_ROWS", 4)
    monkeypatch.setattr(fused, "TILE_KEYS", 8)
    n_pos, generator = 50, torch.Generator().manual_seed(5)
    query, key = torch.randn(4, n_pos, 8, generator=generator) * 2, torch.randn(2, n_pos, 8, generator=generator) * 2
    value = torch.randn(2, n_pos, 8, generator=generator)
    lo, hi = intervals(mask_name, n_pos)
    rule = AttentionRule(0.3, 2, lo, hi, 3.0, torch.randn(4, generator=generator))
    _, layer_rows = fused.attend(kernel, rule, query, key, value, 32)
    compiled_stats, compiled_kept = StreamedStats(n_pos), KeptAttention(1)
    compiled_stats.add(0, 0, layer_rows)
    compiled_kept.pool(0, 0, layer_rows)
    plain_stats, plain_kept = StreamedStats(n_pos), KeptAttention(1)
    for start in range(0, n_pos, 16):
        rows = rule.rows(query[:, start : start + 16], key.repeat_interleave(2, 0), start)
        plain_stats.add(0, 0, rows)
        plain_kept.pool(0, 0, rows)
    want = plain_stats.stacked(1)
    for stat, got in compiled_stats.stacked(1).items():
        assert (got - want[stat]).abs().max() < 1e-5, stat
    assert (compiled_kept.pooled[0, 0] - plain_kept.pooled[0, 0]).abs().max() < 1e-6


def test_the_kernel_lets_other_threads_run(kernel):
    """A layer at long T takes seconds; the job threads share the server's process, so the call must
    release the GIL as torch's own operations do, or the event loop stalls for the whole layer. The main
    thread wakes every 2 ms: holding the GIL, the call would let it wake once at most while it runs."""
    n_pos, n_heads, d = 4096, 8, 64
    query, key, value = (torch.randn(n_heads, n_pos, d) for _ in range(3))
    rule = AttentionRule(d**-0.5, 1, torch.zeros(n_pos, dtype=torch.long), torch.arange(1, n_pos + 1))
    fused.attend(kernel, rule, query, key, value, 32)  # warm
    started, done = threading.Event(), threading.Event()

    def run() -> None:
        started.set()
        fused.attend(kernel, rule, query, key, value, 32)
        done.set()

    worker = threading.Thread(target=run)
    worker.start()
    started.wait()
    wakes = 0
    while not done.is_set():
        time.sleep(0.002)
        wakes += not done.is_set()
    worker.join()
    assert wakes >= 5, f"the main thread ran {wakes} times during the call"


def test_a_build_lock_that_goes_stale_while_waited_on_is_not_waited_on_forever(tmp_path):
    """Another process starts the build (a fresh lock) and is killed: torch's FileBaton waits for the
    lock without end, holding fused._lock, so every later kept-path job of this process would hang too.
    Past STALE_LOCK_S the wait ends (here the compiler then fails at once: None)."""
    env = {**os.environ, "CXX": "/bin/false", "TORCH_EXTENSIONS_DIR": str(tmp_path), "PYTHONPATH": str(Path(fused.__file__).parents[1])}
    code = (
        "import os; from loupe import fused; fused.STALE_LOCK_S = 2;"
        "folder = fused.Path(os.environ['TORCH_EXTENSIONS_DIR']) / f'loupe_kept_attention_{fused._build_key()}';"
        "folder.mkdir(); (folder / 'lock').touch();"  # fresh: a build that began a moment ago, then its process died
        "print('kernel', fused.kernel())"
    )
    try:
        run = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=40)
    except subprocess.TimeoutExpired:
        pytest.fail("kernel() still waited on a lock 40 s old (STALE_LOCK_S = 2)")
    assert run.returncode == 0, run.stderr
    assert "kernel None" in run.stdout and "left by a build that stopped" in run.stderr
