"""`python -m bench` (`make bench`): every row of the performance issue against its baseline, one run.

Prints the markdown table, then one JSON line per row {"name", "value", "baseline", "ratio",
"target", "ok", ...}. `--quick`: a smoke run (T = 128, one repetition). `--out FILE`: also write
the machine description and the table as markdown.
"""

import argparse
import importlib
import inspect
import os
import platform
import sys
import time

from .context import Bench, log
from .rows import Row, attempt, from_dict, pending, table

SECTIONS = ("capture", "scores", "server", "cold", "providers")

# Rows that other features bring: bench/<module>.py with rows() -> list[dict], when it exists.
PROVIDERS = {
    "generation": ("generation signal", 1.3, "ratio", "the hallucination capture during generation has not landed"),
    "probes": ("probes (2,000 examples)", 60.0, "value", "the probe sweep has not landed"),
    "ablation": ("ablation sweep (144 heads, T=128)", 15.0, "ratio", "the ablation sweep has not landed"),
    "long_context": ("long attention end to end", 1.3, "ratio", "the long-context rows have not landed"),
}


def machine() -> str:
    from importlib import metadata

    import torch

    cpu = "unknown CPU"
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    return (
        f"{cpu}, {os.cpu_count()} cores (torch threads {torch.get_num_threads()}), load average {load} at the start; "
        f"Python {platform.python_version()}, torch {torch.__version__}, "
        f"transformers {importlib.import_module('transformers').__version__}, "
        f"transformer-lens {metadata.version('transformer-lens')}"
    )


def provider_rows(quick: bool) -> list[Row]:
    rows = []
    for module_name, (title, limit, on, why) in PROVIDERS.items():
        try:
            module = importlib.import_module(f"bench.{module_name}")
        except ModuleNotFoundError as exc:
            if exc.name != f"bench.{module_name}":
                raise
            rows.append(pending(title, "s", limit, on, why))
            continue
        kwargs = {"quick": quick} if "quick" in inspect.signature(module.rows).parameters else {}
        rows += attempt(title, lambda: [from_dict(record) for record in module.rows(**kwargs)])
    return rows


def run(bench: Bench, sections: tuple[str, ...]) -> list[Row]:
    from . import forward, paint, server, startup

    def served() -> list[Row]:
        with server.loupe_server(bench, "server") as loupe:
            found = attempt("memory, end to end, stored size", lambda: server.memory_and_end_to_end(bench, loupe))
            if bench.stored_analysis is None:  # nothing stored to read back
                return found
            analysis_id = bench.stored_analysis
            found += attempt("head slice", lambda: server.head_slice(bench, loupe, analysis_id))
            found += attempt("share link paint", lambda: paint.share_link_paint(bench, loupe.url, analysis_id))
        return found

    planned = {
        "capture": lambda: forward.attention_capture(bench),
        "scores": lambda: forward.head_scores(bench),
        "server": served,
        "cold": lambda: startup.cold_start(bench),
        "providers": lambda: provider_rows(bench.quick),
    }
    rows: list[Row] = []
    for name in SECTIONS:
        if name in sections:
            rows += attempt(name, planned[name])
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="smoke run: T = 128, one repetition")
    parser.add_argument("--out", help="write the machine description and the table (markdown) here")
    parser.add_argument("--only", help=f"comma-separated sections to run: {', '.join(SECTIONS)}")
    parser.add_argument("--reps", type=int, help="repetitions of every row (overrides the defaults)")
    args = parser.parse_args(argv)
    sections = tuple(args.only.split(",")) if args.only else SECTIONS
    unknown = set(sections) - set(SECTIONS)
    if unknown:
        parser.error(f"unknown sections {sorted(unknown)}; known: {', '.join(SECTIONS)}")

    bench = Bench(quick=args.quick, reps=args.reps)
    started = time.monotonic()
    description = machine()
    log(description)
    try:
        rows = run(bench, sections)
    finally:
        bench.cleanup()
    elapsed = time.monotonic() - started
    markdown = table(rows)
    print(markdown)
    for row in rows:
        print(row.json())
    log(f"done in {elapsed:.0f} s")
    if args.out:
        mode = "quick (T = 128, 1 repetition)" if args.quick else "full"
        with open(args.out, "w") as out:
            out.write(f"Machine: {description}\n\nRun: {mode}, {time.strftime('%Y-%m-%d %H:%M')}, {elapsed:.0f} s in all.\n\n")
            out.write(markdown + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
