"""A real Loupe server in a subprocess (`python -m loupe`), for crash, browser and fuzz tests."""

import os
import signal
import socket
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Server:
    def __init__(self, env: dict[str, str], log_path: Path, command: tuple[str, ...] = ("-m", "loupe")):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = log_path
        full_env = {**os.environ, "PYTHONPATH": str(ROOT / "backend"), "LOUPE_PORT": str(self.port), **env}
        self.log = open(log_path, "ab")
        self.process = subprocess.Popen(
            [sys.executable, *command], cwd=ROOT, env=full_env, stdout=self.log, stderr=subprocess.STDOUT
        )

    def wait_healthy(self, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"server exited: {self.log_path.read_text()[-2000:]}")
            try:
                if httpx.get(f"{self.url}/api/health", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                time.sleep(0.2)
        raise RuntimeError(f"server not healthy in {timeout}s: {self.log_path.read_text()[-2000:]}")

    def kill(self) -> None:
        """SIGKILL: no shutdown handlers run, as in a crash or an OOM kill."""
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(timeout=10)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.kill()
        self.log.close()


@contextmanager
def running_server(env: dict[str, str], log_path: Path):
    server = Server(env, log_path)
    try:
        server.wait_healthy()
        yield server
    finally:
        server.stop()
