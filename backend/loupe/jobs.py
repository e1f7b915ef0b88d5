"""Background computation of analyses: a bounded worker pool, single flight per key, progress.

Identical requests share one computation (one future per content key). Jobs beyond LOUPE_MAX_JOBS
wait in a queue whose position is reported; progress is kept in memory, results in the ResultCache.
"""

import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field

from .db.cache import BlobData, ResultCache
from .errors import AppError, JobTimeout

log = logging.getLogger(__name__)

Compute = Callable[["Progress"], tuple[dict, list[BlobData]]]


@dataclass
class Progress:
    """Where a job stands; the compute function updates it through `__call__`.

    Each update is also the job's checkpoint for its time limit: past `timeout_s` of running,
    the next update raises JobTimeout, which ends the job cleanly.
    """

    timeout_s: float | None = None
    stage: str = "queued"
    fraction: float = 0.0
    started: float = field(default_factory=time.monotonic)

    def start(self) -> None:
        self.stage, self.started = "running", time.monotonic()

    def __call__(self, stage: str, fraction: float) -> None:
        self.stage, self.fraction = stage, max(0.0, min(1.0, fraction))
        if self.timeout_s is not None and time.monotonic() - self.started > self.timeout_s:
            raise JobTimeout(f"The analysis ran longer than the {self.timeout_s:g} s limit (stage {stage!r}).")

    def public(self) -> dict:
        return {"stage": self.stage, "percent": round(100 * self.fraction, 1)}


class JobRunner:
    def __init__(self, cache: ResultCache, max_jobs: int, timeout_s: float | None = None):
        self.cache = cache
        self.timeout_s = timeout_s
        self.pool = ThreadPoolExecutor(max_workers=max_jobs, thread_name_prefix="loupe-job")
        self._lock = threading.Lock()
        self._futures: dict[str, Future] = {}
        self._progress: dict[str, Progress] = {}
        self._order: list[str] = []  # keys in submission order, for queue positions
        self.computed = 0  # how many computations actually ran (single-flight is measurable)

    def submit(self, key: str, compute: Compute, on_new: Callable[[], None] = lambda: None) -> Future:
        """The future computing `key`, starting one only if none is in flight (then `on_new` runs first)."""
        with self._lock:
            if key in self._futures:
                return self._futures[key]
            on_new()
            progress = Progress(timeout_s=self.timeout_s)
            future = self.pool.submit(self._run, key, compute, progress)
            self._futures[key], self._progress[key] = future, progress
            self._order.append(key)
            future.add_done_callback(lambda _f, key=key: self._finished(key))
            return future

    def _run(self, key: str, compute: Compute, progress: Progress) -> None:
        if (row := self.cache.get(key)) is not None and row.status == "done":
            return  # finished by a job that ended between the caller's cache check and this submit
        progress.start()
        self.cache.set_status(key, "running")
        with self._lock:
            self.computed += 1
        try:
            result, blobs = compute(progress)
        except JobTimeout as exc:
            self.cache.fail(key, exc.body())
            raise
        except AppError:  # bad input found while computing: nothing to keep
            self.cache.forget(key)
            raise
        except Exception as exc:
            log.exception("analysis %s failed", key)
            self.cache.fail(key, {"error": f"The analysis failed: {type(exc).__name__}.", "code": "analysis_failed", "status": 500})
            raise
        progress.stage, progress.fraction = "storing", 1.0
        self.cache.store(key, result, blobs)

    def _finished(self, key: str) -> None:
        with self._lock:
            self._futures.pop(key, None)
            self._progress.pop(key, None)
            if key in self._order:
                self._order.remove(key)

    def progress(self, key: str) -> dict | None:
        """{"stage", "percent", "queue_position"} for an in-flight job, else None."""
        with self._lock:
            progress = self._progress.get(key)
            if progress is None:
                return None
            ahead = [k for k in self._order[: self._order.index(key)] if self._progress[k].stage == "queued"]
            return {**progress.public(), "queue_position": len(ahead) if progress.stage == "queued" else 0}

    def shutdown(self) -> None:
        self.pool.shutdown(wait=False, cancel_futures=True)
