"""Schemathesis against /openapi.json of a real server, every check on, seeded and bounded.

Two runs share one server (the tiny GPT-2 in LOUPE_MODEL_DIRS, LOUPE_JOB_TIMEOUT_S=20, a per-client
job limit the fuzzer cannot reach):

* stateless: the coverage phase's deterministic cases, then Hypothesis cases, positive and negative,
  for every operation;
* stateful: Schemathesis' state machine over the OpenAPI links of POST /api/analyses (its `id` feeds
  get_analysis, get_attention, get_thumbnails and delete_analysis).

A POST /api/analyses body names a real analysis (GET /api/analysis_types) and a real model (GET
/api/models); a positive one is mostly *curated*: text and params drawn small and valid for the
analysis it names, so the server must accept it and compute it in well under a second. The rest of
each body stays generated. Every check Schemathesis 4 calls `all` runs, on every response. Two
narrowings, both false positives: negative_data_rejection also takes 413 (a body over the
server's size limit is refused unread), and `_keep_failure` drops positive_data_acceptance on an
answer of the app's own semantic validation (see there for why, and what still fails).

Reproduce a failure: the seed is SEED; each failure prints a curl line.
"""

import csv
import io
import json
import time

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, seed, settings
from hypothesis.errors import Flaky, Unsatisfiable
from hypothesis import strategies as st
from schemathesis.checks import CHECKS, load_all_checks
from schemathesis.core.failures import FailureGroup
from schemathesis.engine.errors import is_inconsistent_replay
from schemathesis.generation.modes import GenerationMode
from schemathesis.openapi.checks import RejectedPositiveData

from ..server import running_server

pytestmark = pytest.mark.slow

SEED = 20261201
EXAMPLES_PER_OPERATION_AND_MODE = 100  # Hypothesis cases per (operation, positive|negative)
STATEFUL_SCENARIOS = 300
STATEFUL_STEPS = 10  # at most, per scenario
MAX_STATEFUL_RUNS = 5
TIMEOUT_S = 60  # per request; LOUPE_JOB_TIMEOUT_S stops a computation after 20 s
MAX_SEED = 2**31 - 1

# Text and characters a tokenizer sees: valid UTF-8, no lone surrogates, short (at most ~80 tokens of
# byte-level BPE, under the tiny model's context of 128 with room for generated tokens).
TEXT = st.text(st.characters(codec="utf-8"), min_size=1, max_size=20).filter(lambda s: s.strip())
LABEL = st.text(st.characters(codec="utf-8", categories=("L", "N")), min_size=1, max_size=8)
LOOP = st.none() | st.fixed_dictionaries({"times": st.integers(1, 3)})
SEEDS = st.integers(0, MAX_SEED)
LOOP_ONLY = st.fixed_dictionaries({}, optional={"loop": LOOP})


@st.composite
def _eval_jsonl(draw) -> str:
    """4 to 8 hallucination_eval rows, both labels present, short enough for a 128-token model."""
    n = draw(st.integers(2, 4))
    rows = [
        {"context": draw(TEXT), "question": draw(TEXT), "label": label}
        for label in (0, 1)
        for _ in range(n)
    ]
    return "\n".join(json.dumps(row) for row in rows)


# Small valid params per registered analysis: each computes in well under a second on the tiny model.
# An analysis not named here (registered later) gets `{}`, or only a small `loop` if it takes one.
PARAMS = {
    "head_scores": st.fixed_dictionaries(
        {"seq_len": st.integers(4, 16), "batch": st.integers(1, 3)}, optional={"seed": SEEDS, "loop": LOOP}
    ),
    "logit_lens": st.fixed_dictionaries(
        {}, optional={"position": st.sampled_from([-1, 0]), "top_k": st.integers(1, 20), "loop": LOOP}
    ),
    "probes": st.fixed_dictionaries(
        {"dataset": st.sampled_from(["addition", "arithmetic_statements"]), "n": st.integers(20, 40),
         "folds": st.integers(2, 3)},
        optional={"seed": SEEDS, "position": st.sampled_from([-1, 0]), "loop": LOOP},
    ),
    "head_metrics": st.fixed_dictionaries(
        {"n_texts": st.integers(1, 4), "max_tokens": st.integers(100, 128), "top_k": st.integers(1, 4)},  # 20 UTF-8 chars fit
        optional={"loop": LOOP},
    ) | st.fixed_dictionaries(
        {"corpus": st.just("texts"), "texts": st.lists(TEXT, min_size=1, max_size=3), "max_tokens": st.integers(100, 128)},
        optional={"top_k": st.integers(1, 4), "loop": LOOP},
    ),
    "emergence": st.fixed_dictionaries(  # applies only to a model with checkpoints (none here: refused)
        {"seq_len": st.integers(4, 8), "batch": st.integers(1, 2), "n_texts": st.integers(1, 2), "icl_late": st.integers(20, 40)},
        optional={"seed": SEEDS},
    ),
    "data_attribution": st.fixed_dictionaries(  # applies only to a zoo model with training data (none here: refused)
        {"n_steps": st.integers(1, 2), "n_checkpoints": st.integers(1, 2), "seq_len": st.integers(4, 8)},
        optional={"seed": SEEDS, "layer": st.integers(0, 2), "head": st.integers(0, 4), "top_k": st.integers(1, 3)},
    ),
    "hallucination": st.fixed_dictionaries(
        {"max_new_tokens": st.integers(1, 4)},
        optional={"sample": st.booleans(), "temperature": st.floats(0.1, 2), "seed": SEEDS, "top_k": st.integers(1, 8),
                  "min_induction": st.floats(0, 1), "threshold": st.floats(0, 1)},
    ),
    "hallucination_eval": st.fixed_dictionaries(
        {"source": st.just("jsonl"), "jsonl": _eval_jsonl(), "max_new_tokens": st.integers(1, 2)},
        optional={"top_k": st.integers(1, 8), "min_induction": st.floats(0, 1), "train_fraction": st.floats(0.2, 0.8)},
    ),
}


# Analyses whose valid params depend on the model's tokenizer in ways a strategy cannot know (patching:
# two prompts of equal token length, one-token answers with a logit gap): their cases stay raw, where
# the app's own 422 is a semantic refusal; tests/api/test_patching.py covers their valid requests.
UNCURATED = {"patching"}


# layer, head and iteration of a slice: mostly near the tiny model's range (2 layers, 4 heads, 1 iteration)
NEAR = st.fixed_dictionaries({name: st.integers(-1, 4) for name in ("layer", "head", "iteration")})


# Raw CSV-like text (header words, separators, quotes, bare CR/LF): what trips a CSV reader
CSVISH = st.lists(st.sampled_from(["text", "label", ",", '"', "\r", "\n", "\r\n", "a", "b", " ", "1"]), max_size=30).map("".join)


@st.composite
def _upload(draw) -> dict:
    """A valid POST /api/datasets/parse body: 2 or 3 labels with 5 to 7 rows each, as CSV or JSONL."""
    labels = draw(st.lists(LABEL, min_size=2, max_size=3, unique=True))
    rows = [{"text": draw(TEXT), "label": label} for label in labels for _ in range(draw(st.integers(5, 7)))]
    if draw(st.booleans()):
        return {"format": "jsonl", "content": "\n".join(json.dumps(row) for row in rows)}
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=["text", "label"])
    writer.writeheader()
    writer.writerows(rows)
    return {"format": "csv", "content": out.getvalue()}


def all_checks() -> list:
    """The checks Schemathesis 4 runs for `--checks all`: every registered one."""
    load_all_checks()
    return [CHECKS.get_one(name) for name in CHECKS.get_all_names()]


class Fuzz:
    """One schema with its hooks, and what they did."""

    def __init__(self, url: str):
        self.url = url
        with httpx.Client(base_url=url, timeout=30) as client:
            types = client.get("/api/analysis_types").json()
            models = client.get("/api/models").json()
        self.models = [model["id"] for model in models]
        self.analyses = {spec["name"]: spec for spec in types}
        assert self.models and self.analyses
        # where each analysis applies: a curated case never names a model lacking what it needs (an
        # exit gate, a loop), which the server rightly refuses before any work
        inputs = {"text", "labelled_data"}
        self.applies = {
            spec["name"]: [m["id"] for m in models if set(spec["needs"]) - inputs <= set(m["capabilities"])] for spec in types
        }
        # every params field of every analysis: generated params keep only keys none of them reads
        self.param_fields = {field for spec in types for field in spec["params"].get("properties", {})}
        self.curated: set[str] = set()  # ids of positive cases built semantically valid
        self.filtered: dict[str, int] = {}
        self.statuses: dict[str, dict[int, int]] = {}
        self.schema = schemathesis.openapi.from_url(f"{url}/openapi.json")
        self.schema.config.seed = SEED
        # every check on (the default of a loaded schema; said here so that a config file cannot narrow it)
        self.schema.config.checks.update(included_check_names=["all"])
        # A negative body over LOUPE_MAX_BODY_BYTES (e.g. `content` past its maxLength of 2 MB) is
        # refused with 413 before it is parsed: a rejection, which the check's default list omits.
        rejection = self.schema.config.checks.negative_data_rejection
        rejection.expected_statuses = [*rejection.expected_statuses, "413"]
        self.schema.hook(self._flatmap_case())
        self.schema.hook(self._flatmap_query())
        self.schema.hook(self._filter_failure())

    # --- hooks ---------------------------------------------------------------------------------

    def _flatmap_case(self):
        fuzz = self

        def flatmap_case(context, case):
            label = case.operation.label
            if label == "POST /api/analyses" and isinstance(case.body, dict):
                return fuzz._analysis_case(case)
            if label == "POST /api/datasets/parse" and isinstance(case.body, dict) and fuzz._positive(case):
                return st.one_of(
                    st.just(None).map(lambda _: case),  # generated content
                    CSVISH.map(lambda content: fuzz._with(case, {"format": "csv", "content": content})),
                    CSVISH.map(lambda content: fuzz._with(case, {"format": "csv", "content": content})),
                    _upload().map(lambda body: fuzz._curate(case, body)),
                )
            return st.just(case)

        return flatmap_case

    @staticmethod
    def _flatmap_query():
        def flatmap_query(context, query):
            """Half of the slice queries get layer/head/iteration near the tiny model's range. A hook on
            the query strategy, not on the case: what it draws stays generated (a change to a built
            case reads to the checks as a value the client supplied). Only integers are replaced, so
            a negative query (a non-integer) stays negative."""
            if context.operation is None or not context.operation.path.endswith(("/attention", "/thumbnails")):
                return st.just(query)
            if not isinstance(query, dict):
                return st.just(query)
            ints = [k for k in ("layer", "head", "iteration") if type(query.get(k)) is int]
            near = NEAR.map(lambda new: {**query, **{k: new[k] for k in ints}})
            return st.one_of(st.just(query), near)

        return flatmap_query

    def _analysis_case(self, case):
        body = case.body
        # the analyses that store patterns twice as often: the links to their slices have something to read
        names = st.sampled_from(sorted(self.analyses) + sorted(n for n, a in self.analyses.items() if a["stores_patterns"]))
        models = st.sampled_from(self.models)
        # raw: the generated text, params and wait_s, with real names; expensive params capped
        raw = st.fixed_dictionaries({"analysis": names, "model": models}).map(
            lambda real: self._with(case, {**real, **self._capped(body)})
        )
        if not self._positive(case):
            # negative: swap in real names only where the generated value is a string, so a type
            # mutation or a missing property stays what makes the body invalid
            return st.fixed_dictionaries({"analysis": names, "model": models}).map(
                lambda real: self._with(case, {k: v for k, v in real.items() if isinstance(body.get(k), str)})
            )

        def curated(name: str):
            spec = self.analyses[name]
            if not self.applies[name] or name in UNCURATED:  # a raw case instead
                return raw
            return st.fixed_dictionaries(
                {
                    "analysis": st.just(name),
                    "model": st.sampled_from(self.applies[name]),
                    "text": TEXT if spec["takes_text"] else st.none(),
                    "params": PARAMS.get(name, LOOP_ONLY if spec["takes_loop"] else st.just({})),
                    "wait_s": st.none() | st.floats(0, 2),
                }
            ).map(lambda new: self._curate(case, new))

        return st.one_of(names.flatmap(curated), names.flatmap(curated), names.flatmap(curated), raw)

    def _capped(self, body: dict) -> dict:
        params = {k: v for k, v in (body.get("params") or {}).items() if k not in self.param_fields}
        wait = body.get("wait_s")
        return {"params": params, "wait_s": None if wait is None else min(wait, 2.0)}

    @staticmethod
    def _positive(case) -> bool:
        return case.meta is not None and case.meta.generation.mode == GenerationMode.POSITIVE

    @staticmethod
    def _with(case, updates: dict):
        case.body = {**case.body, **updates}
        return case

    def _curate(self, case, body: dict):
        case.body = body
        self.curated.add(case.id)
        return case

    def _filter_failure(self):
        fuzz = self

        def filter_failure(context, failure, case, response):
            return fuzz._keep_failure(failure, case, response)

        return filter_failure

    def _keep_failure(self, failure, case, response) -> bool:
        """positive_data_acceptance flags a positive case answered 4xx. A body the schema calls valid
        can still be meaningless: params that must match the named analysis, text for an analysis
        that reads one, a dataset upload's content that must parse as CSV/JSONL with 2 labels,
        `layer` within the analysis' layers. The schema cannot say any of that (params is an open
        object, content a string), so such a case answered by the app's own semantic validation
        (an ErrorBody 413 too_long, or a 422: invalid_input, or a refusal naming what the model lacks,
        such as no_exit_gate; not FastAPI's request validation, whose message starts `Invalid
        request.`) is a false positive. Kept: every other failure, any
        rejection of a curated (semantically valid) case, and any FastAPI validation rejection,
        which would be the schema promising what the server refuses."""
        if not isinstance(failure, RejectedPositiveData) or case.id in self.curated:
            return True
        try:
            body = response.json()
        except ValueError:
            return True
        semantic = (
            isinstance(body, dict)
            and ((response.status_code, body.get("code")) == (413, "too_long") or response.status_code == 422)
            and not str(body.get("error", "")).startswith("Invalid request.")
        )
        if semantic:
            key = f"{case.operation.label} {response.status_code}"
            self.filtered[key] = self.filtered.get(key, 0) + 1
        return not semantic

    # --- bookkeeping ---------------------------------------------------------------------------

    def record(self, case, response) -> None:
        mode = "+" if self._positive(case) else "-"
        counts = self.statuses.setdefault(case.operation.label, {})
        key = f"{mode}{response.status_code}"
        counts[key] = counts.get(key, 0) + 1


@pytest.fixture(scope="module")
def fuzz(model_dir, tmp_path_factory, fresh_database):
    tmp = tmp_path_factory.mktemp("fuzz")
    env = {
        "LOUPE_DATA_DIR": str(tmp / "data"),
        "LOUPE_DATABASE_URL": fresh_database(tmp / "data"),
        "LOUPE_MODEL_DIRS": str(model_dir),
        "LOUPE_ZOO_DIR": str(tmp / "zoo"),
        "LOUPE_JOB_TIMEOUT_S": "20",
        "LOUPE_MAX_JOBS_PER_CLIENT": "1000",
    }
    with running_server(env, tmp / "server.log") as server:
        yield Fuzz(server.url)


def _report(kind: str, fuzz: Fuzz, runs: int, failures: list[str], started: float) -> None:
    print(f"\nschemathesis {kind}: {runs}, {len(failures)} failing, seed {SEED}, {time.monotonic() - started:.0f} s")
    print(f"  statuses: {json.dumps({k: dict(sorted(v.items())) for k, v in sorted(fuzz.statuses.items())})}")
    print(f"  positive 4xx left to the app's semantic validation: {fuzz.filtered}")
    for failure in failures:
        print(failure)


def test_stateless_every_operation_every_check(fuzz):
    started = time.monotonic()
    fuzz.statuses.clear(), fuzz.filtered.clear()
    checks = all_checks()
    operations = [result.ok() for result in fuzz.schema.get_all_operations()]
    assert len(operations) >= 10
    failures: list[str] = []
    unsatisfiable: list[str] = []
    cases = 0

    def run(case) -> None:
        nonlocal cases
        cases += 1
        response = case.call(timeout=TIMEOUT_S)
        fuzz.record(case, response)
        try:
            case.validate_response(response, checks=checks)
        except (AssertionError, FailureGroup) as exc:  # collected, reported at the end
            failures.append(f"--- {case.operation.label}\n{exc}")

    for operation in operations:
        config = fuzz.schema.config.generation_for(operation=operation)
        for case in fuzz.schema.iter_coverage_cases(operation, generation_modes=list(GenerationMode), generation_config=config):
            run(case)
        for mode in GenerationMode:

            @seed(SEED)
            @given(case=operation.as_strategy(generation_mode=mode))
            @settings(max_examples=EXAMPLES_PER_OPERATION_AND_MODE, deadline=None, database=None,
                      suppress_health_check=list(HealthCheck), phases=[Phase.generate])
            def check(case):
                run(case)

            try:
                check()
            except Unsatisfiable:
                # nothing to make invalid: no parameters and no body, or only unconstrained strings
                assert mode == GenerationMode.NEGATIVE, operation.label
                unsatisfiable.append(operation.label)
    print(f"\nno negative Hypothesis case exists for {unsatisfiable}")
    _report(f"stateless, {cases} cases over {len(operations)} operations", fuzz, cases, failures, started)
    assert not failures, f"{len(failures)} failing cases (seed {SEED})"
    assert cases >= len(operations) * EXAMPLES_PER_OPERATION_AND_MODE


def test_stateful_links_from_post_every_check(fuzz):
    started = time.monotonic()
    fuzz.statuses.clear(), fuzz.filtered.clear()
    base = fuzz.schema.as_state_machine()
    steps = scenarios = 0
    linked: dict[str, int] = {}

    class Machine(base):
        def setup(self):
            nonlocal scenarios
            scenarios += 1

        def get_call_kwargs(self, case):
            return {"timeout": TIMEOUT_S}

        def after_call(self, response, case):
            nonlocal steps
            super().after_call(response, case)
            steps += 1
            fuzz.record(case, response)
            if case.operation.label != "POST /api/analyses" and case._override is not None and case._override.path_parameters:
                linked[case.operation.label] = linked.get(case.operation.label, 0) + 1

        def validate_response(self, response, case, additional_checks=None, **kwargs):
            try:
                super().validate_response(response, case, additional_checks, **kwargs)
            except (AssertionError, FailureGroup) as exc:
                # kept as first seen: Hypothesis' replay of a failing scenario meets a server whose
                # state has moved on, and may only report that the replay diverged
                seen.append(f"--- {case.operation.label}\n{exc}")
                raise

    failures: list[str] = []
    seen: list[str] = []
    restarts = 0
    # As Schemathesis' own runner does: a run that Hypothesis stops as flaky (the same draws met a
    # server whose state, or timing, gave other answers, so other rules were drawn) is no failure;
    # another run, seeded SEED + n, continues until STATEFUL_SCENARIOS scenarios ran. A check failure
    # always ends it, with the failures seen as they happened.
    for attempt in range(MAX_STATEFUL_RUNS):
        try:
            seed(SEED + attempt)(Machine).run(
                settings=settings(max_examples=STATEFUL_SCENARIOS - scenarios, stateful_step_count=STATEFUL_STEPS,
                                  deadline=None, database=None, suppress_health_check=list(HealthCheck),
                                  phases=[Phase.generate])
            )
            break
        except (Flaky, AssertionError, FailureGroup) as exc:
            inconsistent = isinstance(exc, Flaky) or (isinstance(exc, AssertionError) and is_inconsistent_replay(exc))
            if seen or not inconsistent:
                failures.extend(seen or [str(exc)])
                break
            restarts += 1
            if scenarios >= STATEFUL_SCENARIOS:
                break
    _report(f"stateful, {steps} steps in {scenarios} scenarios ({restarts} runs stopped as flaky and continued), "
            f"calls through links {linked}", fuzz, steps, failures, started)
    assert not failures, f"stateful run failed (seed {SEED})"
    assert linked, "no call followed a link from POST /api/analyses"
