"""Rows against a real `python -m loupe` subprocess: memory, end to end, stored size, head slice.

One fresh server serves them all, in that order: its first long analysis is the memory row (peak
RSS growth of a process that has only loaded the model), and the analyses it stores are the ones
the slice and share-link rows read back.
"""

import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx

from tests.server import Server  # the test suite's real-server harness

from .context import Bench, log
from .model import MODEL_ID, N_HEAD, N_LAYER
from .rows import Row, interleaved, median, versus

E2E_TARGET = 1.6
STORED_TARGET = 0.5
SLICE_MS_TARGET = 50.0
SLICE_BYTES_TARGET = 1.1e6
MEMORY_TARGET = 1.5
COMPACT_FORMAT = "stored"


def fp16_bytes(n_tokens: int, n_layers: int = N_LAYER, n_heads: int = N_HEAD) -> int:
    """Raw float16 size of every head's full [T, T] pattern."""
    return n_layers * n_heads * n_tokens * n_tokens * 2


@contextmanager
def loupe_server(bench: Bench, name: str) -> Iterator[Server]:
    data_dir = bench.workdir / name
    server = Server(bench.server_env(data_dir), bench.workdir / f"{name}.log")
    try:
        server.wait_healthy(timeout=120)
        server.data_dir = data_dir
        yield server
    finally:
        server.stop()


def analyse(server: Server, text: str, model: str = MODEL_ID) -> dict:
    """POST an attention analysis and wait until it is stored; the final analysis view."""
    body = {"analysis": "attention", "model": model, "text": text, "wait_s": 900}
    view = httpx.post(f"{server.url}/api/analyses", json=body, timeout=1000).raise_for_status().json()
    while view["status"] in ("queued", "running"):
        time.sleep(0.05)
        view = httpx.get(f"{server.url}/api/analyses/{view['id']}", timeout=60).raise_for_status().json()
    if view["status"] != "done":
        raise RuntimeError(f"analysis failed: {view.get('error')}")
    return view


def _status_kib(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise KeyError(field)


class PeakRss:
    """Peak RSS of a process over a block: the kernel's high-water mark (VmHWM, reset through
    /proc/<pid>/clear_refs), cross-checked by sampling VmRSS every 2 ms."""

    def __init__(self, pid: int):
        self.pid = pid
        self.sampled = 0
        self._stop = threading.Event()

    def __enter__(self) -> "PeakRss":
        try:
            Path(f"/proc/{self.pid}/clear_refs").write_text("5")
            self.hwm_reset = True
        except OSError:
            self.hwm_reset = False
        self.before = _status_kib(self.pid, "VmRSS") * 1024
        self.thread = threading.Thread(target=self._sample, daemon=True)
        self.thread.start()
        return self

    def _sample(self) -> None:
        while not self._stop.is_set():
            self.sampled = max(self.sampled, _status_kib(self.pid, "VmRSS") * 1024)
            time.sleep(0.002)

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self.thread.join()
        self.peak = max(self.sampled, _status_kib(self.pid, "VmHWM") * 1024 if self.hwm_reset else 0)

    @property
    def growth(self) -> int:
        return self.peak - self.before


def pattern_bytes(server: Server, analysis_id: str) -> tuple[int, int]:
    """(bytes of what makes the patterns: the stored patterns, or the kept queries, keys and rules;
    bytes of the thumbnail blobs) of one analysis."""
    with sqlite3.connect(server.data_dir / "loupe.db") as db:
        sizes = dict(
            db.execute("SELECT name, SUM(LENGTH(data)) FROM blob WHERE analysis_id = ? GROUP BY name", (analysis_id,))
        )
    return sum(size for name, size in sizes.items() if name != "thumbnail"), sizes.get("thumbnail", 0)


def memory_and_end_to_end(bench: Bench, server: Server) -> list[Row]:
    """Memory (the fresh server's first long analysis), end to end, stored size. The id of the
    stored T-token analysis is left in bench.stored_analysis for the slice and share-link rows."""
    n_tokens = bench.long
    log("server: loading the model (short analysis)")
    analyse(server, bench.text(16, seed=99))
    log(f"memory: one T={n_tokens} analysis in the fresh server")
    with PeakRss(server.process.pid) as rss:
        view = analyse(server, bench.text(n_tokens, seed=100))
    bench.stored_analysis = view["id"]
    memory = Row(
        f"memory T={n_tokens}",
        rss.growth,
        fp16_bytes(n_tokens),
        "B",
        MEMORY_TARGET,
        baseline_name="fp16 of all patterns",
        extra={"RSS before": f"{rss.before / 2**20:.0f} MiB", "peak RSS": f"{rss.peak / 2**20:.0f} MiB"},
    )
    stored, thumbs = pattern_bytes(server, view["id"])
    stored_row = Row(
        f"stored size T={n_tokens}",
        stored,
        fp16_bytes(n_tokens),
        "B",
        STORED_TARGET,
        baseline_name="raw fp16",
        extra={"thumbnails": f"{thumbs / 1024:.0f} KiB", "fp32 (issue)": f"{2 * fp16_bytes(n_tokens) / 1e6:.0f} MB"},
    )

    reps = bench.repetitions(5)
    texts = iter([bench.text(n_tokens, seed=200 + i) for i in range(reps)])  # each new: never cached
    token_sets = iter([bench.tokens(n_tokens, seed=200 + i) for i in range(reps)])
    log(f"attention end to end T={n_tokens}: {reps} repetitions")
    times = interleaved(
        {"hf": lambda: bench.hf_forward(next(token_sets)), "post": lambda: analyse(server, next(texts))},
        reps,
        warmup=0,
        settle_s=0.5,  # the baseline runs in this process, the analysis in the server's
    )
    end_to_end = versus(f"attention end to end T={n_tokens}", times, "post", "hf", E2E_TARGET, "bare HF forward")
    return [end_to_end, stored_row, memory]


def slice_formats(server: Server) -> list[str]:
    """The `format` values GET .../attention offers, read from the server's OpenAPI schema."""
    schema = httpx.get(f"{server.url}/openapi.json", timeout=30).raise_for_status().json()
    for path, item in schema["paths"].items():
        if path.endswith("/attention") and "get" in item:
            for parameter in item["get"].get("parameters", []):
                if parameter["name"] == "format":
                    return list(parameter["schema"].get("enum", ["json"]))
    return ["json"]


def head_slice(bench: Bench, server: Server, analysis_id: str) -> list[Row]:
    """GET one head's pattern from the cache in every format the server offers; p50 latency and
    bytes on the wire. The targets bind `stored`, the compact format the page reads (the stored
    zlib bytes as they are); `json` and `u16` (the uncompressed matrix) are reported beside it.
    The baseline latency is GET /api/health: the HTTP round trip with no work behind it."""
    n_tokens = bench.long
    heads = [(layer, head) for layer in range(N_LAYER) for head in range(N_HEAD)]
    formats = slice_formats(server)
    state = dict.fromkeys(formats, 0)
    sizes: dict[str, int] = {}

    with httpx.Client(base_url=server.url, timeout=120) as client:

        def get(fmt: str):
            def call() -> None:
                layer, head = heads[(7 * state[fmt]) % len(heads)]  # a different head each time
                state[fmt] += 1
                response = client.get(f"/api/analyses/{analysis_id}/attention", params={"layer": layer, "head": head, "format": fmt})
                response.raise_for_status()
                sizes[fmt] = response.num_bytes_downloaded  # on the wire (after any Content-Encoding)
                sizes[fmt + "_body"] = len(response.content)

            return call

        def health() -> None:
            client.get("/api/health").raise_for_status()

        reps = bench.repetitions(25)
        log(f"head slice T={n_tokens}: formats {formats}, {reps} repetitions ({max(1, reps // 4)} for json)")
        ms: dict[str, list[float]] = {}
        for fmt in formats:
            times = interleaved({"health": health, fmt: get(fmt)}, max(1, reps // 4) if fmt == "json" else reps, warmup=1)
            ms[fmt] = [t * 1000 for t in times[fmt]]
            ms.setdefault("health", []).extend(t * 1000 for t in times["health"])
    rows = []
    for fmt in formats:
        compact = fmt == COMPACT_FORMAT
        limit_ms, limit_bytes = (SLICE_MS_TARGET, SLICE_BYTES_TARGET) if compact else (None, None)
        note = "" if compact else f"reference: the targets bind format={COMPACT_FORMAT}, which the page reads"
        rows.append(
            Row(f"head slice p50 T={n_tokens} ({fmt})", median(ms[fmt]), median(ms["health"]), "ms", limit_ms, "value",
                baseline_name="GET /api/health", note=note)
        )
        rows.append(
            Row(f"head slice bytes T={n_tokens} ({fmt})", sizes[fmt], n_tokens * n_tokens * 2, "B", limit_bytes, "value",
                baseline_name="raw fp16 head", extra={"body after decoding": f"{sizes[fmt + '_body'] / 1e6:.2f} MB"}, note=note)
        )
    return rows
