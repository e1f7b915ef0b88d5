"""Datasets for probes: the built-in generators, and parsing an uploaded JSONL/CSV into rows. Thin by design.

An upload is not stored: it is parsed, checked and returned as rows, which the client passes as
`params.rows` of a `probes` request, so the rows are part of the analysis' content key.
"""

import re
from typing import Literal

from fastapi import APIRouter, Query
from starlette.convertors import StringConvertor, register_url_convertor
from pydantic import AfterValidator, BaseModel, Field
from typing_extensions import Annotated

from ...analyses.registry import MAX_SEED
from ...analyses.datasets import BUILT_IN, MAX_ROWS, MAX_UPLOAD_BYTES, Row, parse_upload
from ...hashing import check_encodable

router = APIRouter(tags=["datasets"])


class _BuiltInName(StringConvertor):
    """Routes `/datasets/{name}` only for the built-in names, so that `/datasets/parse` belongs to
    the upload route alone (a GET there is 405 with `Allow: POST`, not a lookup of a dataset "parse")."""

    regex = "|".join(re.escape(name) for name in BUILT_IN)


register_url_convertor("built_in_dataset", _BuiltInName())


class BuiltIn(BaseModel):
    name: str
    description: str


class Upload(BaseModel):
    format: Literal["jsonl", "csv"] = Field(description="`jsonl`: one {text, label[, prompt, answer]} per line; `csv`: a header row with those columns.")
    content: Annotated[str, AfterValidator(lambda text: check_encodable(text, "The upload"))] = Field(
        max_length=MAX_UPLOAD_BYTES, description="The file's text."
    )


class Rows(BaseModel):
    rows: list[Row]
    n_rows: int
    label_counts: dict[str, int]
    label_tokens: dict[str, str] = {}
    n_with_answer: int


def _rows(rows: list[Row], label_tokens: dict[str, str] | None = None) -> Rows:
    counts: dict[str, int] = {}
    for row in rows:
        counts[row.label] = counts.get(row.label, 0) + 1
    return Rows(
        rows=rows,
        n_rows=len(rows),
        label_counts=counts,
        label_tokens=label_tokens or {},
        n_with_answer=sum(row.answer is not None for row in rows),
    )


@router.get("/datasets", response_model=list[BuiltIn])
def built_in_datasets() -> list[BuiltIn]:
    """The built-in generators a `probes` request may name as `dataset`."""
    return [BuiltIn(name=name, description=" ".join((fn.__doc__ or "").split())) for name, fn in BUILT_IN.items()]


@router.get("/datasets/{name:built_in_dataset}", response_model=Rows)
def built_in_rows(
    name: str,
    n: int = Query(20, ge=1, le=MAX_ROWS),
    seed: int = Query(0, ge=0, le=MAX_SEED),
) -> Rows:
    """The rows a built-in generator makes for (n, seed): what `probes` reads with the same params."""
    dataset = BUILT_IN[name](n, seed)
    return _rows(dataset.rows, dataset.label_tokens)


@router.post("/datasets/parse", response_model=Rows)
def parse_dataset(body: Upload) -> Rows:
    """Parse an uploaded JSONL or CSV of `text,label` (optionally `prompt,answer`) into checked
    rows: at most 2000, two labels or more with 5 rows each. Nothing is stored."""
    return _rows(parse_upload(body.content, body.format))
