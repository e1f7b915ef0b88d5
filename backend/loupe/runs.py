"""The run service: everything between a validated request and a stored result, or a stored failure.

key -> cache lookup -> single-flight job -> model lock -> the analysis function -> encoded slices
-> store. Failures of every kind are stored with their error body (AppError.body()), so a GET
answers them with status `error` and the cause; nothing is lost to a log. An analysis that needs
another's result asks through `Inputs.require`, which answers from the cache or computes and
stores it. Routes call this; nothing below it knows about HTTP.
"""

import asyncio
import logging
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta
from functools import partial

import torch
from pydantic import BaseModel, ValidationError

from .analyses import REGISTRY, AnalysisOutput, AnalysisSpec, Inputs
from .attention_rule import AttentionRule, Block
from .capture import require_attention
from .codec import decode_f32, decode_pattern
from .config import Settings
from .db.cache import ResultCache
from .db.tables import Analysis, Blob, now
from .errors import AnalysisFailed, AppError, Interrupted, InvalidInput, NoPatterns, NotFound, NotReady, TooLong, UnknownAnalysis
from .hashing import check_encodable
from .jobs import JobRunner
from .loops import LoopSpec, seed_of, seeded
from .model_store import LoadedModel, ModelStore
from .progress import Nested, Progress

log = logging.getLogger(__name__)

# Characters per token can exceed 1 only so far; longer texts are refused before tokenizing.
MAX_CHARS_PER_TOKEN = 32


@dataclass
class HeadRows:
    """One head's pattern at one iteration: T, and rows(start, end) giving rows [start, end) a Block at a time."""

    n_pos: int
    rows: Callable[[int, int | None], Iterator[Block]]

    def whole(self) -> torch.Tensor:
        """The whole pattern: float32 [query_pos, key_pos]."""
        return torch.cat([block.full(self.n_pos) for block in self.rows(0, None)])


@dataclass(frozen=True)
class Run:
    """A validated request: what is computed, and its content key (cache key and permalink id)."""

    key: str
    spec: AnalysisSpec
    model: str
    text: str | None
    params: BaseModel

    @property
    def request(self) -> dict:
        return {"text": self.text, "params": self.params.model_dump(mode="json")}

    @property
    def payload(self) -> dict:
        """The request as a worker process plans it again (the queue's job arguments)."""
        return {"analysis": self.spec.name, "model": self.model, **self.request}


def spec_of(name: str) -> AnalysisSpec:
    spec = REGISTRY.get(name)
    if spec is None:
        raise UnknownAnalysis(f"Unknown analysis {name!r}; known: {', '.join(sorted(REGISTRY))}.")
    return spec


def validate_params(spec: AnalysisSpec, raw: dict) -> BaseModel:
    """The typed params, or InvalidInput naming what is wrong. An unknown name is refused rather
    than ignored: a misspelt param would silently run the default and show the wrong thing."""
    unknown = sorted(set(raw) - set(spec.params.model_fields))
    if unknown:
        shown = ", ".join(repr(name[:40]) for name in unknown[:5])
        raise InvalidInput(f"Unknown params for {spec.name}: {shown}; known: {', '.join(spec.params.model_fields)}.")
    try:
        return spec.params.model_validate(raw)
    except ValidationError as exc:
        details = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'params'}: {e['msg']}" for e in exc.errors()[:5])
        raise InvalidInput(f"Invalid params for {spec.name}: {details}") from None
    except RecursionError:
        raise InvalidInput(f"Invalid params for {spec.name}: nested too deeply.") from None


class RunService:
    def __init__(self, settings: Settings, store: ModelStore, cache: ResultCache, jobs: JobRunner):
        self.settings, self.store, self.cache, self.jobs = settings, store, cache, jobs

    # ---- requests --------------------------------------------------------------------------

    def plan(self, analysis: str, model: str, text: str | None, params: dict) -> Run:
        """A Run for a request, or the AppError saying what is wrong with it (before any work)."""
        spec = spec_of(analysis)
        valid = validate_params(spec, params)
        self.store.require_loadable(model)
        for need in spec.enforced_needs:
            if (refusal := self.store.refusal(model, need)) is not None:
                raise refusal
        text = text if spec.takes_text else None
        if spec.takes_text:
            if not (text and text.strip()):
                raise InvalidInput(f"{spec.name} needs a non-empty `text`.")
            if len(text) > self.settings.max_tokens * MAX_CHARS_PER_TOKEN:
                raise TooLong(f"The text has {len(text)} characters; the limit is {self.settings.max_tokens} tokens.")
        valid = self._check_loop(model, valid)
        check_encodable({"text": text, "params": valid.model_dump(mode="json")})
        return Run(spec.key(model, self.store.revision(model), text, valid), spec, model, text, valid)

    def count_tokens(self, model_id: str, text: str, truncate: bool) -> dict:
        """{"n_tokens", "limit", "truncated"}: the text's tokens on the model and its limit (with
        `truncate`, the text cut to its first `limit` tokens). Counted where the models live: in this
        process, or on a worker when analyses go to a queue, so a web process loads no model."""
        self.store.require_loadable(model_id)
        if (refusal := self.store.refusal(model_id, "tokenizer")) is not None:
            raise refusal
        if len(text) > self.settings.max_tokens * MAX_CHARS_PER_TOKEN:
            raise TooLong(f"The text has {len(text)} characters; the limit is {self.settings.max_tokens} tokens.")
        if self.jobs.remote:
            return self.jobs.call("loupe.redis_jobs.count_tokens", model_id, text, truncate)
        return self.tokens(model_id, text, truncate)

    def tokens(self, model_id: str, text: str, truncate: bool) -> dict:
        """count_tokens' answer, computed in this process (loads the model)."""
        model = self.store.get(model_id)
        limit = model.token_limit(self.settings.max_tokens)
        with model.lock:  # a fast tokenizer is not to be used by two threads at once ("Already borrowed")
            n_tokens = model.token_ids(text).shape[-1]
            truncated = None
            if truncate and n_tokens > limit:
                cut, ids = model.first_tokens(text, limit)
                truncated = {"text": cut, "n_tokens": len(ids)}
        return {"n_tokens": n_tokens, "limit": limit, "truncated": truncated}

    def _check_loop(self, model: str, params: BaseModel) -> BaseModel:
        """The loop count within LOUPE_MAX_ITERATIONS; a seed only for a model that draws random
        numbers, and there always one (0 unless given), so the key names the draw it shows."""
        if "loop" not in type(params).model_fields:
            return params
        loop = params.loop
        if loop is not None and loop.times is not None and loop.times > self.settings.max_iterations:
            raise InvalidInput(f"loop.times is {loop.times}; this server runs at most {self.settings.max_iterations} iterations.")
        entry = self.store.entry(model)
        if entry.fixed_loop and loop is not None and (loop.start, loop.end, loop.times) != (None, None, None):
            raise InvalidInput(
                f"{model} loops natively, and its loop is set by its config ({entry.n_iterations} iterations: HRM's "
                "H_cycles x L_cycles), not by a loop count; run it without `loop`."
            )
        draws = entry.draws_random
        if not draws:
            if loop is not None and loop.seed is not None:
                raise InvalidInput(f"{model} draws no random numbers in its forward pass, so loop.seed would change nothing.")
            return params
        loop = (loop or LoopSpec()).model_copy(update={"seed": seed_of(params)})
        return params.model_copy(update={"loop": loop})

    def submit(self, run: Run, client: str = "") -> Future | None:
        """Start computing `run` unless it is stored done (None) or already in flight (its future)."""
        row = self.cache.read(run.key)
        if row is not None and row.status == "done":
            return None
        begin = partial(self.cache.begin, run.key, run.spec.name, run.spec.version, run.model, run.request)
        return self.jobs.submit(run.key, partial(self.execute, run), client, on_new=begin, payload=run.payload)

    @staticmethod
    async def wait(future: Future | None, seconds: float) -> None:
        """Wait up to `seconds` for a job without holding a thread (and without cancelling it)."""
        if future is not None and seconds > 0:
            await asyncio.wait({asyncio.wrap_future(future)}, timeout=seconds)

    def read(self, key: str) -> Analysis:
        row = self.cache.read(key)
        if row is None:
            raise NotFound(f"No analysis {key!r}.")
        return row

    def history(self, **filters: object) -> tuple[list[Analysis], int]:
        """Stored analyses newest first, filtered (model, analysis, status) and paged (limit, offset)."""
        return self.cache.page(**filters)

    def progress(self, key: str) -> dict | None:
        return self.jobs.progress(key)

    def delete(self, key: str) -> None:
        """Remove a stored analysis (a job still running for it finishes and stores nothing)."""
        if not self.cache.delete(key):
            raise NotFound(f"No analysis {key!r}.")

    def done(self, key: str) -> Analysis:
        """A done analysis, or the error saying why it is not (unknown: 404, not done: 409)."""
        row = self.read(key)
        if row.status != "done":
            hint = " POST its request again to recompute it." if row.status == "evicted" else ""
            raise NotReady(f"Analysis {key} is {row.status}, not done.{hint}")
        return row

    def pattern(self, key: str, name: str, iteration: int, layer: int = -1, head: int = -1) -> tuple[Analysis, Blob]:
        """A done analysis and one of its stored slices, or the error saying why there is none."""
        row = self.done(key)
        if not spec_of(row.analysis).stores_patterns:
            raise NoPatterns(f"Analysis {key} is a {row.analysis}, which stores no attention patterns.")
        sizes = {"iteration": (iteration, row.result["n_iterations"])}
        if name in ("pattern", "query"):
            sizes |= {"layer": (layer, row.result["n_layers"]), "head": (head, row.result["n_heads"])}
        for what, (value, size) in sizes.items():
            if not 0 <= value < size:
                raise InvalidInput(f"{what} must be in 0..{size - 1}, got {value}.")
        attending = row.result.get("attention_layers")
        if name in ("pattern", "query") and attending is not None and layer not in attending:
            raise NoPatterns(
                f"Layer {layer} of {row.model} has no attention (a state-space, linear or convolution layer of a "
                f"hybrid stack); the layers with attention are {attending}."
            )
        blob = self.cache.blob(key, name, iteration, layer, head)
        if blob is None:
            raise NoPatterns(f"Analysis {key} stores no {name} at iteration {iteration}.")
        return row, blob

    def head(self, key: str, iteration: int, layer: int, head: int) -> tuple[Analysis, "HeadRows"]:
        """A done analysis and one head's pattern at one iteration, to be read a block of rows at a
        time: decoded from the stored pattern, or recomputed exactly from the kept queries, keys and
        rule (`pattern_source: recomputed`). Unknown or out-of-range ids are refused here."""
        row = self.done(key)
        if row.result.get("pattern_source") != "recomputed":
            row, blob = self.pattern(key, "pattern", iteration, layer, head)
            pattern = torch.from_numpy(decode_pattern(blob.codec, blob.data, blob.shape))  # [query_pos, key_pos]
            return row, HeadRows(pattern.shape[0], lambda start, end: iter([Block(start, 0, pattern[start:end])]))
        row, query = self.pattern(key, "query", iteration, layer, head)
        rule = AttentionRule.from_bytes(self.pattern(key, "rule", iteration, layer, -1)[1].data)
        _, keys = self.pattern(key, "key", iteration, layer, head // rule.groups)
        query_, keys_ = decode_f32(query.data, query.shape), decode_f32(keys.data, keys.shape)
        return row, HeadRows(rule.n_pos, lambda start, end: rule.of_head(head).head(query_, keys_, start, end))

    # ---- computing (in a job's thread) -------------------------------------------------------

    def execute(self, run: Run, progress: Progress) -> None:
        """Compute, encode and store `run`; any failure is stored with its error body."""
        if (row := self.cache.get(run.key)) is not None and row.status == "done":
            return  # finished by a job that ended between the caller's cache check and this one
        self.cache.set_status(run.key, "running")
        try:
            model = self.store.get(run.model)
            with model.lock:
                output = self._compute(run.spec, model, run.text, run.params, progress)
            progress.stage = "storing"
            self._store(run.key, output)
        except AppError as exc:
            self.cache.fail(run.key, exc.body())
        except Exception as exc:
            log.exception("analysis %s (%s on %s) failed", run.key, run.spec.name, run.model)
            self.cache.fail(run.key, AnalysisFailed.of(exc).body())

    def _compute(
        self, spec: AnalysisSpec, model: LoadedModel, text: str | None, params: BaseModel, progress: Progress
    ) -> AnalysisOutput:
        if "attention" in spec.needs:
            require_attention(model)  # the loaded structure has the last word (hybrid stacks)
        require = partial(self._require, model, progress)
        inputs = Inputs(
            text=text, max_tokens=self.settings.max_tokens, max_stored_tokens=self.settings.max_stored_tokens, progress=progress, require=require, model_at=partial(self._model_at, model)
        )
        with seeded(model, seed_of(params)):
            return spec.fn(model, params, inputs)

    def _require(self, model: LoadedModel, progress: Progress, name: str, params: BaseModel, on: LoadedModel | None = None) -> dict:
        """Another analysis' result on `model`, or on `on` (a model from _model_at), its lock held by
        the caller: cached, or computed here and stored as its own analysis. Its own progress
        reports only check the time limit: the bar is the requiring analysis'."""
        spec, model = spec_of(name), on or model
        key = spec.key(model.id, model.revision, None, params)
        row = self.cache.read(key)
        if row is not None and row.status == "done":
            return row.result
        self.cache.begin(key, spec.name, spec.version, model.id, {"text": None, "params": params.model_dump(mode="json")})
        output = self._compute(spec, model, None, params, Nested(progress))
        return self._store(key, output)

    @contextmanager
    def _model_at(self, model: LoadedModel, model_id: str) -> Iterator[LoadedModel]:
        """Another model (a checkpoint of `model`, whose lock the caller holds), its lock held
        inside; booted for this use alone unless it is loaded already (store.get keep=False)."""
        if model_id == model.id:
            yield model
            return
        other = self.store.get(model_id, keep=False)
        with other.lock:
            yield other

    def _store(self, key: str, output: AnalysisOutput) -> dict:
        result = output.result.model_dump(mode="json")
        self.cache.store(key, result, output.patterns.slices() if output.patterns is not None else [])
        self.housekeep(keep=(key,))
        return result

    def housekeep(self, keep: tuple[str, ...] = ()) -> None:
        """Expire old failures and keep what is stored under LOUPE_MAX_DB_BYTES (never evicting `keep`)."""
        self.cache.expire_failures(now() - timedelta(seconds=self.settings.failed_ttl_s))
        if self.settings.max_db_bytes is not None:
            evicted = self.cache.evict_to(self.settings.max_db_bytes, keep)
            if evicted:
                log.info("evicted %d analyses to stay under %d bytes", len(evicted), self.settings.max_db_bytes)

    def recover(self) -> None:
        """At start-up: jobs a dead process left queued or running become failures (re-runnable);
        those still in the queue's hands (queued or running on a worker) are left to it."""
        body = Interrupted("The computation was interrupted by a server restart; submit it again.").body()
        if interrupted := self.cache.fail_interrupted(body, keep=self.jobs.in_flight()):
            log.warning("marked %d interrupted analyses as failed", interrupted)
        self.housekeep()
