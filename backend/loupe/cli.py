"""`loupe`: serve (the default), run one analysis, fill the cache from a JSONL file of prompts, or
work a Redis queue's analyses (`loupe worker`, with LOUPE_QUEUE_URL).

    loupe analyze attention --model induction-2l --text " cat dog cat dog" [--param loop.times=4] [--server URL]
    loupe precompute prompts.jsonl --analysis attention [--model induction-2l] [--server URL]

Without --server the analyses run in this process on the LOUPE_ settings (data dir, models), so the
printed permalinks open once `loupe serve` runs on the same data dir.
"""

import argparse
import json
import math
import sys
from pathlib import Path

from tqdm import tqdm

from .client import Analysis, Loupe, LoupeError

TOP = 3  # heads listed per stat in a summary


def parse_param(item: str) -> tuple[list[str], object]:
    """`k=v` -> (path, value): v is read as JSON where it parses (4, true, [1, 2]), else as a
    string; a dotted key (`loop.times`) names a nested param."""
    key, sep, raw = item.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"--param takes key=value, got {item!r}")
    try:
        value = json.loads(raw)
    except ValueError:
        value = raw
    return key.split("."), value


def params_of(items: list[tuple[list[str], object]]) -> dict:
    params: dict = {}
    for path, value in items:
        node = params
        for part in path[:-1]:
            node = node.setdefault(part, {})
        node[path[-1]] = value
    return params


def summary(run: Analysis) -> list[str]:
    """Short lines about a done result: the top heads of every per-head grid it holds
    ({stat: [iteration][layer][head]}, e.g. attention's `head_stats`, head_scores' `scores`), and
    its scalar fields."""
    result = run.result or {}
    lines = []
    for field, value in result.items():
        if isinstance(value, (bool, int, float, str)) and not (isinstance(value, str) and len(value) > 80):
            lines.append(f"{field}: {value}")
    for field, grids in result.items():
        if not (isinstance(grids, dict) and grids and all(_is_head_grid(g) for g in grids.values())):
            continue
        for stat, grid in grids.items():
            cells = [(v, i, layer, head) for i, layers in enumerate(grid) for layer, heads in enumerate(layers or [])
                     for head, v in enumerate(heads or []) if isinstance(v, (int, float)) and math.isfinite(v)]
            top = sorted(cells, key=lambda cell: -cell[0])[:TOP]
            where = lambda i, layer, head: (f"i{i} " if len(grid) > 1 else "") + f"L{layer}H{head}"  # noqa: E731
            lines.append(f"{field}.{stat}: " + ", ".join(f"{where(i, layer, head)} {v:.3f}" for v, i, layer, head in top))
    return lines


def _is_head_grid(value: object) -> bool:
    """[iteration][layer][head] of numbers (null where a layer has no attention)."""
    return (isinstance(value, list) and bool(value) and isinstance(value[0], list)
            and all(layer is None or isinstance(layer, list) for layer in value[0]))


def connect(args) -> Loupe:
    return Loupe(args.server, token=args.token) if args.server else Loupe.local(token=args.token)


class Bar:
    """A stderr progress bar, shown only once an analysis turns out not to be in the cache."""

    def __init__(self, label: str):
        self.label, self.bar = label, None

    def __call__(self, progress: dict) -> None:
        if self.bar is None:
            self.bar = tqdm(total=100, desc=self.label, unit="%", file=sys.stderr, leave=False)
        self.bar.set_postfix_str(str(progress.get("stage", "")))
        self.bar.update(float(progress.get("percent") or 0) - self.bar.n)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def analyze(args) -> int:
    bar = Bar(args.analysis)
    with connect(args) as loupe:
        try:
            run = loupe.analyze(args.analysis, args.model, args.text, params_of(args.param), progress=bar)
        except LoupeError as err:
            bar.close()
            print(f"loupe: {err}", file=sys.stderr)
            return 1
        bar.close()
        print(run.permalink)
        for line in summary(run):
            print(f"  {line}")
    return 0


def read_prompts(path: Path) -> list[tuple[int, dict | LoupeError]]:
    """(line number, request or why it is none) for every non-blank line of a JSONL file."""
    out: list[tuple[int, dict | LoupeError]] = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            try:
                item = json.loads(line)
            except ValueError as err:
                raise ValueError(f"not JSON ({err})") from err
            if not isinstance(item, dict) or not isinstance(item.get("text"), str):
                raise ValueError('each line must be a JSON object with a "text" string')
            if not isinstance(item.get("params", {}), dict) or not isinstance(item.get("model", ""), str):
                raise ValueError('"params" must be an object and "model" a string')
            out.append((number, item))
        except ValueError as err:
            out.append((number, LoupeError(str(err), "invalid_input", 422)))
    return out


def precompute(args) -> int:
    try:
        prompts = read_prompts(Path(args.file))
    except OSError as err:
        print(f"loupe: cannot read {args.file}: {err}", file=sys.stderr)
        return 2
    failed: list[tuple[int, LoupeError]] = []
    with connect(args) as loupe:
        for number, item in tqdm(prompts, desc=f"precompute {args.analysis}", unit="prompt", file=sys.stderr, leave=False):
            try:
                if isinstance(item, LoupeError):
                    raise item
                model = item.get("model") or args.model
                run = loupe.analyze(args.analysis, model, item["text"], {**params_of(args.param), **item.get("params", {})})
            except LoupeError as err:
                failed.append((number, err))
                continue
            print(run.permalink, flush=True)
    for number, err in failed:
        print(f"{args.file}:{number}: {err}", file=sys.stderr)
    print(f"{len(prompts) - len(failed)} done, {len(failed)} failed", file=sys.stderr)
    return 1 if failed else 0


def serve(args) -> int:
    from .__main__ import main as serve_main

    serve_main()
    return 0


def worker(args) -> int:
    """Take analyses from LOUPE_QUEUE_URL's queue until stopped, on LOUPE_DEVICE."""
    import logging

    from .config import get_settings

    settings = get_settings()
    if not settings.queue_url:
        print("loupe worker needs LOUPE_QUEUE_URL (redis://host:port/db), the queue the web process enqueues on.", file=sys.stderr)
        return 2
    from .placement import refusal_at_start

    if (refused := refusal_at_start(settings)) is not None:
        print(json.dumps(refused), file=sys.stderr)
        return 2
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    from .db.engine import DatabaseUnavailable, SchemaMismatch
    from .redis_jobs import QueueUnavailable, work

    try:
        work(settings.queue_url, name=args.name)
    except (DatabaseUnavailable, SchemaMismatch, QueueUnavailable) as error:
        print(f"loupe worker cannot start: {error}", file=sys.stderr)
        return 2
    return 0


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(prog="loupe", description="Loupe: serve it, or run analyses from the command line.")
    commands = top.add_subparsers(dest="command")
    commands.add_parser("serve", help="serve Loupe on LOUPE_HOST:LOUPE_PORT (the default)").set_defaults(run=serve)

    def client_options(sub: argparse.ArgumentParser) -> None:
        sub.add_argument("--model", help="model id (GET /api/models); default: the server's default model")
        sub.add_argument("--param", action="append", default=[], type=parse_param, metavar="KEY=VALUE",
                         help="an analysis param, value as JSON where it parses (repeatable; loop.times=4 nests)")
        sub.add_argument("--server", help="a Loupe server's URL; default: run in this process on the LOUPE_ settings")
        sub.add_argument("--token", help="the server's API token (LOUPE_API_TOKEN there), if it has one")

    one = commands.add_parser("analyze", help="run one analysis; print its permalink and a summary")
    one.add_argument("analysis", help="analysis id (GET /api/analysis_types), e.g. attention")
    one.add_argument("--text", help="the input text, for analyses that take one")
    client_options(one)
    one.set_defaults(run=analyze)

    many = commands.add_parser("precompute", help="fill the cache from a JSONL file; print one permalink per line")
    many.add_argument("file", help='JSONL: one {"text", "model"?, "params"?} object per line')
    many.add_argument("--analysis", required=True, help="analysis id, e.g. attention")
    client_options(many)
    many.set_defaults(run=precompute)

    queue = commands.add_parser("worker", help="compute analyses from the Redis queue (LOUPE_QUEUE_URL) on LOUPE_DEVICE")
    queue.add_argument("--name", help="the worker's name in the queue (default: host and pid)")
    queue.set_defaults(run=worker)
    return top


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    return args.run(args) if args.command else serve(args)


if __name__ == "__main__":
    sys.exit(main())
