"""The kept path's attention of one layer as one compiled pass (kept_attention.cpp), on the CPU.

AttentionRule.rows computes a block of query rows' probabilities with torch operations: every weight
is written out, then read again for the output, the statistics and the thumbnails, so at long T a
layer costs 2-3x SDPA's fused kernel. The kernel makes one flash-style pass over each row's visible
keys, a tile at a time, and keeps only what the analysis needs: the output, each row's log
denominator and entropy, and its largest score in each thumbnail column bin (exact: the maximum
weight of a bin is e^(that score - log Z)). The weights the statistics read (first, previous and own
key) are recomputed from the queries and keys. Same rule, same float32 math; the tests hold the two
paths to each other and to HF eager.

The kernel is compiled on first use (about 20 s on 2 cores; `make install` and the server's start
build it ahead) into TORCH_EXTENSIONS_DIR (torch's default: ~/.cache/torch_extensions), a folder per
CPU, Python and torch, rebuilt when the source changes. Where it cannot be built or loaded (no C++
compiler, a BLAS without sgemm_) or the tensors are not on the CPU, the torch rows run.
"""

import functools
import hashlib
import logging
import os
import platform
import shutil
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

import torch

from .attention_rule import AttentionRule, bins

log = logging.getLogger(__name__)

SOURCE = Path(__file__).with_name("kept_attention.cpp")
BLOCK_ROWS = 64  # query rows per task
TILE_KEYS = 512  # keys per tile: 64 x 512 float32 scores (128 KB) stay in a core's L2
AT_ROWS = 1024  # rows a block when the stats' weights are recomputed
ENABLED = True  # False: always the torch rows (tests compare the two)
STALE_LOCK_S = 600  # a build lock older than this is a killed build's (a build takes about 20 s)

_lock = threading.Lock()


def _build_key() -> str:
    """A digest of this CPU's instruction sets, Python and torch: the build is -march=native against
    torch's headers, so a build folder carried to another CPU (a data volume, a copied cache) or kept
    across a torch upgrade is never loaded, where it could fault."""
    try:
        flags = next(line for line in Path("/proc/cpuinfo").read_text().splitlines() if line.startswith(("flags", "Features")))
    except (OSError, StopIteration):
        flags = platform.processor()
    return hashlib.sha256(f"{platform.machine()} {flags} {sys.version_info[:2]} {torch.__version__}".encode()).hexdigest()[:10]


def _wait_for_lock(lock: Path) -> None:
    """Until another process' build ends (its lock file gone), or its lock is older than STALE_LOCK_S: a
    build killed midway leaves its lock behind, and torch would wait for it without end."""
    while True:
        try:
            age = time.time() - lock.stat().st_mtime
        except FileNotFoundError:
            return
        if age > STALE_LOCK_S:
            log.warning("removing %s, left by a build that stopped %d s ago", lock, age)
            lock.unlink(missing_ok=True)
            return
        time.sleep(0.5)


@functools.cache
def _build() -> ModuleType | None:
    from torch.utils.cpp_extension import get_default_build_root, load

    name = f"loupe_kept_attention_{_build_key()}"
    folder = Path(os.environ.get("TORCH_EXTENSIONS_DIR") or get_default_build_root()) / name
    here = str(Path(sys.executable).parent)  # the virtualenv's bin: pip's ninja, when PATH does not name it
    if shutil.which("ninja") is None and shutil.which("ninja", path=here) is not None:
        os.environ["PATH"] = os.pathsep.join([here, os.environ.get("PATH", "")])
    try:
        folder.mkdir(parents=True, exist_ok=True)
        _wait_for_lock(folder / "lock")
        return load(
            name=name, sources=[str(SOURCE)], build_directory=str(folder),
            extra_cflags=["-O3", "-march=native", "-fopenmp", "-fno-math-errno"], verbose=False,
        )
    except Exception as error:  # no compiler or ninja, a failed build, a symbol this torch does not export
        log.warning("Loupe's compiled kept-path attention is unavailable (%s); the torch rows are used", error)
        return None


def build_in_background() -> None:
    """Build (or load) the kernel in a thread, so the first long prompt does not wait for it: where
    analyses run (the server without a queue, a `loupe worker`)."""
    threading.Thread(target=kernel, name="loupe-kernel-build", daemon=True).start()


def kernel() -> ModuleType | None:
    """The compiled kernel, built on first use (once per process: threads wait for the one build);
    None where it cannot be had."""
    if not ENABLED:
        return None
    with _lock:
        return _build()


@dataclass
class LayerRows:
    """Every query row of one layer as the kernel summarises them (the kept path's OnRows takes it as it
    takes Rows): entropy [head, T], log_total [head, T] (log of each row's softmax denominator), and
    the largest score of each row in each of `side` column bins, [head, T, side] (-inf: none seen)."""

    query: torch.Tensor  # [head, T, d]
    key: torch.Tensor  # [kv_head, T, d]
    rule: AttentionRule
    entropy: torch.Tensor
    log_total: torch.Tensor
    score_max: torch.Tensor
    start: int = 0

    @property
    def n_pos(self) -> int:
        return self.rule.n_pos

    def at(self, key_pos: torch.Tensor) -> torch.Tensor:
        """[head, T]: each row's weight on its key key_pos [T] (0 where the row does not see it), a
        block of rows at a time (no [head, T, d] temporaries)."""
        out = self.log_total.new_empty(self.log_total.shape)
        for start in range(0, self.n_pos, AT_ROWS):
            rows = slice(start, start + AT_ROWS)
            picked = self.key[:, key_pos[rows].clamp(0, self.n_pos - 1)].repeat_interleave(self.rule.groups, 0)  # [head, n, d]
            scores = torch.linalg.vecdot(self.query[:, rows] * self.rule.scaling, picked)
            if self.rule.softcap is not None:
                scores = torch.tanh(scores / self.rule.softcap) * self.rule.softcap
            visible = (key_pos[rows] >= self.rule.lo[rows]) & (key_pos[rows] < self.rule.hi[rows])
            out[:, rows] = torch.where(visible, torch.exp(scores - self.log_total[:, rows]), 0.0)
        return out

    def column_max(self, side: int) -> torch.Tensor:
        """[head, T, side]: each row's largest weight in each column bin."""
        if side != self.score_max.shape[-1]:
            raise ValueError(f"the kernel pooled {self.score_max.shape[-1]} column bins, not {side}")
        return torch.exp(self.score_max - self.log_total[..., None])  # e^-inf = 0: a bin the row does not see


def attend(module: ModuleType, rule: AttentionRule, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, side: int) -> tuple[torch.Tensor, LayerRows]:
    """One layer through the kernel: query [head, T, d], key [kv_head, T, d], value [kv_head, T, d_v]
    (float32, CPU; any strides with each row's features contiguous, as the model's attention hands
    them over). Returns (output [T, head, d_v], the rows' summary with `side` column bins)."""
    edges = torch.tensor(bins(rule.n_pos, side), dtype=torch.long)
    sinks = torch.empty(0) if rule.sinks is None else rule.sinks.float()
    query, key, value = (x if x.stride(-1) == 1 else x.contiguous() for x in (query, key, value))
    output, log_total, entropy, score_max = module.kept_attention(
        query, key, value, rule.lo, rule.hi, rule.scaling, 0.0 if rule.softcap is None else rule.softcap, sinks,
        edges[:, 0].contiguous(), edges[:, 1].contiguous(), BLOCK_ROWS, TILE_KEYS,
    )
    return output, LayerRows(query, key, rule, entropy, log_total, score_max)


if __name__ == "__main__":  # `python -m loupe.fused`: build it now (make install, the image)
    built = kernel()
    print("compiled kept-path attention:", "ready" if built is not None else "unavailable (the torch rows will run)")
