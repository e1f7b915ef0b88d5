"""A benchmark row (value vs a baseline measured in the same run, and its target) and timing helpers.

Timings on a shared CPU are noisy, so a row never compares against a number from another run:
its baseline is measured in the same process, interleaved with it (the order rotates every
repetition), and both are summarised by their medians.
"""

import json
import statistics
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field

from .context import log


@dataclass
class Row:
    """One line of the results table.

    value and baseline share `unit`; ratio = value / baseline. `limit` is the target's bound and
    `on` says what it bounds: "ratio" or "value". ok is None when the row could not be measured
    (or is informational), else whether the target is met.
    """

    name: str
    value: float | None
    baseline: float | None
    unit: str
    limit: float | None
    on: str = "ratio"  # "ratio" | "value"
    baseline_name: str = ""
    note: str = ""
    extra: dict = field(default_factory=dict)  # reference columns, e.g. TransformerLens' ratio
    given_target: str | None = None  # a provider's own target text and verdict, when it has no `limit`
    given_ok: bool | None = None

    @property
    def ratio(self) -> float | None:
        if self.value is None or not self.baseline:
            return None
        return self.value / self.baseline

    @property
    def target(self) -> str:
        if self.limit is None:
            return self.given_target or "report"
        if self.on == "ratio":
            return f"<= {self.limit:g}x"
        return f"<= {self.limit:g} {self.unit}"

    @property
    def ok(self) -> bool | None:
        measured = self.ratio if self.on == "ratio" else self.value
        if self.limit is None:
            return self.given_ok
        if measured is None:
            return None
        return measured <= self.limit

    def json(self) -> str:
        def rounded(x: float | None) -> float | None:
            return None if x is None else float(f"{x:.4g}")

        record = {
            "name": self.name,
            "value": rounded(self.value),
            "baseline": rounded(self.baseline),
            "ratio": rounded(self.ratio),
            "target": self.target,
            "ok": self.ok,
            "unit": self.unit,
        }
        if self.extra:
            record["extra"] = {k: rounded(v) if isinstance(v, float) else v for k, v in self.extra.items()}
        if self.note:
            record["note"] = self.note
        return json.dumps(record)


def pending(name: str, unit: str, limit: float | None, on: str, why: str) -> Row:
    """A row whose feature is not there yet: printed with its target, never ok."""
    return Row(name, None, None, unit, limit, on, note=f"not yet measurable: {why}")


def from_dict(record: dict) -> Row:
    """A Row from a provider's dict (bench/generation.py and the like): the JSON line's keys
    ({"name", "value", "baseline", "target", "ok"}, ratio recomputed), optionally with Row's own
    fields (`unit`, `limit` and `on` to let the suite judge the target, `note`, `extra`)."""
    fields = {"value", "baseline", "unit", "limit", "on", "baseline_name", "note", "extra"}
    row = Row(name=str(record["name"]), value=None, baseline=None, unit="s", limit=None)
    for key in fields & record.keys():
        setattr(row, key, record[key])
    if row.limit is None:
        row.given_target = None if record.get("target") is None else str(record["target"])
        row.given_ok = record.get("ok")
    return row


def attempt(name: str, fn: Callable[[], list[Row]]) -> list[Row]:
    """fn()'s rows; a row saying it failed if it raised: one broken row must not hide the others."""
    started = time.monotonic()
    try:
        return fn()
    except Exception:
        traceback.print_exc()
        return [Row(f"{name} (failed)", None, None, "s", None, note="raised; see stderr")]
    finally:
        log(f"{name} took {time.monotonic() - started:.0f} s")


def interleaved(
    candidates: dict[str, Callable[[], object]],
    reps: int,
    warmup: int = 1,
    settle_s: float = 0.0,
    between: Callable[[], object] | None = None,
) -> dict[str, list[float]]:
    """Wall-clock seconds of each candidate, `reps` times each, interleaved.

    Every repetition runs each candidate once, in an order rotated by one each time, so that a
    burst of load from other processes falls on all of them alike. `warmup` untimed rounds first.
    `settle_s`: an untimed pause before each run, for candidates in different processes: torch's
    OpenMP threads keep spinning on the cores for a while after a parallel region, which would
    bill one process' idle spin to the other's timing. `between`: untimed work before each run
    (e.g. deleting the analysis the last run stored).
    """
    names = list(candidates)
    for _ in range(warmup):
        for name in names:
            candidates[name]()
    times: dict[str, list[float]] = {name: [] for name in names}
    for rep in range(reps):
        order = names[rep % len(names) :] + names[: rep % len(names)]
        for name in order:
            if between is not None:
                between()
            time.sleep(settle_s)
            start = time.perf_counter()
            candidates[name]()
            times[name].append(time.perf_counter() - start)
    return times


def versus(name: str, times: dict[str, list[float]], ours: str, base: str, limit: float, baseline_name: str, extra: dict | None = None) -> Row:
    """A Row of candidate `ours` against `base` from interleaved() times (seconds): medians, with
    the ratio of the minima and both spreads beside them (how noisy the run was)."""
    return Row(
        name,
        median(times[ours]),
        median(times[base]),
        "s",
        limit,
        baseline_name=baseline_name,
        extra={
            **(extra or {}),
            "ratio of minima": min(times[ours]) / min(times[base]),
            f"spread {ours}/{base} s": f"{spread(times[ours])} / {spread(times[base])}",
        },
    )


def median(values: list[float]) -> float:
    return statistics.median(values)


def spread(values: list[float]) -> str:
    """min..max of a sample, for the notes: how noisy the machine was."""
    return f"{min(values):.3g}..{max(values):.3g}"


def fmt(value: float | None, unit: str) -> str:
    if value is None:
        return "—"
    if unit == "B":
        for scale, suffix in ((1 << 30, "GiB"), (1 << 20, "MiB"), (1 << 10, "KiB")):
            if abs(value) >= scale:
                return f"{value / scale:.3g} {suffix}"
        return f"{value:.0f} B"
    if unit == "s" and value < 1:
        return f"{value * 1000:.3g} ms"
    if unit == "ms":
        return f"{value:.3g} ms"
    return f"{value:.3g} {unit}"


def table(rows: list[Row]) -> str:
    """The results as a markdown table."""
    lines = [
        "| row | value | baseline | ratio | target | ok | notes |",
        "|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        ok = {True: "ok", False: "**miss**", None: "—"}[row.ok]
        ratio = "—" if row.ratio is None else f"{row.ratio:.2f}x"
        baseline = fmt(row.baseline, row.unit) + (f" ({row.baseline_name})" if row.baseline_name else "")
        notes = "; ".join(
            [f"{k}: {v:.3g}" if isinstance(v, float) else f"{k}: {v}" for k, v in row.extra.items()]
            + ([row.note] if row.note else [])
        )
        lines.append(f"| {row.name} | {fmt(row.value, row.unit)} | {baseline} | {ratio} | {row.target} | {ok} | {notes} |")
    return "\n".join(lines)
