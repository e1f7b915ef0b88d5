"""Where the running job stands, and its time limit, reachable from deep inside an analysis.

The job runner installs a Progress for the thread running a job. Analyses report stages through
`Inputs.progress`; the capture calls `checkpoint()` once per layer firing, so a job past its limit
stops within one layer of any analysis, not only between stages.
"""

import time
from contextvars import ContextVar
from dataclasses import dataclass, field

from .errors import JobTimeout


@dataclass
class Progress:
    timeout_s: float | None = None
    stage: str = "queued"
    fraction: float = 0.0
    started: float = field(default_factory=time.monotonic)

    def start(self) -> None:
        self.stage, self.started = "running", time.monotonic()

    def check(self) -> None:
        """JobTimeout once the job has run longer than its limit."""
        if self.timeout_s is not None and time.monotonic() - self.started > self.timeout_s:
            raise JobTimeout(f"The analysis ran longer than the {self.timeout_s:g} s limit (stage {self.stage!r}).")

    def __call__(self, stage: str, fraction: float) -> None:
        self.stage, self.fraction = stage, max(0.0, min(1.0, fraction))
        self.check()

    def public(self) -> dict:
        return {"stage": self.stage, "percent": round(100 * self.fraction, 1)}


current: ContextVar[Progress | None] = ContextVar("loupe_job_progress", default=None)


def checkpoint() -> None:
    """Raise JobTimeout if the job running in this context is past its time limit (no-op outside a job)."""
    if (progress := current.get()) is not None:
        progress.check()


@dataclass
class Nested:
    """The progress of an analysis another one requires: it checks the job's time limit and moves
    no bar (the requiring analysis reports its own stages)."""

    outer: "Progress | Nested"

    def check(self) -> None:
        self.outer.check()

    def __call__(self, stage: str, fraction: float) -> None:
        self.outer.check()
