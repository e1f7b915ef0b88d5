"""Long-context rows (issue 14): attention on Llama-shaped (RoPE) models up to T = 32,768, each
against a baseline measured in the same run.

    .venv/bin/python -m bench.long_context [--quick] [--only head,e2e,small] [--lengths 1024,4096] [--reps N]

One fresh `python -m loupe` (LOUPE_MAX_TOKENS=32768) serves both models of bench/model.py: LLAMA
(GPT-2 small's size, 8,192 positions) and SMALL_LLAMA (4 layers, d_model 256, 32,768 positions).
- head, T = 8,192 on LLAMA, first in the fresh server: its peak RSS growth during its first long
  analysis against a bare SDPA forward's own growth in a fresh process (<= 1.5x); the bytes that
  analysis stored against fp16 of all its patterns (<= 0.05x); p50 of GET .../attention/tile (the
  overview the page draws, size 1024) over 8 random heads (<= 300 ms); two whole heads (format=u16)
  against HF's eager attention on the same tokens (<= 1e-4); the share link's paint (<= 2 s).
- e2e, T = 1,024, 4,096, 8,192 on LLAMA: POST /api/analyses (attention, waited for) on a fresh text
  every repetition against a bare HF SDPA forward of the same tokens in this process (<= 1.3x).
- small, T = 32,768 on SMALL_LLAMA: end to end (<= 1.3x) and the tile's p50 (report).
--quick: T = 128 everywhere, one repetition. A row the server cannot serve yet (no tile endpoint,
or a length whose every pattern the server would store) comes out pending, saying why.
"""

import argparse
import dataclasses
import json
import os
import random
import sqlite3
import subprocess
import sys
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

import httpx

from .context import ROOT, Bench, log
from .eager import EAGER_CHUNK, eager_patterns, eager_reference_check
from .model import LLAMA, SMALL_LLAMA, LlamaShape, build_llama_dir, prompt
from .paint import PAINT_TARGET, share_link_paint
from .rows import Row, attempt, from_dict, interleaved, median, pending, spread, table, versus
from .server import PeakRss, analyse, fp16_bytes, loupe_server

E2E_TARGET = 1.3
STORED_TARGET = 0.05
SERVED_MS_TARGET = 300.0
EXACT_TARGET = 1e-4
RSS_TARGET = 1.5
TILE_SIZE = 1024  # the overview the page draws
# Without the tile endpoint the server stores every pattern: the "before" figures stop at
# 4,096 (+3.5 GB RSS); 8,192 would need about four times that, on a machine shared with others.
STORED_PATH_MAX_T = 4096
SECTIONS = ("head", "e2e", "small")
SMALL = " (small Llama)"
NO_TILES = "the server has no GET /api/analyses/{id}/attention/tile yet"


@dataclass
class LongBench(Bench):
    """A Bench (workdir, repetitions, cleanup, server env) serving the Llama-shaped models."""

    e2e_lengths: list[int] = field(default_factory=list)
    head_length: int | None = None  # T of the head section (default 8,192; 128 when quick)
    tiles: bool = False  # whether the server serves .../attention/tile (set once it is up)
    _hf: dict = field(default_factory=dict)

    @property
    def head_t(self) -> int:
        return self.head_length or (128 if self.quick else 8192)

    @property
    def small_t(self) -> int:
        return 128 if self.quick else SMALL_LLAMA.n_ctx

    @cached_property
    def model_dirs(self) -> Path:
        root = self.workdir / "models"
        for shape in (LLAMA, SMALL_LLAMA):
            log(f"building the random-init Llama {shape.name}")
            build_llama_dir(root, shape)
        return root

    def server_env(self, data_dir: Path) -> dict[str, str]:
        return {
            **super().server_env(data_dir),
            "LOUPE_DEFAULT_MODEL": LLAMA.id,
            "LOUPE_MAX_TOKENS": str(SMALL_LLAMA.n_ctx),
            "LOUPE_SYNC_WAIT_S": "1800",
            "LOUPE_JOB_TIMEOUT_S": "3600",
        }

    def hf(self, shape: LlamaShape):
        """The bare transformers model of `shape`, SDPA attention, loaded once."""
        if shape.name not in self._hf:
            from transformers import AutoModelForCausalLM

            self._hf[shape.name] = AutoModelForCausalLM.from_pretrained(self.model_dirs / shape.name, attn_implementation="sdpa").eval()
        return self._hf[shape.name]

    @cached_property
    def tokenizer(self):
        """Both models' tokenizer (the same BPE; SMALL_LLAMA's id space is only padded less)."""
        from transformers import AutoTokenizer

        return AutoTokenizer.from_pretrained(self.model_dirs / LLAMA.name)

    def text(self, n_tokens: int, seed: int = 0) -> str:
        return prompt(self.tokenizer, n_tokens, seed).text

    def tokens(self, n_tokens: int, seed: int = 0):
        """[1, n_tokens]: BOS and the text's ids, as Loupe tokenizes it (checked against each result)."""
        import torch

        ids = [self.tokenizer.bos_token_id, *self.tokenizer.encode(self.text(n_tokens, seed), add_special_tokens=False)]
        return torch.tensor([ids])


def has_tiles(server) -> bool:
    schema = httpx.get(f"{server.url}/openapi.json", timeout=30).raise_for_status().json()
    return any(path.endswith("/attention/tile") for path in schema["paths"])


def stored_path_why(shape: LlamaShape, n_tokens: int) -> str:
    gb = shape.n_layers * shape.n_heads * n_tokens**2 * 4 / 1e9
    return f"{NO_TILES}: it would keep every pattern ({gb:.0f} GB in float32), so T > {STORED_PATH_MAX_T} is not run"


def check_tokens(view: dict, tokens) -> None:
    served = (view.get("result") or {}).get("token_ids")
    if served is not None and served != tokens[0].tolist():
        raise RuntimeError(f"the server tokenized the prompt differently ({len(served)} tokens, not {tokens.shape[1]})")


def delete(server, analysis_id: str) -> None:
    httpx.delete(f"{server.url}/api/analyses/{analysis_id}", timeout=120).raise_for_status()


def source(view: dict) -> str:
    return (view.get("result") or {}).get("pattern_source", "stored (no pattern_source)")


# ---- end to end -------------------------------------------------------------------------------------


def end_to_end(bench: LongBench, server, shape: LlamaShape, n_tokens: int, reps: int, suffix: str = "") -> tuple[Row, str | None]:
    """The row, and the id of the last analysis, kept (the others are deleted between runs)."""
    import torch

    name = f"long attention end to end T={n_tokens}{suffix}"
    if not bench.tiles and n_tokens > STORED_PATH_MAX_T:
        return pending(name, "s", E2E_TARGET, "ratio", stored_path_why(shape, n_tokens)), None
    analyse(server, bench.text(16, seed=99), shape.id)  # both models loaded and run once outside the timing
    hf = bench.hf(shape)
    with torch.inference_mode():
        hf(bench.tokens(16, seed=99), use_cache=False)
    seeds = [300 + rep for rep in range(reps)]
    texts, tokens = iter([bench.text(n_tokens, s) for s in seeds]), [bench.tokens(n_tokens, s) for s in seeds]
    token_sets, views, checked = iter(tokens), [], []

    def post() -> None:
        views.append(analyse(server, next(texts), shape.id))

    def bare() -> None:
        with torch.inference_mode():
            hf(next(token_sets), use_cache=False)

    def tidy() -> None:  # untimed: the analysis saw the baseline's tokens; the previous one goes
        for view in views[len(checked) :]:
            check_tokens(view, tokens[len(checked)])
            if checked:
                delete(server, checked[-1])
            checked.append(view["id"])

    log(f"{name}: {reps} repetitions")
    times = interleaved({"hf": bare, "post": post}, reps, warmup=0, settle_s=0.5, between=tidy)
    tidy()
    extra = {"model": shape.name, "pattern_source": source(views[-1])}
    return versus(name, times, "post", "hf", E2E_TARGET, "bare HF SDPA forward", extra), checked[-1]


# ---- one long analysis: memory, storage, tiles, exactness, paint ----------------------------------------


def head_rows(bench: LongBench, server) -> list[Row]:
    shape, n_tokens = LLAMA, bench.head_t
    names = {"rss": (f"long server RSS growth T={n_tokens}", "B", RSS_TARGET, "ratio"),
             "stored": (f"long stored bytes T={n_tokens}", "B", STORED_TARGET, "ratio"),
             "served": (f"long head served T={n_tokens}", "ms", SERVED_MS_TARGET, "value"),
             "exact": (f"long head exact T={n_tokens}", "max abs diff", EXACT_TARGET, "value"),
             "paint": (f"long share link paint T={n_tokens}", "s", PAINT_TARGET, "value")}  # fmt: skip
    if not bench.tiles and n_tokens > STORED_PATH_MAX_T:
        return [pending(*spec, stored_path_why(shape, n_tokens)) for spec in names.values()]
    log("server: loading the model (short analysis)")
    analyse(server, bench.text(16, seed=99), shape.id)
    tokens = bench.tokens(n_tokens, seed=100)
    disk_before = data_dir_bytes(server)
    log(f"server RSS: one T={n_tokens} analysis in the fresh server")
    with PeakRss(server.process.pid) as rss:
        view = analyse(server, bench.text(n_tokens, seed=100), shape.id)
    check_tokens(view, tokens)
    disk_grew = data_dir_bytes(server) - disk_before
    bare = bare_forward_growth(bench, shape, tokens)
    mib = lambda b: f"{b / 2**20:.0f} MiB"  # noqa: E731
    found = [
        Row(names["rss"][0], rss.growth, bare["growth"], "B", RSS_TARGET, baseline_name="bare SDPA forward's own, fresh process",
            extra={"server before / peak": f"{mib(rss.before)} / {mib(rss.peak)}",
                   "bare before / peak": f"{mib(bare['before'])} / {mib(bare['peak'])}", "pattern_source": source(view)}),
    ]  # fmt: skip
    size, blobs = stored_bytes(server, view["id"])
    found.append(
        Row(names["stored"][0], size, fp16_bytes(n_tokens, shape.n_layers, shape.n_heads), "B", STORED_TARGET,
            baseline_name="fp16 of all patterns",
            extra={"blobs": ", ".join(f"{k} {mib(v)}" for k, v in blobs.items()) or "none", "data dir grew": mib(disk_grew)})
    )  # fmt: skip
    found += attempt(names["served"][0], lambda: [head_served(bench, server, shape, n_tokens, view["id"])])
    found += attempt(names["exact"][0], lambda: [head_exact(bench, server, shape, tokens, view["id"])])
    if not bench.tiles and n_tokens > 512:
        found.append(pending(*names["paint"], f"the long map needs the tiles: {NO_TILES}"))
    else:
        found += attempt(names["paint"][0], lambda: share_link_paint(bench, server.url, view["id"], n_tokens, prefix="long "))
    return found


def data_dir_bytes(server) -> int:
    return sum(path.stat().st_size for path in Path(server.data_dir).rglob("*") if path.is_file())


def stored_bytes(server, analysis_id: str) -> tuple[int, dict[str, int]]:
    """(the analysis row's size_bytes: request, result and blobs as stored; blob bytes by name)."""
    with sqlite3.connect(server.data_dir / "loupe.db") as db:
        (size,) = db.execute("SELECT size_bytes FROM analysis WHERE id = ?", (analysis_id,)).fetchone()
        blobs = dict(db.execute("SELECT name, SUM(LENGTH(data)) FROM blob WHERE analysis_id = ? GROUP BY name", (analysis_id,)))
    return max(size, sum(blobs.values())), blobs


def bare_forward_growth(bench: LongBench, shape: LlamaShape, tokens) -> dict:
    """{before, peak, growth} in bytes of a fresh process' RSS around one bare SDPA forward."""
    import torch

    path = bench.workdir / "bare_tokens.pt"
    torch.save(tokens, path)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "backend"), str(ROOT)])}
    command = [sys.executable, "-m", "bench.long_context", "--bare-forward", str(bench.model_dirs / shape.name), str(path)]
    done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=3600)
    if done.returncode:
        raise RuntimeError(f"the bare forward failed: {done.stderr[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def _bare_forward(model_dir: str, tokens_path: str) -> None:
    """In a fresh process: load, one 16-token forward (as the server's short analysis before its
    measured one), then print the peak RSS growth of one forward of the tokens."""
    import torch
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(model_dir, attn_implementation="sdpa").eval()
    tokens = torch.load(tokens_path)
    with torch.inference_mode():
        model(tokens[:, :16], use_cache=False)
        with PeakRss(os.getpid()) as rss:
            model(tokens, use_cache=False)
    print(json.dumps({"before": rss.before, "peak": rss.peak, "growth": rss.growth}))


def head_served(
    bench: LongBench, server, shape: LlamaShape, n_tokens: int, analysis_id: str, suffix: str = "", limit: float | None = SERVED_MS_TARGET
) -> Row:
    """p50 of the tile the page draws first (the whole head pooled to TILE_SIZE), a new head each time."""
    name = f"long head served T={n_tokens}{suffix}"
    if not bench.tiles:
        return pending(name, "ms", limit, "value", NO_TILES)
    reps = max(2, bench.repetitions(8))
    every = [(layer, head) for layer in range(shape.n_layers) for head in range(shape.n_heads)]
    heads = iter(random.Random(n_tokens).sample(every, min(len(every), reps + 1)) * 2)
    side = min(TILE_SIZE, n_tokens)
    with httpx.Client(base_url=server.url, timeout=600) as client:

        def tile() -> None:
            layer, head = next(heads)
            response = client.get(f"/api/analyses/{analysis_id}/attention/tile", params={"layer": layer, "head": head, "size": TILE_SIZE})
            response.raise_for_status()
            if response.headers.get("X-Shape") != f"{side},{side}" or len(response.content) != side * side * 2:
                raise RuntimeError(f"tile of X-Shape {response.headers.get('X-Shape')}, {len(response.content)} bytes; expected {side},{side}")

        def health() -> None:
            client.get("/api/health").raise_for_status()

        log(f"{name}: {reps} heads")
        times = interleaved({"health": health, "tile": tile}, reps, warmup=1)
    ms = {key: [t * 1000 for t in values] for key, values in times.items()}
    return Row(name, median(ms["tile"]), median(ms["health"]), "ms", limit, "value", baseline_name="GET /api/health",
               extra={"tile": f"{side}x{side} of {n_tokens}x{n_tokens}", "spread ms": spread(ms["tile"])})  # fmt: skip


def head_exact(bench: LongBench, server, shape: LlamaShape, tokens, analysis_id: str) -> Row:
    """Two heads, served whole (format=u16), against HF's eager attention on the same tokens: a random
    one of the last layer (where differences from earlier layers have added up) and one of another."""
    n_tokens = tokens.shape[1]
    rng = random.Random(n_tokens + 1)
    heads = [(shape.n_layers - 1, rng.randrange(shape.n_heads)), (rng.randrange(shape.n_layers - 1), rng.randrange(shape.n_heads))]
    model_dir = bench.model_dirs / shape.name
    log(f"HF eager reference of {heads}")
    reference = eager_patterns(model_dir, tokens, heads, chunk=min(EAGER_CHUNK, -(-n_tokens // 4)))
    extra = {}
    if n_tokens <= 1024:  # the blocks themselves against a whole HF eager forward (output_attentions)
        extra["reference vs HF eager forward"] = eager_reference_check(model_dir, tokens, reference)
    worst = 0.0
    for layer, head in heads:
        served = served_head(server, analysis_id, layer, head, n_tokens)  # [query_pos, key_pos]
        worst = max(worst, float(abs(served - reference.pop((layer, head)).numpy()).max()))
    return Row(f"long head exact T={n_tokens}", worst, None, "max abs diff", EXACT_TARGET, "value", baseline_name="HF eager",
               extra={"heads": ", ".join(f"L{layer}H{head}" for layer, head in heads), "u16 rounding": 0.5 / 65535, **extra})  # fmt: skip


def served_head(server, analysis_id: str, layer: int, head: int, n_tokens: int):
    """[T, T] float32: the whole head as the server gives it, format=u16 (value/65535)."""
    import numpy as np

    params = {"layer": layer, "head": head, "format": "u16"}
    response = httpx.get(f"{server.url}/api/analyses/{analysis_id}/attention", params=params, timeout=600)
    if response.status_code != 200:
        raise RuntimeError(f"GET .../attention?format=u16: {response.status_code} {response.text[:300]}")
    return np.frombuffer(response.content, dtype="<u2").reshape(n_tokens, n_tokens).astype(np.float32) / np.float32(65535)


# ---- the suite ------------------------------------------------------------------------------------------


def small_rows(bench: LongBench, server) -> list[Row]:
    n_tokens = bench.small_t
    row, kept = end_to_end(bench, server, SMALL_LLAMA, n_tokens, bench.repetitions(2), SMALL)
    found = [row]
    if kept is None:
        found.append(pending(f"long head served T={n_tokens}{SMALL}", "ms", None, "value", stored_path_why(SMALL_LLAMA, n_tokens)))
    else:
        found += attempt("small head served", lambda: [head_served(bench, server, SMALL_LLAMA, n_tokens, kept, SMALL, limit=None)])
    return found


def run(
    quick: bool = False, reps: int | None = None, sections: tuple[str, ...] = SECTIONS, lengths: list[int] | None = None, head_length: int | None = None
) -> list[Row]:
    bench = LongBench(quick=quick, reps=reps, e2e_lengths=lengths or ([128] if quick else [1024, 4096, 8192]), head_length=head_length)
    found: list[Row] = []
    try:
        with loupe_server(bench, "long") as server:
            bench.tiles = has_tiles(server)
            log(f"long context: the server {'serves' if bench.tiles else 'does not serve'} attention tiles")

            def e2e_at(n_tokens: int) -> list[Row]:
                row, kept = end_to_end(bench, server, LLAMA, n_tokens, bench.repetitions(3))
                if kept is not None:
                    delete(server, kept)
                return [row]

            def e2e() -> list[Row]:
                return [row for n in bench.e2e_lengths for row in attempt(f"long e2e T={n}", lambda: e2e_at(n))]

            planned = {"head": lambda: head_rows(bench, server), "e2e": e2e, "small": lambda: small_rows(bench, server)}
            for name in SECTIONS:
                if name in sections:
                    found += attempt(f"long context {name}", planned[name])
    finally:
        bench.cleanup()
    return found


def rows(quick: bool = False) -> list[dict]:
    """The rows as dicts (bench.rows.from_dict reads them back)."""
    return [dataclasses.asdict(row) for row in run(quick)]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.long_context", description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="smoke run: T = 128, one repetition")
    parser.add_argument("--only", help=f"comma-separated sections: {', '.join(SECTIONS)}")
    parser.add_argument("--lengths", help="T of the end-to-end rows (default 1024,4096,8192)")
    parser.add_argument("--head-length", type=int, help="T of the head section (default 8192)")
    parser.add_argument("--reps", type=int, help="repetitions of every row")
    parser.add_argument("--bare-forward", nargs=2, help=argparse.SUPPRESS)  # the RSS baseline's own process
    args = parser.parse_args(argv)
    if args.bare_forward:
        _bare_forward(*args.bare_forward)
        return 0
    sections = tuple(args.only.split(",")) if args.only else SECTIONS
    if set(sections) - set(SECTIONS):
        parser.error(f"unknown sections {sorted(set(sections) - set(SECTIONS))}; known: {', '.join(SECTIONS)}")
    lengths = [int(n) for n in args.lengths.split(",")] if args.lengths else None
    found = [from_dict(dataclasses.asdict(row)) for row in run(args.quick, args.reps, sections, lengths, args.head_length)]
    print(table(found))
    for row in found:
        print(row.json())
    return 0


if __name__ == "__main__":
    sys.exit(main())
