"""Analyses: create (or find cached), read a summary, read one head's pattern. Thin by design."""

import concurrent.futures
from datetime import datetime
from typing import Annotated, Any, Literal

import numpy as np
from fastapi import APIRouter, Query, Response
from pydantic import BaseModel, Field, ValidationError

from ...analyses import REGISTRY, AnalysisSpec, Inputs
from ...codec import decode_pattern, decode_thumbnails
from ...db.tables import Analysis
from ...errors import AppError, InvalidInput, NotFound, TooLong, UnknownAnalysis
from ..deps import CacheDep, JobsDep, SettingsDep, StoreDep, TokenDep

router = APIRouter(tags=["analyses"])

# Characters per token can exceed 1 only so far; longer texts are refused before tokenizing.
_MAX_CHARS_PER_TOKEN = 32


class AnalysisRequest(BaseModel):
    analysis: str = Field(description="Registry id, e.g. `attention` or `head_scores` (GET /api/analysis_types).")
    model: str = Field(description="Model id from GET /api/models.")
    text: str | None = Field(None, description="Input text, for analyses that take one.")
    params: dict[str, Any] = Field(default_factory=dict, description="The analysis' params (see its schema).")
    wait_s: float | None = Field(
        None, ge=0, description="Seconds to wait for the result before answering `running` (capped by the server)."
    )


class AnalysisView(BaseModel):
    id: str
    analysis: str
    model: str
    status: Literal["queued", "running", "done", "error"]
    text: str | None = None
    params: dict[str, Any] = {}
    result: dict | None = None
    error: dict | None = None
    progress: dict | None = None
    created_at: datetime | None = None


class HeadPattern(BaseModel):
    tokens: list[str]
    iteration: int
    layer: int
    head: int
    pattern: list[list[float]] = Field(description="Rows are query positions, columns key positions.")


def _spec(name: str) -> AnalysisSpec:
    spec = REGISTRY.get(name)
    if spec is None:
        raise UnknownAnalysis(f"Unknown analysis {name!r}; known: {', '.join(sorted(REGISTRY))}.")
    return spec


def _params(spec: AnalysisSpec, raw: dict) -> BaseModel:
    try:
        return spec.params.model_validate(raw)
    except ValidationError as exc:
        details = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors()[:5])
        raise InvalidInput(f"Invalid params for {spec.name}: {details}") from None


def _view(row: Analysis, progress: dict | None = None) -> AnalysisView:
    return AnalysisView(
        id=row.id,
        analysis=row.analysis,
        model=row.model,
        status=row.status,
        text=row.request.get("text"),
        params=row.request.get("params", {}),
        result=row.result if row.status == "done" else None,
        error=row.error if row.status == "error" else None,
        progress=progress,
        created_at=row.created_at,
    )


def _done(cache: CacheDep, analysis_id: str) -> Analysis:
    row = cache.get(analysis_id)
    if row is None:
        raise NotFound(f"No analysis {analysis_id!r}.")
    if row.status != "done":
        raise AppError(f"Analysis {analysis_id} is {row.status}, not done.", code="not_ready", status=409)
    return row


@router.get("/analysis_types")
def analysis_types() -> list[dict]:
    """Every registered analysis with its description and params schema."""
    return [spec.public() for spec in REGISTRY.values()]


@router.post("/analyses", response_model=AnalysisView, dependencies=[TokenDep])
def create_analysis(
    body: AnalysisRequest, settings: SettingsDep, store: StoreDep, cache: CacheDep, jobs: JobsDep
) -> AnalysisView:
    """Run an analysis, or return it from the cache. The id is the sha256 of (analysis, version,
    model id and revision, text, params), so posting the same request again returns the same id
    without recomputing. `status` is `done` with a `result`, or `queued`/`running` with `progress`
    (poll GET /api/analyses/{id}), or `error` with the error body."""
    spec = _spec(body.analysis)
    params = _params(spec, body.params)
    store.entry(body.model)
    text = body.text if spec.takes_text else None
    if text is not None and len(text) > settings.max_tokens * _MAX_CHARS_PER_TOKEN:
        raise TooLong(f"The text has {len(text)} characters; the limit is {settings.max_tokens} tokens.")
    request = {"text": text, "params": params.model_dump(mode="json")}
    key = spec.key(body.model, store.revision(body.model), text, params)
    row = cache.get(key)
    if row is None or row.status != "done":
        if spec.takes_text and not (text and text.strip()):
            raise InvalidInput(f"{spec.name} needs a non-empty `text`.")

        def compute(progress):
            model = store.get(body.model)
            with model.lock:
                output = spec.fn(model, params, Inputs(text=text, max_tokens=settings.max_tokens, progress=progress))
            blobs = output.patterns.blobs() if output.patterns is not None else []
            return output.result.model_dump(mode="json"), blobs

        future = jobs.submit(key, compute, on_new=lambda: cache.begin(key, spec.name, spec.version, body.model, request))
        wait = settings.sync_wait_s if body.wait_s is None else min(body.wait_s, settings.sync_wait_s)
        try:
            future.result(timeout=wait)
        except concurrent.futures.TimeoutError:
            pass
        except AppError:
            raise
        except Exception:  # stored as status `error` by the job runner
            pass
        row = cache.get(key)
    return _view(row, jobs.progress(key))


@router.get("/analyses/{analysis_id}", response_model=AnalysisView)
def get_analysis(analysis_id: str, cache: CacheDep, jobs: JobsDep) -> AnalysisView:
    """The stored analysis: status, request, and its summary result (never the full tensors)."""
    row = cache.get(analysis_id)
    if row is None:
        raise NotFound(f"No analysis {analysis_id!r}.")
    return _view(row, jobs.progress(analysis_id))


def _index(value: int, size: int, name: str) -> int:
    if not 0 <= value < size:
        raise InvalidInput(f"{name} must be in 0..{size - 1}, got {value}.")
    return value


@router.get("/analyses/{analysis_id}/attention", response_model=HeadPattern)
def get_attention(
    analysis_id: str,
    cache: CacheDep,
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
    row = _done(cache, analysis_id)
    result = row.result
    _index(iteration, result["n_iterations"], "iteration")
    _index(layer, result["n_layers"], "layer")
    _index(head, result["n_heads"], "head")
    blob = cache.blob(analysis_id, "pattern", iteration, layer, head)
    if blob is None:
        raise NotFound(f"Analysis {analysis_id} stores no attention patterns.")
    binary_headers = {"X-Shape": ",".join(map(str, blob.shape)), "Cache-Control": "public, max-age=31536000, immutable"}
    if format == "stored":
        return Response(content=blob.data, media_type="application/octet-stream", headers={**binary_headers, "X-Codec": blob.codec})
    pattern = decode_pattern(blob.codec, blob.data, blob.shape)
    if format == "u16":
        data = np.rint(pattern * 65535).astype("<u2").tobytes()
        return Response(content=data, media_type="application/octet-stream", headers=binary_headers)
    return HeadPattern(
        tokens=result["tokens"], iteration=iteration, layer=layer, head=head, pattern=np.round(pattern, 5).tolist()
    )


@router.get("/analyses/{analysis_id}/thumbnails")
def get_thumbnails(analysis_id: str, cache: CacheDep, iteration: Annotated[int, Query()] = 0) -> dict:
    """Max-pooled previews of every head at one iteration: values 0..255, [layer][head][row][col]."""
    row = _done(cache, analysis_id)
    _index(iteration, row.result["n_iterations"], "iteration")
    blob = cache.blob(analysis_id, "thumbnail", iteration, -1, -1)
    if blob is None:
        raise NotFound(f"Analysis {analysis_id} stores no attention patterns.")
    return {"iteration": iteration, "size": blob.shape[-1], "thumbnails": decode_thumbnails(blob.data, blob.shape).tolist()}
