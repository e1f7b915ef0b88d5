"""Analyses: create (or find cached), read, delete, and read one head's stored pattern. Thin by design:
each route validates, calls the run service and returns."""

import json
from datetime import datetime
from typing import Annotated, Any, Literal

import numpy as np
from fastapi import APIRouter, Query, Response
from fastapi.concurrency import run_in_threadpool
from pydantic import BaseModel, Field

from ... import export
from ...analyses import REGISTRY
from ...codec import decode_thumbnails, encode_pattern
from ...db.tables import Analysis
from ...errors import AppError, TooLong
from ...tiles import MAX_SIZE, check_region, tile
from ..deps import ClientDep, RunsDep, SettingsDep, TokenDep

router = APIRouter(tags=["analyses"])

_ID = {"analysis_id": "$response.body#/id"}
# OpenAPI links: what a client (or a stateful fuzzer) can do with a POST's answer
LINKS = {
    "GetAnalysis": {"operationId": "get_analysis", "parameters": _ID},
    "GetAttention": {"operationId": "get_attention", "parameters": _ID},
    "GetThumbnails": {"operationId": "get_thumbnails", "parameters": _ID},
    "DeleteAnalysis": {"operationId": "delete_analysis", "parameters": _ID},
}
BINARY = {"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}}


class AnalysisRequest(BaseModel):
    analysis: str = Field(description="Registry id, e.g. `attention` or `head_scores` (GET /api/analysis_types).")
    model: str = Field(description="Model id from GET /api/models.")
    text: str | None = Field(None, description="Input text, for analyses that take one.")
    params: dict[str, Any] = Field(default_factory=dict, description="The analysis' params (see its schema).")
    wait_s: float | None = Field(
        None, ge=0, description="Seconds to wait for the result before answering `queued`/`running` (capped by the server)."
    )


class AnalysisView(BaseModel):
    id: str
    analysis: str
    model: str
    status: Literal["queued", "running", "done", "error", "evicted"] = Field(
        description="`error`: see `error`; `evicted`: dropped to keep the database under its cap, POST the request again."
    )
    text: str | None = None
    params: dict[str, Any] = {}
    result: dict | None = None
    error: dict | None = Field(None, description="The error body of a failed analysis: {error, code, status}.")
    progress: dict | None = None
    created_at: datetime | None = Field(None, description="When it was first requested (UTC, with its offset).")


class HistoryItem(BaseModel):
    id: str
    analysis: str
    model: str
    status: Literal["queued", "running", "done", "error", "evicted"]
    text_start: str | None = Field(None, description="The first 80 characters of the text, if any.")
    created_at: datetime | None = None


class History(BaseModel):
    items: list[HistoryItem]
    total: int = Field(description="How many analyses match the filters.")
    next_offset: int | None = Field(description="The offset of the next page, or null on the last.")


class HeadPattern(BaseModel):
    tokens: list[str]
    iteration: int
    layer: int
    head: int
    pattern: list[list[float]] = Field(description="Rows are query positions, columns key positions.")


def _view(row: Analysis, progress: dict | None) -> AnalysisView:
    return AnalysisView(
        id=row.id, analysis=row.analysis, model=row.model, status=row.status,
        text=row.request.get("text"), params=row.request.get("params", {}),
        result=row.result if row.status == "done" else None,
        error=row.error if row.status == "error" else None,
        progress=progress, created_at=row.created_at,
    )


@router.get("/analysis_types")
def analysis_types() -> list[dict]:
    """Every registered analysis: description, params schema, what it needs (inputs and model
    capabilities) and whether it stores patterns."""
    return [spec.public() for spec in REGISTRY.values()]


@router.post(
    "/analyses", response_model=AnalysisView, dependencies=[TokenDep], operation_id="create_analysis",
    responses={200: {"links": LINKS}},
)
async def create_analysis(body: AnalysisRequest, runs: RunsDep, settings: SettingsDep, client: ClientDep) -> AnalysisView:
    """Run an analysis, or return it from the cache. The id is the sha256 of (analysis, version,
    model id and revision, text, params), so posting the same request again returns the same id
    without recomputing. `status` is `done` with a `result`, or `queued`/`running` with `progress`
    (poll GET /api/analyses/{id}). A failure answers with its error; GET keeps it as `error`."""
    run = await run_in_threadpool(runs.plan, body.analysis, body.model, body.text, body.params)
    future = await run_in_threadpool(runs.submit, run, client)
    await runs.wait(future, min(settings.sync_wait_s, settings.sync_wait_s if body.wait_s is None else body.wait_s))
    row = await run_in_threadpool(runs.read, run.key)
    if row.status == "error":
        raise AppError.from_body(row.error or {})
    return _view(row, runs.progress(run.key))


@router.get("/analyses", response_model=History, operation_id="list_analyses")
def list_analyses(
    runs: RunsDep,
    model: Annotated[str | None, Query(max_length=256)] = None,
    analysis: Annotated[str | None, Query(max_length=64)] = None,
    status: Literal["queued", "running", "done", "error", "evicted"] | None = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    offset: Annotated[int, Query(ge=0, le=10**9)] = 0,
) -> History:
    """The history: stored analyses newest first, filtered by model, analysis and status, paged."""
    rows, total = runs.history(model=model, analysis=analysis, status=status, limit=limit, offset=offset)
    items = [
        HistoryItem(id=row.id, analysis=row.analysis, model=row.model, status=row.status, created_at=row.created_at,
                    text_start=(row.request.get("text") or "")[:80] or None)
        for row in rows
    ]
    return History(items=items, total=total, next_offset=offset + len(rows) if offset + len(rows) < total else None)


@router.get("/analyses/{analysis_id}", response_model=AnalysisView, operation_id="get_analysis")
def get_analysis(analysis_id: str, runs: RunsDep) -> AnalysisView:
    """The stored analysis: status, request, and its summary result (never the full tensors), or
    its error body when it failed."""
    return _view(runs.read(analysis_id), runs.progress(analysis_id))


@router.delete("/analyses/{analysis_id}", status_code=204, dependencies=[TokenDep], operation_id="delete_analysis")
def delete_analysis(analysis_id: str, runs: RunsDep) -> Response:
    """Delete a stored analysis and its patterns (needs the API token when one is set)."""
    runs.delete(analysis_id)
    return Response(status_code=204)


@router.get(
    "/analyses/{analysis_id}/attention", response_model=HeadPattern, operation_id="get_attention",
    responses={200: {"content": BINARY, "description": "JSON, or the binary forms (`format=u16`, `format=stored`)"}},
)
def get_attention(
    analysis_id: str,
    runs: RunsDep,
    layer: Annotated[int, Query()] = 0,
    head: Annotated[int, Query()] = 0,
    iteration: Annotated[int, Query()] = 0,
    format: Annotated[
        Literal["json", "u16", "stored"],
        Query(description="`u16`: raw little-endian uint16, value/65535; `stored`: the stored blob itself (see X-Codec)"),
    ] = "json",
):
    """One head's attention pattern at one iteration: rows are query positions, columns key
    positions. `format=u16` returns the same matrix as T*T little-endian uint16 (divide by 65535).
    `format=stored` returns the stored bytes untouched, the most compact form (0.54 MB for a
    T = 1024 head of GPT-2 small against 2.1 MB of u16): a zlib stream of n uint16 values stored
    as all their low bytes then all their high bytes, where n is T*(T+1)/2 (X-Codec
    `tri-u16-zlib`: the causal lower triangle, row by row) or T*T (`full-u16-zlib`)."""
    row = runs.done(analysis_id)
    if format == "stored" and row.result.get("pattern_source") != "recomputed":
        row, blob = runs.pattern(analysis_id, "pattern", iteration, layer, head)
        headers = {"X-Shape": ",".join(map(str, blob.shape)), "X-Codec": blob.codec, **IMMUTABLE}
        return Response(content=blob.data, media_type="application/octet-stream", headers=headers)
    row, rows = runs.head(analysis_id, iteration, layer, head)
    _refuse_whole_head(rows.n_pos, MAX_TEXT_HEAD_TOKENS if format == "json" else MAX_WHOLE_HEAD_TOKENS, f"format={format}")
    pattern = rows.whole()  # [query_pos, key_pos]
    headers = {"X-Shape": f"{rows.n_pos},{rows.n_pos}", **IMMUTABLE}
    if format == "stored":
        codec, data = encode_pattern(pattern)
        return Response(content=data, media_type="application/octet-stream", headers={**headers, "X-Codec": codec})
    if format == "u16":
        return Response(np.rint(pattern.numpy() * 65535).astype("<u2").tobytes(), media_type="application/octet-stream", headers=headers)
    return HeadPattern(tokens=row.result["tokens"], iteration=iteration, layer=layer, head=head, pattern=_rounded(pattern.numpy()))


IMMUTABLE = {"Cache-Control": "public, max-age=31536000, immutable"}  # a done analysis' id names its content
# Past these many tokens a whole head is no JSON or CSV (4M numbers), or no response at all (a
# recomputed head of 16,384 tokens is 1 GB of float32 in the server): the tile route serves it in views.
MAX_TEXT_HEAD_TOKENS = 2048
MAX_WHOLE_HEAD_TOKENS = 8192


def _refuse_whole_head(n_pos: int, limit: int, what: str) -> None:
    """TooLong past `limit` tokens, naming the forms that serve such a head."""
    if n_pos > limit:
        other = "with format=u16 or format=stored, or" if limit < MAX_WHOLE_HEAD_TOKENS else "as"
        raise TooLong(
            f"A head of {n_pos} tokens is {n_pos * n_pos:,} weights: too many for {what} (at most {limit} tokens). "
            f"Read it {other} a region at a time from /attention/tile."
        )


@router.get(
    "/analyses/{analysis_id}/attention/tile", operation_id="get_attention_tile",
    responses={200: {"content": BINARY, "description": "little-endian uint16 [rows, cols], weight * 65535"}},
)
def get_attention_tile(
    analysis_id: str,
    runs: RunsDep,
    layer: Annotated[int, Query()] = 0,
    head: Annotated[int, Query()] = 0,
    iteration: Annotated[int, Query()] = 0,
    q0: Annotated[int, Query(description="First query position of the region.")] = 0,
    q1: Annotated[int | None, Query(description="One past its last query position (default T).")] = None,
    k0: Annotated[int, Query(description="First key position.")] = 0,
    k1: Annotated[int | None, Query(description="One past its last key position (default T).")] = None,
    size: Annotated[int, Query(description=f"Most cells per side, 1..{MAX_SIZE}.")] = 512,
    norm: Annotated[Literal["none", "row"], Query(description="`row`: each query row divided by its own maximum first.")] = "none",
) -> Response:
    """A region of one head's pattern, max-pooled to at most size x size cells: the page's overview
    of a long map (the whole head at its own pixel size) and its tiles as it zooms. The body is
    little-endian uint16 [rows, cols] (weight * 65535); rows = min(size, q1 - q0), cols likewise;
    each cell is the maximum over its block of positions, the blocks as adaptive max pooling cuts
    them (X-Shape: rows,cols; X-Region: q0,q1,k0,k1). A region of at most size tokens a side is the
    weights themselves."""
    _, pattern = runs.head(analysis_id, iteration, layer, head)
    region = check_region(pattern.n_pos, q0, q1, k0, k1, size)
    values = tile(pattern.rows(region[0], region[1]), region, size, norm == "row")
    headers = {"X-Shape": f"{values.shape[0]},{values.shape[1]}", "X-Region": ",".join(map(str, region)), **IMMUTABLE}
    return Response(values.tobytes(), media_type="application/octet-stream", headers=headers)


def _rounded(pattern: np.ndarray) -> list[list[float]]:
    """A decoded pattern as JSON (and CSV) show it: 5 decimals, beyond the stored 16-bit precision."""
    return np.round(pattern, 5).tolist()


def _download(content: str, media_type: str, name: str) -> Response:
    return Response(content, media_type=media_type, headers={"Content-Disposition": f'attachment; filename="{name}"'})


CSV = {"text/csv": {"schema": {"type": "string"}}}


@router.get("/analyses/{analysis_id}/export.json", operation_id="export_json")
def export_json(analysis_id: str, runs: RunsDep) -> Response:
    """A done analysis as a JSON file: id, analysis, version, model, text, params, request and its result."""
    row = runs.done(analysis_id)
    return _download(json.dumps(export.document(row), indent=1), "application/json", export.file_name(row, "json"))


@router.get("/analyses/{analysis_id}/export.csv", operation_id="export_csv", responses={200: {"content": CSV}})
def export_csv(analysis_id: str, runs: RunsDep) -> Response:
    """Every number of a done analysis' result as one long CSV table: `field, iteration, layer, head,
    index_<k>…, value` (axes a field lacks are empty), e.g. `head_stats.bos,0,1,3,,0.42`."""
    row = runs.done(analysis_id)
    return _download(export.to_csv(*export.result_rows(row.result)), "text/csv; charset=utf-8", export.file_name(row, "csv"))


@router.get("/analyses/{analysis_id}/export.html", operation_id="export_html", responses={200: {"content": {"text/html": {}}}})
def export_html(analysis_id: str, runs: RunsDep, settings: SettingsDep) -> Response:
    """A standalone HTML report of a done analysis: its data, Plotly and the drawing script inline;
    it opens from a file, offline, and fetches nothing."""
    row = runs.done(analysis_id)
    return _download(export.report(row, settings.frontend_dir), "text/html; charset=utf-8", export.file_name(row, "html"))


@router.get("/analyses/{analysis_id}/attention/export.csv", operation_id="export_attention_csv", responses={200: {"content": CSV}})
def export_attention_csv(
    analysis_id: str,
    runs: RunsDep,
    layer: Annotated[int, Query()] = 0,
    head: Annotated[int, Query()] = 0,
    iteration: Annotated[int, Query()] = 0,
) -> Response:
    """One head's pattern at one iteration as CSV: `query_pos, key_pos, query_token, key_token, weight`."""
    row, rows = runs.head(analysis_id, iteration, layer, head)
    _refuse_whole_head(rows.n_pos, MAX_TEXT_HEAD_TOKENS, "CSV")
    pattern = _rounded(rows.whole().numpy())
    name = export.file_name(row, "csv", f"L{layer}H{head}-it{iteration}")
    return _download(export.to_csv(*export.pattern_rows(row.result["tokens"], pattern)), "text/csv; charset=utf-8", name)


@router.get("/analyses/{analysis_id}/thumbnails", operation_id="get_thumbnails")
def get_thumbnails(analysis_id: str, runs: RunsDep, iteration: Annotated[int, Query()] = 0) -> dict:
    """Max-pooled previews of every head at one iteration: values 0..255, [layer][head][row][col]."""
    _, blob = runs.pattern(analysis_id, "thumbnail", iteration)
    return {"iteration": iteration, "size": blob.shape[-1], "thumbnails": decode_thumbnails(blob.data, blob.shape).tolist()}
