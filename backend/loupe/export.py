"""Exports of a stored, done analysis: its data as JSON, a tidy CSV of every number in its result,
one head's pattern as CSV, and a standalone HTML report (data, Plotly and the drawing script inline)."""

import base64
import csv
import hashlib
import html
import io
import json
import re
from collections.abc import Iterator
from pathlib import Path

from . import __version__
from .db.tables import Analysis

# (name, result key of its size): the axes a [iteration][layer][head] array is read along
HEAD_AXES = (("iteration", "n_iterations"), ("layer", "n_layers"), ("head", "n_heads"))


def file_name(row: Analysis, suffix: str, part: str = "") -> str:
    """`loupe-<model>-<analysis>[-<part>]-<id8>.<suffix>`, only [A-Za-z0-9._-]: the name says what it holds."""
    parts = ["loupe", row.model, row.analysis, part, row.id[:8]]
    return "-".join(re.sub(r"[^A-Za-z0-9._-]+", "_", p) for p in parts if p) + f".{suffix}"


def document(row: Analysis) -> dict:
    """The data behind every view of an analysis: ids, request and the stored summary result."""
    return {
        "id": row.id, "analysis": row.analysis, "version": row.version, "model": row.model,
        "text": row.request.get("text"), "params": row.request.get("params", {}), "request": row.request,
        "created_at": row.created_at.isoformat() if row.created_at else None,
        "loupe_version": __version__, "result": row.result,
    }


# ---- CSV --------------------------------------------------------------------------------------

def _leaves(value: object, field: str, index: tuple[int, ...]) -> Iterator[tuple[str, tuple[int, ...], object]]:
    """Every number (or null inside an array) under `value`: dict keys extend the field, list positions the index."""
    if isinstance(value, dict):
        for key, item in value.items():
            yield from _leaves(item, f"{field}.{key}" if field else str(key), index)
    elif isinstance(value, list):
        for pos, item in enumerate(value):
            yield from _leaves(item, field, (*index, pos))
    elif isinstance(value, int | float) or (value is None and index):  # booleans too, as 0/1
        yield field, index, value


def _axis_names(value: object, result: dict) -> list[str]:
    """`iteration, layer[, head]` where the array's leading axes have the result's sizes (one list per
    iteration, one per layer, ...); positions past them are `index_<axis>`."""
    names: list[str] = []
    level = [value]
    for name, size_key in HEAD_AXES:
        size = result.get(size_key)
        if not all(isinstance(v, list) and len(v) == size for v in level):
            break
        names.append(name)
        level = [item for v in level for item in v]
    return names if len(names) >= 2 else []


def result_rows(result: dict) -> tuple[list[str], list[list[object]]]:
    """The result as one long table: `field, <axes>, value`, a row per number of every array (and
    scalar) in it. Axes are `iteration, layer, head` where an array has that shape, else `index_<k>`,
    so any analysis' result gets a CSV with no code of its own. Empty cells: an axis the field lacks,
    or a null value (say, a hybrid stack's layer without attention)."""
    leaves = list(_leaves(result, "", ()))
    names: dict[str, list[str]] = {}
    for field, index, _ in leaves:
        if field not in names:
            value = result
            for key in field.split("."):
                value = value.get(key) if isinstance(value, dict) else None
            names[field] = _axis_names(value, result)
    named = [name for name, _ in HEAD_AXES if any(name in n for n in names.values())]
    generic = sorted({k for field, index, _ in leaves for k in range(len(names[field]), len(index))})
    header = ["field", *named, *[f"index_{k}" for k in generic], "value"]
    rows = []
    for field, index, value in leaves:
        cells = dict(zip(names[field], index)) | {f"index_{k}": index[k] for k in range(len(names[field]), len(index))}
        out = "" if value is None else int(value) if isinstance(value, bool) else value
        rows.append([field, *[cells.get(h, "") for h in header[1:-1]], out])
    return header, rows


def to_csv(header: list[str], rows: list[list[object]]) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    return out.getvalue()


def pattern_rows(tokens: list[str], pattern: list[list[float]]) -> tuple[list[str], list[list[object]]]:
    """One head's pattern as `query_pos, key_pos, query_token, key_token, weight`, every cell of the T x T matrix."""
    header = ["query_pos", "key_pos", "query_token", "key_token", "weight"]
    return header, [[q, k, tokens[q], tokens[k], w] for q, row in enumerate(pattern) for k, w in enumerate(row)]


# ---- HTML report ------------------------------------------------------------------------------

def _script_json(data: object) -> str:
    """JSON safe inside a <script> element: no `</` (which could close it) and no `<!--`."""
    return json.dumps(data).replace("</", "<\\/").replace("<!--", "<\\!--")


def _hash(script: str) -> str:
    return "'sha256-" + base64.b64encode(hashlib.sha256(script.encode()).digest()).decode() + "'"


def report(row: Analysis, frontend_dir: Path) -> str:
    """A standalone HTML page of the analysis: opens from a file with no server, fetches nothing
    (its own CSP allows only its two inline scripts and no connection), and draws every
    [iteration][layer][head] array of the result as the page's layer x head grid."""
    plotly = (frontend_dir / "vendor" / "plotly-cartesian.min.js").read_text(encoding="utf-8")
    script = (frontend_dir / "report" / "report.js").read_text(encoding="utf-8")
    data = _script_json(document(row))
    policy = (f"default-src 'none'; script-src {_hash(plotly)} {_hash(script)}; style-src 'unsafe-inline'; "
              "img-src data: blob:; connect-src 'none'; base-uri 'none'; form-action 'none'")
    title = html.escape(f"Loupe · {row.model} · {row.analysis}")
    return (
        "<!doctype html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
        f"<meta http-equiv=\"Content-Security-Policy\" content=\"{policy}\">\n"
        f"<title>{title}</title>\n"
        "<style>body{font-family:Inter,system-ui,sans-serif;color:#1f2937;margin:24px;max-width:1100px}"
        ".meta{color:#6b7280}.chart{height:380px;margin-bottom:24px}pre{white-space:pre-wrap}</style>\n"
        "</head>\n<body>\n"
        f"<h1 id=\"report-title\">{title}</h1>\n<p class=\"meta\" id=\"report-meta\"></p>\n<pre id=\"report-text\"></pre>\n"
        "<div id=\"report-charts\"></div>\n"
        f"<script type=\"application/json\" id=\"loupe-data\">{data}</script>\n"
        f"<script>{plotly}</script>\n<script>{script}</script>\n</body>\n</html>\n"
    )
