"""Analyses computed by worker processes through a Redis queue (RQ), when LOUPE_QUEUE_URL is set.

The web process enqueues and never loads a model; `loupe worker` processes (each on its own
LOUPE_DEVICE) take jobs and compute them through the same RunService path as the in-process runner,
storing into the shared database. What the in-process JobRunner promises holds across processes:
- single flight: a job's RQ id is its content key, enqueued with `unique=True`, so identical requests
  from any number of web processes make one job;
- the per-client cap: a Redis set holds each client's in-flight keys;
- progress and queue position: a worker publishes its job's Progress every second under a key that
  expires in BEAT_TTL_S, which is also the job's heartbeat; a queued job's position is its place in
  the RQ list;
- a killed worker: its job's heartbeat stops, and a web process marks the analysis `interrupted`
  (results are written in one transaction at the end, so nothing partial is stored) and drops the job.

Why RQ: one Redis list per queue and plain functions as jobs, no broker beyond Redis, a worker class
that computes in its own process (SimpleWorker: a model loaded once stays loaded, and CUDA never
meets fork()), and atomic unique job ids for single flight.
"""

import json
import logging
import re
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future

from redis import Redis, RedisError
from rq import Queue, SimpleWorker, get_current_job
from rq.exceptions import DuplicateJobError, NoSuchJobError
from rq.job import Job, JobStatus
from rq.registry import StartedJobRegistry

from . import fused
from . import progress as job_progress
from .errors import AnalysisFailed, AppError, Interrupted, TooManyJobs, WorkersBusy
from .progress import Progress

log = logging.getLogger(__name__)

QUEUE = "loupe"
QUICK = "loupe-quick"  # requests answered while a client waits (token counts): workers take these first
QUICK_WAIT_S = 10.0  # the longest a quick request waits for a worker
BEAT_S = 1.0  # how often a worker publishes its job's progress
BEAT_TTL_S = 10  # a job whose progress is older than this has lost its worker
START_GRACE_S = 2.0  # a started job with no heartbeat key yet: its worker may be about to write the first
WATCH_S = 0.25  # how often the web process looks at the jobs it waits on
COMPUTED = "loupe:computed"  # how many jobs workers actually ran (single flight is measurable)
FINISHED = (JobStatus.FINISHED, JobStatus.FAILED, JobStatus.STOPPED, JobStatus.CANCELED)

LOST = "The worker computing this analysis stopped (killed or lost); nothing of it was stored. Submit it again."


class QueueUnavailable(RuntimeError):
    """LOUPE_QUEUE_URL does not answer: the process refuses to start, naming it (password masked)."""


def connect(url: str) -> Redis:
    """A Redis client for the queue at `url`, checked to answer; else QueueUnavailable."""
    shown = re.sub(r"//[^@/]*@", "//***@", url)
    try:
        redis = Redis.from_url(url, socket_connect_timeout=5)
        redis.ping()
    except (RedisError, ValueError) as error:
        raise QueueUnavailable(f"the queue at {shown} (LOUPE_QUEUE_URL) does not answer: {error}") from None
    return redis


def _beat(key: str) -> str:
    return f"loupe:beat:{key}"


def _client(client: str) -> str:
    return f"loupe:client:{client}"


def _fetch(redis: Redis, key: str) -> Job | None:
    try:
        return Job.fetch(key, connection=redis)
    except NoSuchJobError:
        return None


class RedisJobRunner:
    """The web side: JobRunner's interface (submit, progress, shutdown) over an RQ queue, and
    `call` for quick requests a worker answers while the client waits.

    `lost(key, error_body)` stores the failure of a job whose worker died (RunService passes
    ResultCache.fail_active, which leaves a finished row alone)."""

    def __init__(self, url: str, max_per_client: int, timeout_s: float, lost: Callable[[str, dict], None]):
        self.redis = connect(url)
        self.queue = Queue(QUEUE, connection=self.redis)
        self.quick = Queue(QUICK, connection=self.redis)
        self.max_per_client, self.timeout_s, self.lost = max_per_client, timeout_s, lost
        self._futures: dict[str, Future] = {}
        self._silent: dict[str, float] = {}  # started job -> when it was first seen with no heartbeat
        self._lock = threading.Lock()
        self._closed = threading.Event()
        self._watcher = threading.Thread(target=self._watch, name="loupe-queue-watch", daemon=True)
        self._watcher.start()

    remote = True

    def call(self, fn: str, *args: object, wait_s: float = QUICK_WAIT_S) -> object:
        """fn(*args)'s return value, computed by a worker (one free within `wait_s`, else WorkersBusy);
        an AppError it returns as {"error": body} is raised here."""
        job = self.quick.enqueue(fn, *args, result_ttl=60, failure_ttl=60, job_timeout=int(wait_s) + 60)
        deadline = time.monotonic() + wait_s
        try:
            while time.monotonic() < deadline:
                status = job.get_status()
                if status == JobStatus.FINISHED:
                    value = job.return_value()
                    if isinstance(value, dict) and set(value) == {"error"}:
                        raise AppError.from_body(value["error"])
                    return value
                if status in FINISHED:
                    raise AnalysisFailed(f"The worker failed to answer ({status}); see its log.")
                time.sleep(0.02)
            job.cancel()
            raise WorkersBusy(f"No worker was free within {wait_s:g} s: every worker is computing an analysis. Try again shortly.")
        finally:
            job.delete()

    @property
    def computed(self) -> int:
        return int(self.redis.get(COMPUTED) or 0)

    def submit(self, key: str, fn: object, client: str = "", on_new: Callable[[], None] = lambda: None, payload: dict | None = None) -> Future:
        """The future of `key`'s job, enqueueing it unless it is in flight (here or from any other
        web process); `on_new` runs before the job is enqueued. `fn` is the in-process runner's
        closure and is not used: a worker computes from `payload` (analysis, model, text, params)."""
        with self._lock:
            if (future := self._futures.get(key)) is not None:
                return future
            if not self._in_flight(key):
                self._check_cap(client)
                on_new()
                try:
                    self._enqueue(key, payload, client)
                except DuplicateJobError:
                    pass  # another web process enqueued it a moment ago: wait on that one
            future = self._futures[key] = Future()
            return future

    def _in_flight(self, key: str) -> bool:
        job = _fetch(self.redis, key)
        if job is None:
            return False
        if job.get_status(refresh=False) in FINISHED:
            job.delete()  # an earlier run's record; this request starts over
            return False
        return True

    def _check_cap(self, client: str) -> None:
        members = [m.decode() for m in self.redis.smembers(_client(client))]
        stale = [key for key in members if not self.redis.exists(Job.key_for(key))]
        if stale:
            self.redis.srem(_client(client), *stale)
        mine = len(members) - len(stale)
        if mine >= self.max_per_client:
            raise TooManyJobs(
                f"This client already has {mine} analyses queued or running (LOUPE_MAX_JOBS_PER_CLIENT); wait for one to finish.",
                retry_after=5,
            )

    def _enqueue(self, key: str, payload: dict | None, client: str) -> None:
        self.queue.enqueue(
            execute, key, payload, client,
            job_id=key, unique=True, description=f"{payload['analysis']} on {payload['model']}" if payload else key,
            job_timeout=int(self.timeout_s) + 120,  # the job stops itself at timeout_s (Progress); this is the backstop
            result_ttl=0, failure_ttl=3600,
        )  # fmt: skip
        self.redis.sadd(_client(client), key)

    def progress(self, key: str) -> dict | None:
        """{"stage", "percent", "queue_position"} for an in-flight job, else None."""
        if (beat := self.redis.get(_beat(key))) is not None:
            return {**json.loads(beat), "queue_position": 0}
        job = _fetch(self.redis, key)
        if job is None or job.get_status(refresh=False) != JobStatus.QUEUED:
            return None
        position = self.queue.get_job_position(key)
        return {"stage": "queued", "percent": 0.0, "queue_position": position or 0}

    def in_flight(self) -> set[str]:
        """Keys of every job queued or running on any worker (read at start-up by RunService.recover)."""
        started = StartedJobRegistry(queue=self.queue).get_job_ids()
        return set(self.queue.get_job_ids()) | set(started)

    # ---- watching ------------------------------------------------------------------------

    def _watch(self) -> None:
        """Resolve the futures of finished jobs, and mark jobs whose worker died as interrupted."""
        while not self._closed.wait(WATCH_S):
            try:
                self._reap_lost()
                with self._lock:
                    waiting = list(self._futures)
                for key in waiting:
                    job = _fetch(self.redis, key)
                    if job is None or job.get_status(refresh=False) in FINISHED:
                        if job is not None and job.get_status(refresh=False) == JobStatus.FAILED:
                            self._lose(key, job, "The worker failed outside the analysis; see its log.")
                        with self._lock:
                            self._futures.pop(key).set_result(None)
            except Exception:  # the watcher outlives a Redis hiccup
                log.exception("watching the queue failed")

    def _reap_lost(self) -> None:
        """Jobs a worker started whose heartbeat key has expired (BEAT_TTL_S of silence): that worker
        is gone. A job is in the started registry a moment before its first beat, so a missing key
        counts once this process has seen it missing for START_GRACE_S."""
        registry = StartedJobRegistry(queue=self.queue)
        started = set(registry.get_job_ids())
        for key in list(self._silent):
            if key not in started:
                del self._silent[key]
        for key in started:
            if self.redis.exists(_beat(key)):
                self._silent.pop(key, None)
                continue
            since = self._silent.setdefault(key, time.monotonic())
            if time.monotonic() - since > START_GRACE_S and (job := _fetch(self.redis, key)) is not None:
                registry.remove_executions(job)
                self._lose(key, job, LOST)

    def _lose(self, key: str, job: Job, message: str) -> None:
        log.warning("analysis %s interrupted: %s", key, message)
        self.lost(key, Interrupted(message).body())
        client = job.args[2] if len(job.args) > 2 else ""
        self.redis.srem(_client(client), key)
        job.delete()

    def shutdown(self) -> None:
        """Stop watching; queued jobs stay in Redis for the workers (they outlive a web restart)."""
        self._closed.set()
        self._watcher.join(timeout=2)
        self.redis.close()


# ---- the worker side ---------------------------------------------------------------------------

_service = None  # the worker process' RunService, built on its first job


def _worker_service():
    global _service
    if _service is None:
        from .config import get_settings
        from .db.cache import ResultCache
        from .db.engine import init_db, make_engine
        from .model_store import ModelStore
        from .runs import RunService

        settings = get_settings()
        _service = RunService(settings, ModelStore(settings), ResultCache(init_db(make_engine(settings.sqlalchemy_url))), None)
    return _service


def execute(key: str, payload: dict, client: str) -> None:
    """An RQ job: plan the request again (the worker's own registry and models), compute and store
    it under `key`, publishing progress meanwhile. Failures are stored like the in-process runner's."""
    service = _worker_service()
    redis = get_current_job().connection
    progress = Progress(timeout_s=service.settings.job_timeout_s)
    progress.start()
    stop = threading.Event()

    def beat() -> None:
        while True:
            redis.set(_beat(key), json.dumps(progress.public()), ex=BEAT_TTL_S)
            if stop.wait(BEAT_S):
                return

    beating = threading.Thread(target=beat, name="loupe-beat", daemon=True)
    beating.start()
    token = job_progress.current.set(progress)
    try:
        try:
            run = service.plan(payload["analysis"], payload["model"], payload["text"], payload["params"])
        except AppError as exc:  # the worker cannot plan what the web process planned (its models differ)
            service.cache.fail(key, exc.body())
            return
        if run.key != key:
            service.cache.fail(key, Interrupted(
                "This worker computes a different key for the request: it runs another Loupe version or model revision than the web process."
            ).body())  # fmt: skip
            return
        redis.incr(COMPUTED)
        service.execute(run, progress)
    finally:
        job_progress.current.reset(token)
        stop.set()
        beating.join()
        redis.delete(_beat(key))
        redis.srem(_client(client), key)


def count_tokens(model_id: str, text: str, truncate: bool) -> dict:
    """A quick job: RunService.tokens on this worker's models; an AppError as {"error": body}."""
    try:
        return _worker_service().tokens(model_id, text, truncate)
    except AppError as exc:
        return {"error": exc.body()}


def work(url: str, name: str | None = None) -> None:
    """Run a worker until it is stopped: jobs one at a time, in this process (models stay loaded).
    Settings, database and model store are set up before the first job."""
    redis = connect(url)
    _worker_service()
    fused.build_in_background()
    queues = [Queue(QUICK, connection=redis), Queue(QUEUE, connection=redis)]  # quick requests first
    worker = SimpleWorker(queues, connection=redis, name=name)
    worker.work(with_scheduler=False)
