"""Load on a real server: a flood from one client leaves health and other clients' jobs prompt and
is refused past its quota; a chunked body over the limit is a 413 without buffering it; keep-alive
connections survive error responses."""

import asyncio
import http.client
import json
import select
import socket
import statistics
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import httpx
import psutil
import pytest

from loupe.api.errors import CatchAll

from ..conftest import TINY
from ..server import running_server

ERROR_KEYS = {"error", "code", "status"}
# one job: ~2-4 s on 2 CPU cores; the retrofit loop makes it long enough that the whole flood
# is answered before the first of A's jobs finishes (so A's quota is seen exactly)
JOB_PARAMS = {"seq_len": 60, "batch": 64, "loop": {"times": 8}}
FLOOD_REQUESTS = 200
FLOOD_THREADS = 50
PER_CLIENT = 8


def _job(seed: int, **extra) -> dict:
    return {"analysis": "head_scores", "model": TINY, "params": {**JOB_PARAMS, "seed": seed}, **extra}


def _env(model_dir, tmp, database_url: str, **extra) -> dict[str, str]:
    (tmp / "zoo").mkdir(exist_ok=True)
    return {
        "LOUPE_DATA_DIR": str(tmp / "data"), "LOUPE_MODEL_DIRS": str(model_dir), "LOUPE_ZOO_DIR": str(tmp / "zoo"),
        "LOUPE_DATABASE_URL": database_url, **extra,
    }  # fmt: skip


def _assert_error_shape(body: dict, status: int, code: str) -> None:
    assert set(body) == ERROR_KEYS, body
    assert body["status"] == status and body["code"] == code and body["error"], body


# ---- a flood from one client ----------------------------------------------------------------------


@dataclass
class Flood:
    job_s: float  # one job's time, measured alone (median of 3)
    health: list[tuple[int, float]]  # (status, latency) of every /api/health probe during the flood
    a: list[tuple[int, dict, httpx.Headers, float]]  # (status, body, headers, answered at) of A's POSTs
    began: float
    b_submitted: float
    b_started: float | None
    b_post: dict
    b_statuses: list[str]

    @property
    def b_delay(self) -> float:
        return self.b_started - self.b_submitted if self.b_started is not None else float("inf")

    def accepted(self) -> list:
        return [r for r in self.a if r[0] == 200]

    def refused(self) -> list:
        return [r for r in self.a if r[0] == 429]

    def a_done_between(self, start: float, end: float) -> int:
        """How many of A's jobs were answered `done` in (start, end]: jobs that ran then."""
        return sum(body.get("status") == "done" and start < at <= end for _, body, _, at in self.accepted())


@pytest.fixture(scope="module")
def flood(model_dir, tmp_path_factory, fresh_database) -> Flood:
    """One worker, 8 jobs per client. Client A sends 200 distinct jobs from 50 threads; once A's
    refusals begin, client B submits one job and polls until it starts; /api/health is probed
    every 100 ms throughout."""
    tmp = tmp_path_factory.mktemp("flood")
    env = _env(
        model_dir, tmp, fresh_database(tmp / "data"), LOUPE_CLIENT_HEADER="X-Client", LOUPE_MAX_JOBS="1",
        LOUPE_MAX_JOBS_PER_CLIENT=str(PER_CLIENT), LOUPE_SYNC_WAIT_S="20",
    )
    with running_server(env, tmp / "server.log") as server, httpx.Client(
        base_url=server.url, timeout=60, limits=httpx.Limits(max_connections=FLOOD_THREADS + 10)
    ) as client:
        warm = {"X-Client": "warm"}
        assert client.post("/api/analyses", json=_job(1, wait_s=60), headers=warm).json()["status"] == "done"  # loads the model
        times = []
        for seed in (2, 3, 4):
            started = time.monotonic()
            assert client.post("/api/analyses", json=_job(seed, wait_s=60), headers=warm).json()["status"] == "done"
            times.append(time.monotonic() - started)

        health: list[tuple[int, float]] = []
        stop = threading.Event()

        def monitor() -> None:
            with httpx.Client(base_url=server.url, timeout=5) as own:
                for _ in range(1200):  # at most 2 minutes of samples
                    if stop.is_set():
                        return
                    sent = time.monotonic()
                    try:
                        status = own.get("/api/health").status_code
                    except httpx.HTTPError:
                        status = 0
                    health.append((status, time.monotonic() - sent))
                    time.sleep(0.1)

        a: list = []
        a_lock = threading.Lock()

        def flood_one(i: int) -> None:
            response = client.post("/api/analyses", json=_job(1000 + i), headers={"X-Client": "A"}, timeout=60)
            with a_lock:
                a.append((response.status_code, response.json(), response.headers, time.monotonic()))

        watcher = threading.Thread(target=monitor, daemon=True)
        watcher.start()
        time.sleep(0.3)  # a few idle probes first
        pool = ThreadPoolExecutor(FLOOD_THREADS)
        try:
            began = time.monotonic()
            futures = [pool.submit(flood_one, i) for i in range(FLOOD_REQUESTS)]
            deadline = time.monotonic() + 20  # B comes in once A's queue is full (refusals have begun)
            while time.monotonic() < deadline and sum(r[0] == 429 for r in a) < 10:
                time.sleep(0.01)
            b_submitted = time.monotonic()
            b_response = client.post("/api/analyses", json=_job(5000, wait_s=0), headers={"X-Client": "B"})
            assert b_response.status_code == 200, b_response.text
            b_post, b_started = b_response.json(), None
            b_statuses = [b_post["status"]]
            if b_statuses[-1] in ("running", "done"):
                b_started = time.monotonic()
            deadline = time.monotonic() + 30
            while b_started is None and time.monotonic() < deadline:
                time.sleep(0.05)
                view = client.get(f"/api/analyses/{b_post['id']}")
                assert view.status_code == 200, view.text
                b_statuses.append(view.json()["status"])
                if b_statuses[-1] in ("running", "done"):
                    b_started = time.monotonic()
            for future in futures:
                future.result(timeout=60)
        finally:
            pool.shutdown(wait=True, cancel_futures=True)
            stop.set()
            watcher.join(timeout=10)

    result = Flood(statistics.median(times), health, a, began, b_submitted, b_started, b_post, b_statuses)
    latencies = [latency for _, latency in health]
    refused = result.refused()
    print(
        f"\nflood: one job {result.job_s:.2f} s (alone: {', '.join(f'{t:.2f}' for t in times)}); "
        f"health max {max(latencies) * 1000:.0f} ms, p50 {statistics.median(latencies) * 1000:.0f} ms "
        f"over {len(latencies)} probes; B started {result.b_delay:.2f} s after submission "
        f"(bar {result.job_s * 2 + 1:.2f} s; queue position {(b_post.get('progress') or {}).get('queue_position')}; "
        f"A jobs ended meanwhile {result.a_done_between(b_submitted, b_started or b_submitted)}); "
        f"A: {len(result.accepted())} accepted, {len(refused)} refused with 429, all answered within "
        f"{max((r[3] for r in refused), default=began) - began:.2f} s"
    )
    return result


@pytest.mark.slow
def test_health_answers_promptly_during_a_flood_and_nothing_is_a_5xx(flood):
    assert len(flood.a) == FLOOD_REQUESTS
    assert len(flood.health) >= 10
    assert all(status < 500 for status, *_ in flood.a), sorted({status for status, *_ in flood.a})
    assert all(status == 200 for status, _ in flood.health), sorted({status for status, _ in flood.health})
    assert max(latency for _, latency in flood.health) < 1.0


@pytest.mark.slow
def test_a_flooding_client_gets_its_quota_and_then_429_with_retry_after(flood):
    accepted, refused = flood.accepted(), flood.refused()
    first_a_done = min((at for _, body, _, at in accepted if body["status"] == "done"), default=float("inf"))
    last_refusal = max(at for *_, at in refused)
    # exactly the quota only while none of A's jobs has ended and freed a slot
    assert last_refusal < first_a_done, "the flood outlasted A's first job; lengthen JOB_PARAMS"
    assert len(accepted) == PER_CLIENT, [(status, body.get("code")) for status, body, _, _ in flood.a]
    assert all(body["status"] in ("queued", "running", "done") for _, body, _, _ in accepted)
    assert len(refused) == FLOOD_REQUESTS - PER_CLIENT
    for _, body, headers, _ in refused:
        _assert_error_shape(body, 429, "too_many_jobs")
        assert int(headers["retry-after"]) > 0


@pytest.mark.slow
def test_another_clients_job_starts_within_about_one_job_of_a_flood(flood):
    assert flood.b_started is not None, flood.b_statuses
    assert flood.b_delay <= flood.job_s * 2 + 1, (flood.b_delay, flood.job_s, flood.b_statuses)


@pytest.mark.slow
def test_another_clients_job_waits_only_for_the_job_already_running(flood):
    """Round-robin: B's job is next once the job running when it arrived ends; no second job of
    A's may start ahead of it (jobs.py: "delays another client's job by at most the jobs already running")."""
    assert (flood.b_post.get("progress") or {}).get("queue_position") == 0, flood.b_post
    assert flood.a_done_between(flood.b_submitted, flood.b_started) <= 1


# ---- a chunked body over the limit, and error responses on a kept-alive connection ---------------


@pytest.fixture(scope="module")
def plain_server(model_dir, tmp_path_factory, fresh_database):
    tmp = tmp_path_factory.mktemp("plain")
    with running_server(_env(model_dir, tmp, fresh_database(tmp / "data"), LOUPE_MAX_BODY_BYTES="2000000"), tmp / "server.log") as server:
        yield server


MIB = 1 << 20


@pytest.mark.slow
def test_a_chunked_body_over_the_limit_is_a_413_without_buffering_it(plain_server):
    process = psutil.Process(plain_server.process.pid)
    before = process.memory_info().rss
    peak, stop = [before], threading.Event()

    def sample() -> None:
        for _ in range(3000):  # 60 s at most
            if stop.wait(0.02):
                return
            peak[0] = max(peak[0], process.memory_info().rss)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    chunk = b"%x\r\n%s\r\n" % (MIB, b"a" * MIB)
    sent = 0
    started = time.monotonic()
    with socket.create_connection(("127.0.0.1", plain_server.port), timeout=10) as sock:
        try:
            sock.sendall(
                b"POST /api/datasets/parse HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                b"Transfer-Encoding: chunked\r\n\r\n"
                + b"15\r\n" + b'{"format": "jsonl", "' + b"\r\n"
            )
            for _ in range(500):  # 500 MiB at most, 60 s at most
                if select.select([sock], [], [], 0)[0] or time.monotonic() - started > 60:
                    break  # the server has answered (or closed)
                sock.sendall(chunk)
                sent += MIB
        except (BrokenPipeError, ConnectionResetError, socket.timeout):
            pass
        response = http.client.HTTPResponse(sock)
        response.begin()
        status, body = response.status, json.loads(response.read())
    stop.set()
    sampler.join(timeout=5)
    after = process.memory_info().rss
    print(
        f"\nchunked: sent {sent / MIB:.0f} MiB before the answer; RSS {before / MIB:.0f} MiB before, "
        f"peak {peak[0] / MIB:.0f} MiB, {after / MIB:.0f} MiB after"
    )
    assert status == 413
    _assert_error_shape(body, 413, "too_long")
    assert sent < 100 * MIB  # answered early, not after reading everything
    assert peak[0] - before < 50_000_000 and after - before < 50_000_000
    assert httpx.get(f"{plain_server.url}/api/health", timeout=5).status_code == 200


@pytest.mark.slow
def test_error_responses_keep_the_connection_alive(plain_server):
    conn = http.client.HTTPConnection("127.0.0.1", plain_server.port, timeout=30)
    invalid = json.dumps({"analysis": "head_scores", "model": TINY, "params": {"seq_len": "long"}})
    requests = [
        ("GET", "/api/analyses/" + "0" * 64, None, 404, "not_found"),
        ("POST", "/api/analyses", invalid, 422, "invalid_input"),
        ("GET", "/api/no/such", None, 404, "not_found"),
        ("DELETE", "/api/health", None, 405, "method_not_allowed"),
    ]
    try:
        conn.connect()
        sock = conn.sock
        for method, path, body, status, code in requests:
            headers = {"Content-Type": "application/json"} if body else {}
            conn.request(method, path, body=body, headers=headers)
            response = conn.getresponse()
            assert response.status == status, (method, path, response.status)
            _assert_error_shape(json.loads(response.read()), status, code)
            if status == 405:
                assert "GET" in (response.getheader("Allow") or ""), response.getheaders()
            assert conn.sock is sock, f"{method} {path} closed the connection"
        conn.request("GET", "/api/health")
        response = conn.getresponse()
        assert response.status == 200 and json.loads(response.read())["status"] == "ok"
        assert conn.sock is sock
    finally:
        conn.close()


def test_catch_all_answers_an_escaped_exception_with_a_500_and_does_not_raise():
    async def broken(scope, receive, send):
        raise RuntimeError("boom")

    async def receive():
        return {"type": "http.request", "body": b"", "more_body": False}

    sent: list[dict] = []

    async def send(message):
        sent.append(message)

    scope = {"type": "http", "method": "GET", "path": "/x", "headers": [], "query_string": b""}
    asyncio.run(CatchAll(broken)(scope, receive, send))  # no exception escapes
    assert sent[0]["type"] == "http.response.start" and sent[0]["status"] == 500
    assert (b"content-type", b"application/json") in sent[0]["headers"]
    body = b"".join(m.get("body", b"") for m in sent[1:])
    _assert_error_shape(json.loads(body), 500, "internal_error")
    assert "boom" not in body.decode()  # the cause goes to the log, not to the client

    async def broken_midway(scope, receive, send):
        await send({"type": "http.response.start", "status": 200, "headers": []})
        raise RuntimeError("after the start")

    with pytest.raises(RuntimeError):  # too late for a 500: re-raised so the server drops the connection
        asyncio.run(CatchAll(broken_midway)(scope, receive, send))
