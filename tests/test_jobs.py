"""The job runner's scheduling: round-robin across clients, single flight, the per-client cap."""

import threading

import pytest

from loupe.errors import TooManyJobs
from loupe.jobs import JobRunner


def _recorder(order: list[str], gate: threading.Event | None = None):
    def job(name: str):
        def run(progress):
            if gate is not None and name == "A1":
                gate.wait(10)
            order.append(name)

        return run

    return job


def test_a_new_client_is_served_before_the_client_it_queued_behind():
    order: list[str] = []
    gate = threading.Event()
    job = _recorder(order, gate)
    runner = JobRunner(max_jobs=1, max_per_client=8)
    futures = [runner.submit("A1", job("A1"), "A")]
    while runner.progress("A1")["stage"] != "running":  # the worker has taken A1
        threading.Event().wait(0.005)
    futures += [runner.submit(name, job(name), "A") for name in ("A2", "A3")]
    futures.append(runner.submit("B1", job("B1"), "B"))
    assert runner.progress("B1")["queue_position"] == 0  # only the running job is ahead of it
    gate.set()
    for future in futures:
        future.result(timeout=10)
    runner.shutdown()
    assert order == ["A1", "B1", "A2", "A3"]


def test_identical_keys_share_one_job_and_the_cap_counts_jobs_not_requests():
    gate = threading.Event()
    runner = JobRunner(max_jobs=1, max_per_client=2)
    first = runner.submit("k1", lambda progress: gate.wait(10), "A")
    assert runner.submit("k1", lambda progress: None, "A") is first
    runner.submit("k2", lambda progress: None, "A")
    with pytest.raises(TooManyJobs) as refused:
        runner.submit("k3", lambda progress: None, "A")
    assert refused.value.status == 429 and refused.value.headers()["Retry-After"]
    runner.submit("k4", lambda progress: None, "B")  # another client is not capped by A's jobs
    gate.set()
    first.result(timeout=10)
    runner.shutdown()
