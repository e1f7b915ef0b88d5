"""The Redis queue for real: a redis-server, the web process with LOUPE_QUEUE_URL and two
`loupe worker` processes over one database (SQLite, and PostgreSQL in make test's second pass). Single flight across workers, results equal to the
in-process runner's, queue positions and the per-client cap, and a worker killed mid-job."""

import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field

import httpx
import pytest
import redis
from rq import Worker

from loupe.redis_jobs import COMPUTED

from ..conftest import TINY
from ..server import Server, running_server
from ..services.redis import redis_server

pytestmark = pytest.mark.slow

TEXT = " the cat sat on the mat and the cat sat on the mat again"


@dataclass
class Cluster:
    web: str
    redis: redis.Redis
    env: dict
    logs: object
    stack: ExitStack
    server: Server
    workers: list[Server] = field(default_factory=list)

    def restart_web(self) -> None:
        """SIGKILL the web process (no shutdown runs) and start another on the same queue and database."""
        self.server.kill()
        self.server = Server(self.env, self.logs / "web2.log")
        self.stack.callback(self.server.stop)
        self.server.wait_healthy()
        self.web = self.server.url

    def start_workers(self, n: int) -> None:
        """Start `n` `loupe worker` processes (named w0, w1, …) and wait until they take jobs."""
        for i in range(len(self.workers), len(self.workers) + n):
            worker = Server(self.env, self.logs / f"worker{i}.log", command=("-m", "loupe.cli", "worker", "--name", f"w{i}"))
            self.stack.callback(worker.stop)
            self.workers.append(worker)
        deadline = time.monotonic() + 120
        while len(Worker.all(connection=self.redis)) < len(self.workers):
            log = (self.logs / "worker0.log").read_text()[-2000:]
            assert time.monotonic() < deadline and all(w.process.poll() is None for w in self.workers), log
            time.sleep(0.2)

    def post(self, body: dict, **headers: str) -> httpx.Response:
        return httpx.post(f"{self.web}/api/analyses", json={"wait_s": 0, **body}, headers=headers, timeout=60)

    def get(self, key: str) -> dict:
        return httpx.get(f"{self.web}/api/analyses/{key}", timeout=30).json()

    def until_settled(self, key: str, timeout: float = 120) -> dict:
        deadline = time.monotonic() + timeout
        while (view := self.get(key))["status"] in ("queued", "running"):
            assert time.monotonic() < deadline, f"{key} still {view['status']} after {timeout} s"
            time.sleep(0.2)
        return view

    def worker_on(self, key: str) -> Server:
        """The worker process computing `key` (waits for one to take it)."""
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            for worker in Worker.all(connection=self.redis):
                if worker.get_current_job_id() == key:
                    return self.workers[int(worker.name.removeprefix("w"))]
            time.sleep(0.05)
        raise AssertionError(f"no worker took {key}")


@contextmanager
def queued_loupe(model_dir, root, database_url: str):
    """Redis and the web process enqueueing on it over one database (a SQLite file, or a PostgreSQL
    database with LOUPE_TEST_DATABASE=postgres); no worker yet."""
    with ExitStack() as stack:
        url = stack.enter_context(redis_server(root / "redis.log"))
        (root / "zoo").mkdir()
        env = {
            "LOUPE_DATA_DIR": str(root / "data"), "LOUPE_DATABASE_URL": database_url, "LOUPE_MODEL_DIRS": str(model_dir), "LOUPE_ZOO_DIR": str(root / "zoo"),
            "LOUPE_DEFAULT_MODEL": TINY, "LOUPE_HUB_MODELS": "", "LOUPE_API_TOKEN": "", "LOUPE_QUEUE_URL": url,
            "LOUPE_CLIENT_HEADER": "X-Client", "LOUPE_MAX_JOBS_PER_CLIENT": "3",
        }  # fmt: skip
        web = stack.enter_context(running_server(env, root / "web.log"))
        yield Cluster(web.url, redis.Redis.from_url(url), env, root, stack, web)


@pytest.fixture
def queue_only(model_dir, tmp_path, fresh_database):
    with queued_loupe(model_dir, tmp_path, fresh_database(tmp_path / "data")) as cluster:
        yield cluster


@pytest.fixture(scope="module")
def cluster(model_dir, tmp_path_factory, fresh_database):
    """…with two workers, shared by this module's tests (the kill test, last, stops one)."""
    root = tmp_path_factory.mktemp("queue")
    with queued_loupe(model_dir, root, fresh_database(root / "data")) as cluster:
        cluster.start_workers(2)
        yield cluster


def test_twenty_identical_requests_make_one_computation_and_the_web_loads_no_model(cluster):
    body = {"analysis": "attention", "model": TINY, "text": TEXT}
    with ThreadPoolExecutor(20) as pool:
        responses = list(pool.map(lambda i: cluster.post(body, **{"X-Client": f"c{i}"}), range(20)))
    assert {r.status_code for r in responses} <= {200, 202}, [r.text for r in responses]
    keys = {r.json()["id"] for r in responses}
    assert len(keys) == 1
    assert cluster.until_settled(keys.pop())["status"] == "done"
    assert int(cluster.redis.get(COMPUTED)) == 1  # the module's first test: nothing computed before
    # a model's attention layers are known only once it is loaded: the web process never loaded it
    models = {m["id"]: m for m in httpx.get(f"{cluster.web}/api/models", timeout=30).json()}
    assert models[TINY]["attention_layers"] is None


def test_mixed_requests_equal_the_in_process_runner(cluster, client_over, model_dir):
    bodies = [
        {"analysis": "attention", "model": TINY, "text": text} for text in (f"{TEXT} and again", " a b c a b c", " one two three four")
    ] + [
        {"analysis": "head_scores", "model": TINY, "params": {"seq_len": 24}},
        {"analysis": "logit_lens", "model": TINY, "text": TEXT},
    ]
    before = int(cluster.redis.get(COMPUTED) or 0)
    with ThreadPoolExecutor(len(bodies)) as pool:
        keys = [r.json()["id"] for r in pool.map(lambda ib: cluster.post(ib[1], **{"X-Client": f"c{ib[0]}"}), enumerate(bodies))]
    queued = [cluster.until_settled(key) for key in keys]
    local = client_over(model_dir)
    for body, view in zip(bodies, queued, strict=True):
        alone = local.post("/api/analyses", json=body).json()
        assert alone["id"] == view["id"] and view["status"] == "done"
        assert view["result"] == alone["result"], body
    key = keys[0]
    over_queue = httpx.get(f"{cluster.web}/api/analyses/{key}/attention", params={"layer": 1, "head": 0, "format": "stored"}, timeout=30)
    in_process = local.get(f"/api/analyses/{key}/attention", params={"layer": 1, "head": 0, "format": "stored"})
    assert over_queue.status_code == 200 and over_queue.content == in_process.content
    assert int(cluster.redis.get(COMPUTED)) == before + len(bodies)
    # the page's live token count and Truncate are answered by a worker, equal to the in-process ones
    for text, truncate in ((TEXT, False), (TEXT * 40, True)):
        counted = httpx.post(f"{cluster.web}/api/models/{TINY}/tokenize", json={"text": text, "truncate": truncate}, timeout=30)
        assert counted.status_code == 200 and counted.json() == local.post(f"/api/models/{TINY}/tokenize", json={"text": text, "truncate": truncate}).json()
    models = {m["id"]: m for m in httpx.get(f"{cluster.web}/api/models", timeout=30).json()}
    assert models[TINY]["attention_layers"] is None  # still: the web process loaded no model


def test_queue_positions_and_the_per_client_cap_hold(queue_only):
    cluster = queue_only  # no worker yet: every job waits in the queue
    keys = []
    for i in range(3):
        response = cluster.post({"analysis": "attention", "model": TINY, "text": f"{TEXT} {i}"}, **{"X-Client": "flood"})
        assert response.status_code == 200 and response.json()["status"] == "queued", response.text
        keys.append(response.json()["id"])
    views = [cluster.get(key) for key in keys]
    assert [v["status"] for v in views] == ["queued"] * 3
    assert [v["progress"]["queue_position"] for v in views] == [0, 1, 2]
    fourth = cluster.post({"analysis": "attention", "model": TINY, "text": f"{TEXT} 3"}, **{"X-Client": "flood"})
    assert fourth.status_code == 429 and fourth.json()["code"] == "too_many_jobs"
    other = cluster.post({"analysis": "attention", "model": TINY, "text": f"{TEXT} 3"}, **{"X-Client": "other"})
    assert other.status_code == 200  # the cap is per client
    keys.append(other.json()["id"])
    # with no worker free, a token count is refused in the one shape, not left hanging
    busy = httpx.post(f"{cluster.web}/api/models/{TINY}/tokenize", json={"text": TEXT}, timeout=60)
    assert busy.status_code == 503 and busy.json()["code"] == "workers_busy" and busy.headers["Retry-After"]
    cluster.restart_web()  # what a web process left in the queue stays there, not `interrupted`
    assert [cluster.get(key)["status"] for key in keys] == ["queued"] * 4
    cluster.start_workers(1)
    assert [cluster.until_settled(key)["status"] for key in keys] == ["done"] * 4
    again = cluster.post({"analysis": "attention", "model": TINY, "text": f"{TEXT} 3"}, **{"X-Client": "flood"})
    assert again.status_code == 200 and again.json()["status"] == "done"  # finished jobs free the client's slots


def test_a_worker_killed_mid_job_leaves_an_interrupted_analysis_and_nothing_partial(cluster):
    body = {"analysis": "head_metrics", "model": TINY, "params": {"n_texts": 500, "max_tokens": 64}}
    key = cluster.post(body).json()["id"]
    victim = cluster.worker_on(key)
    deadline = time.monotonic() + 60
    while cluster.get(key)["status"] != "running":  # the worker loads its model, then marks it running
        assert time.monotonic() < deadline
        time.sleep(0.05)
    time.sleep(0.5)
    victim.kill()
    view = cluster.until_settled(key, timeout=60)
    assert view["status"] == "error" and view["error"]["code"] == "interrupted", view
    assert view["result"] is None
    assert "worker" in view["error"]["error"]
    # asked again, the surviving worker computes it in full
    again = cluster.post(body)
    assert again.status_code in (200, 202), again.text
    assert cluster.until_settled(key, timeout=180)["status"] == "done"
