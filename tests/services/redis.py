"""A throwaway redis-server for the queue tests: Debian's binary on a free port, no persistence."""

import shutil
import subprocess
import time
from contextlib import contextmanager
from pathlib import Path

import redis

from ..server import free_port


@contextmanager
def redis_server(log_path: Path):
    """Yield the URL of a fresh redis-server, stopped at the end."""
    binary = shutil.which("redis-server")
    if binary is None:
        raise RuntimeError("redis-server is not installed: `make services` installs Debian's redis-server.")
    port = free_port()
    with open(log_path, "ab") as log:
        process = subprocess.Popen(
            [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"], stdout=log, stderr=subprocess.STDOUT
        )
        url = f"redis://127.0.0.1:{port}/0"
        try:
            deadline = time.monotonic() + 20
            while True:
                try:
                    redis.Redis.from_url(url).ping()
                    break
                except redis.ConnectionError:
                    if process.poll() is not None or time.monotonic() > deadline:
                        raise RuntimeError(f"redis-server did not start: {log_path.read_text()[-2000:]}") from None
                    time.sleep(0.05)
            yield url
        finally:
            process.terminate()
            process.wait(timeout=10)
