"""Background computation: a bounded pool of worker threads, single flight per key, fair queueing.

Identical requests share one computation (one future per key). Jobs wait in one queue per client
and workers take them round-robin across clients, so one client's flood delays another client's
job by at most the jobs already running. A client may have at most `max_per_client` jobs queued
or running; past that `submit` raises TooManyJobs (429). The runner knows nothing of what a job
computes or where its result goes: it runs `fn(progress)` and resolves the future.
"""

import logging
import threading
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass

from . import progress as job_progress
from .errors import TooManyJobs
from .progress import Progress

log = logging.getLogger(__name__)

Job = Callable[[Progress], None]


@dataclass
class _Entry:
    key: str
    client: str
    fn: Job
    progress: Progress
    future: Future


class JobRunner:
    remote = False  # jobs run in this process (redis_jobs.RedisJobRunner: on workers)

    def __init__(self, max_jobs: int, max_per_client: int, timeout_s: float | None = None):
        self.timeout_s = timeout_s
        self.max_per_client = max_per_client
        self._lock = threading.Condition()
        self._inflight: dict[str, _Entry] = {}  # key -> queued or running entry
        self._queues: dict[str, deque[_Entry]] = {}  # client -> its queued entries, in arrival order
        self._last_turn: dict[str, int] = {}  # client -> pick number of its latest started job (while it has one in flight)
        self._picks = 0
        self._closed = False
        self.computed = 0  # how many jobs actually ran (single flight is measurable)
        self._workers = [
            threading.Thread(target=self._work, name=f"loupe-job-{i}", daemon=True) for i in range(max_jobs)
        ]
        for worker in self._workers:
            worker.start()

    def submit(self, key: str, fn: Job, client: str = "", on_new: Callable[[], None] = lambda: None, payload: dict | None = None) -> Future:
        """The future of `key`'s job, starting one only if none is in flight (then `on_new` runs first,
        under the runner's lock, so it happens before any worker can run the job). `payload` is for a
        runner in other processes (redis_jobs); this one runs `fn`."""
        with self._lock:
            if (entry := self._inflight.get(key)) is not None:
                return entry.future
            mine = sum(e.client == client for e in self._inflight.values())
            if mine >= self.max_per_client:
                raise TooManyJobs(
                    f"This client already has {mine} analyses queued or running (LOUPE_MAX_JOBS_PER_CLIENT); "
                    "wait for one to finish.",
                    retry_after=5,
                )
            on_new()
            entry = _Entry(key, client, fn, Progress(timeout_s=self.timeout_s), Future())
            self._inflight[key] = entry
            self._queues.setdefault(client, deque()).append(entry)
            self._lock.notify()
            return entry.future

    def _next(self) -> _Entry | None:
        """The next job, round-robin over clients (caller holds the lock); None when closed."""
        while not self._closed:
            if self._queues:
                client = self._turn_order()[0]  # least recently served; never served (or idle since) first
                queue = self._queues[client]
                entry = queue.popleft()
                if not queue:
                    del self._queues[client]
                self._picks += 1
                self._last_turn[client] = self._picks
                return entry
            self._lock.wait()
        return None

    def _turn_order(self) -> list[str]:
        """Clients with queued jobs, in the order round-robin serves them (caller holds the lock)."""
        return sorted(self._queues, key=lambda client: self._last_turn.get(client, 0))

    def _work(self) -> None:
        while True:
            with self._lock:
                entry = self._next()
                if entry is None:
                    return
                self.computed += 1
            if not entry.future.set_running_or_notify_cancel():
                continue
            entry.progress.start()
            token = job_progress.current.set(entry.progress)
            try:
                entry.fn(entry.progress)
            except BaseException as exc:  # the job records its own failures; this is the last guard
                log.exception("job %s raised", entry.key)
                entry.future.set_exception(exc)
            else:
                entry.future.set_result(None)
            finally:
                job_progress.current.reset(token)
                with self._lock:
                    self._inflight.pop(entry.key, None)
                    if not any(e.client == entry.client for e in self._inflight.values()):
                        self._last_turn.pop(entry.client, None)  # idle again: its next job is a newcomer's

    def progress(self, key: str) -> dict | None:
        """{"stage", "percent", "queue_position"} for an in-flight job, else None. The position
        counts the jobs that round-robin will start before this one."""
        with self._lock:
            entry = self._inflight.get(key)
            if entry is None:
                return None
            position = 0
            if entry.progress.stage == "queued" and entry.client in self._queues:
                mine = list(self._queues[entry.client]).index(entry)
                clients = self._turn_order()
                turn = clients.index(entry.client)
                position = mine + sum(
                    min(len(self._queues[c]), mine + (1 if i < turn else 0)) for i, c in enumerate(clients) if c != entry.client
                )
            return {**entry.progress.public(), "queue_position": position}

    def in_flight(self) -> set[str]:
        """Keys queued or running here (none at start-up: this runner dies with its process)."""
        with self._lock:
            return set(self._inflight)

    def shutdown(self) -> None:
        """Stop taking jobs; queued ones are cancelled (their rows are marked interrupted at next start)."""
        with self._lock:
            self._closed = True
            for queue in self._queues.values():
                for entry in queue:
                    entry.future.cancel()
            self._queues.clear()
            self._lock.notify_all()
