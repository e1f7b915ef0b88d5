"""Jobs per minute through the Redis queue with 1 and with 2 `loupe worker` processes.

    .venv/bin/python -m bench.queue [--jobs 24] [--tokens 256]

A redis-server, the web process with LOUPE_QUEUE_URL, and N workers over one SQLite file; `--jobs`
distinct `attention` analyses on the GPT-2-small-shaped benchmark model (T = `--tokens`) are posted
at once, and the clock runs from the first POST to the last one done. Each worker count runs on a
fresh queue and database, its workers started and their model loaded (one warm-up job) before the
clock starts. Each worker gets cores / workers torch threads (LOUPE_TORCH_THREADS): on a 2-core
machine two workers share the cores one worker's torch already uses, so the figure says what a
second worker buys there (what the pipeline overlaps), not what a second GPU host would.
"""

import argparse
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]


def _port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _wait(check, what: str, timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise RuntimeError(f"{what} not ready in {timeout:.0f} s")
        time.sleep(0.2)


def _settled(web: str, key: str) -> dict:
    while (view := httpx.get(f"{web}/api/analyses/{key}", timeout=30).json())["status"] in ("queued", "running"):
        time.sleep(0.1)
    if view["status"] != "done":
        raise RuntimeError(f"{key}: {view['error']}")
    return view


def throughput(workers: int, texts: list[str], model_root: Path, tmp: Path, threads: int | None = None) -> float:
    """Jobs per minute with `workers` worker processes."""
    import redis

    from .model import MODEL_ID

    procs = []
    logs = tmp / f"logs-{workers}"
    logs.mkdir()
    redis_port, web_port = _port(), _port()
    try:
        procs.append(subprocess.Popen([shutil.which("redis-server"), "--port", str(redis_port), "--save", "", "--appendonly", "no"],
                                      stdout=open(logs / "redis.log", "wb"), stderr=subprocess.STDOUT))  # fmt: skip
        url = f"redis://127.0.0.1:{redis_port}/0"
        _wait(lambda: _pings(redis, url), "redis-server")
        env = {
            **os.environ, "PYTHONPATH": str(ROOT / "backend"), "LOUPE_QUEUE_URL": url, "LOUPE_PORT": str(web_port),
            "LOUPE_DATA_DIR": str(tmp / f"data-{workers}"), "LOUPE_MODEL_DIRS": str(model_root), "LOUPE_ZOO_DIR": str(tmp / "zoo"),
            "LOUPE_HUB_MODELS": "", "LOUPE_API_TOKEN": "", "LOUPE_MAX_JOBS_PER_CLIENT": str(len(texts) + 1), "LOUPE_CLIENT_HEADER": "X-Client",
            "LOUPE_TORCH_THREADS": str(threads or max(1, (os.cpu_count() or 1) // workers)),  # the host's cores shared, not oversubscribed
        }  # fmt: skip
        web = f"http://127.0.0.1:{web_port}"
        procs.append(subprocess.Popen([sys.executable, "-m", "loupe"], cwd=ROOT, env=env, stdout=open(logs / "web.log", "wb"), stderr=subprocess.STDOUT))
        for i in range(workers):
            procs.append(subprocess.Popen([sys.executable, "-m", "loupe.cli", "worker", "--name", f"w{i}"], cwd=ROOT, env=env,
                                          stdout=open(logs / f"worker{i}.log", "wb"), stderr=subprocess.STDOUT))  # fmt: skip
        _wait(lambda: _healthy(web), "the web process")
        post = lambda text: httpx.post(f"{web}/api/analyses", json={"analysis": "attention", "model": MODEL_ID, "text": text, "wait_s": 0},  # noqa: E731
                                       headers={"X-Client": "bench"}, timeout=60).json()["id"]  # fmt: skip
        # every worker loads the model before the clock starts: one warm-up job per worker, at once
        with ThreadPoolExecutor(workers) as pool:
            list(pool.map(lambda i: _settled(web, post(f"warm-up {i} " + texts[0])), range(workers)))
        started = time.monotonic()
        with ThreadPoolExecutor(8) as pool:
            keys = list(pool.map(post, texts))
        for key in keys:
            _settled(web, key)
        return len(texts) / (time.monotonic() - started) * 60
    finally:
        for proc in reversed(procs):
            proc.terminate()
            proc.wait(timeout=30)


def _pings(redis, url: str) -> bool:
    try:
        return bool(redis.Redis.from_url(url).ping())
    except redis.ConnectionError:
        return False


def _healthy(web: str) -> bool:
    try:
        return httpx.get(f"{web}/api/health", timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.queue", description=__doc__.split("\n")[0])
    parser.add_argument("--jobs", type=int, default=24)
    parser.add_argument("--tokens", type=int, default=256)
    parser.add_argument("--threads", type=int, help="torch threads per worker (default: cores / workers)")
    args = parser.parse_args(argv)
    from transformers import AutoTokenizer

    from .model import build_model_dir, prompt

    with tempfile.TemporaryDirectory(prefix="loupe-bench-queue-") as name:
        tmp = Path(name)
        (tmp / "zoo").mkdir()
        path = build_model_dir(tmp / "dirs")
        tokenizer = AutoTokenizer.from_pretrained(path)
        texts = [prompt(tokenizer, args.tokens, seed=seed).text for seed in range(args.jobs)]
        figures = {n: throughput(n, texts, tmp / "dirs", tmp, args.threads) for n in (1, 2)}
    print(json.dumps({"name": "queue jobs per minute", "jobs": args.jobs, "tokens": args.tokens, "cores": os.cpu_count(), "threads": args.threads or "cores / workers",
                      "one_worker": round(figures[1], 1), "two_workers": round(figures[2], 1),
                      "ratio": round(figures[2] / figures[1], 2)}))  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
