"""`hallucination_eval`: how well each attention signal separates made-up answers from grounded ones.

Each labelled row (context, question, and a label or a reference answer) is answered greedily with
the KV cache; every signal of `hallucination` is averaged over the answer's tokens, and scored by
AUROC against the labels: BOS attention of the retrieval heads, of all heads, the Lookback Lens
ratio, and a logistic-regression detector over per-head features trained on a stratified split.
Rows come from the built-in key-value set (loupe.facts) or from JSONL in the params.
"""

from typing import Literal

import numpy as np
import torch
from pydantic import BaseModel, Field, field_validator, model_validator

from ..errors import TooLong
from ..facts import ANIMALS, MAX_FACTS, MIN_FACTS, builtin_rows
from ..generation import generate_with_attention
from ..model_store import LoadedModel
from .datasets import json_line
from .hallucination import head_labels, induction_by_head, no_retrieval_heads, token_signals, top_heads
from .registry import MAX_SEED, AnalysisOutput, Inputs, register
from .roc import auroc, best_threshold, has_both_classes, roc_curve

MAX_ROWS = 2000
MAX_JSONL_CHARS = 1_000_000
PREVIEW_ROWS = 100
PREVIEW_CHARS = 300

SIGNALS = {
    "bos_retrieval": "mean over answer tokens of the BOS attention of the retrieval heads (top-k by induction score, "
    "at least min_induction)",
    "bos_all": "mean over answer tokens of the BOS attention of every head",
    "lookback": "1 - (mean over answer tokens of the all-heads Lookback Lens ratio): higher means less attention on the prompt",
    "detector": "logistic regression (standardised features) over each head's mean BOS attention and mean "
    "lookback ratio, trained on the train split",
}


class EvalRow(BaseModel):
    context: str = Field(min_length=1)
    question: str = Field(min_length=1)
    label: Literal[0, 1] | None = Field(None, description="1: the answer is made up (unsupported); 0: grounded")
    reference: str | None = Field(None, min_length=1, description="A correct answer; without a label, an answer not containing it is made up")

    @field_validator("reference")
    @classmethod
    def _reference_has_words(cls, value: str | None) -> str | None:
        if value is not None and not value.strip():
            raise ValueError("a blank reference would match every answer")
        return value

    @model_validator(mode="after")
    def _needs_truth(self) -> "EvalRow":
        if self.label is None and self.reference is None:
            raise ValueError("a row needs `label` (0 grounded, 1 made up) or `reference`")
        return self


def parse_jsonl(text: str) -> list[EvalRow]:
    """Rows of a JSONL text; ValueError naming the first broken line."""
    rows = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        raw = json_line(line, number)
        if isinstance(raw, dict) and isinstance(raw.get("label"), bool):
            raw["label"] = int(raw["label"])
        try:
            rows.append(EvalRow.model_validate(raw))
        except ValueError as exc:
            first = exc.errors()[0] if hasattr(exc, "errors") else {"loc": (), "msg": str(exc)}
            where = ".".join(map(str, first["loc"]))
            raise ValueError(f"line {number}: {where + ': ' if where else ''}{first['msg']}") from None
        if len(rows) > MAX_ROWS:
            raise ValueError(f"more than {MAX_ROWS} rows")
    if len(rows) < 4:
        raise ValueError("at least 4 rows are needed")
    labels = [row.label for row in rows]
    if None not in labels and not has_both_classes(labels):
        raise ValueError("the labels are all the same: AUROC needs grounded (0) and made-up (1) rows")
    return rows


class HallucinationEvalParams(BaseModel):
    source: Literal["builtin", "jsonl"] = Field("builtin", description="The built-in key-value set, or rows in `jsonl`")
    n_examples: int = Field(200, ge=10, le=MAX_ROWS, description="Built-in set: how many rows (half of them made up)")
    max_facts: int = Field(MAX_FACTS, ge=1, le=len(ANIMALS), description=f"Built-in set: facts per context, {MIN_FACTS} to this")
    seed: int = Field(0, ge=0, le=MAX_SEED, description="Seed of the built-in set and of the train/test split")
    jsonl: str | None = Field(
        None,
        max_length=MAX_JSONL_CHARS,
        description="One JSON object a line: `context`, `question`, and `label` (1 made up, 0 grounded) or `reference`",
    )
    separator: str = Field(" ", max_length=16, description="Joins context and question into the prompt")
    max_new_tokens: int = Field(2, ge=1, le=64, description="Answer length in tokens (stops at EOS)")
    top_k: int = Field(4, ge=1, le=256, description="At most this many retrieval heads (by induction score) are averaged")
    min_induction: float = Field(
        0.1, ge=0, le=1, description="Retrieval heads need at least this induction score (the best head always counts)"
    )
    train_fraction: float = Field(0.5, ge=0.2, le=0.8, description="Share of each class that trains the detector")

    @model_validator(mode="after")
    def _source_matches(self) -> "HallucinationEvalParams":
        if self.source == "jsonl":
            if not self.jsonl:
                raise ValueError("source `jsonl` needs the rows in `jsonl`")
            parse_jsonl(self.jsonl)
        elif self.jsonl is not None:
            raise ValueError("`jsonl` is given but source is `builtin`")
        return self

    def rows(self) -> list[EvalRow]:
        if self.source == "jsonl":
            return parse_jsonl(self.jsonl or "")
        return [EvalRow.model_validate(row) for row in builtin_rows(self.n_examples, self.seed, self.max_facts)]


class Roc(BaseModel):
    fpr: list[float]
    tpr: list[float]
    thresholds: list[float | None]  # None: +inf (flag nothing)


class SignalScore(BaseModel):
    description: str
    auroc: float | None = Field(description="On the test split; None without both classes")
    auroc_all_rows: float | None = Field(None, description="On every row (signals that need no training)")
    best_threshold: float | None = Field(None, description="Youden's J on every row, in this signal's score units")
    roc: Roc | None = Field(description="On the test split")


class ExampleRow(BaseModel):
    context: str
    question: str
    answer: str
    reference: str | None
    label: int
    split: Literal["train", "test"]
    scores: dict[str, float | None]


class HallucinationEval(BaseModel):
    params: dict
    n_examples: int
    n_made_up: int
    n_train: int
    n_test: int
    n_iterations: int
    n_layers: int
    n_heads: int
    answer_accuracy: float | None = Field(description="Grounded rows with a reference: share whose answer contains it")
    heads: list[str]
    retrieval_heads: list[int]
    warning: str | None = Field(None, description="Set when no head qualifies as a retrieval head: that signal has no score")
    signals: dict[str, SignalScore]
    note: str | None = None
    examples: list[ExampleRow] = Field(description=f"The first {PREVIEW_ROWS} rows, contexts cut to {PREVIEW_CHARS} characters")


def stratified_split(labels: np.ndarray, train_fraction: float, seed: int) -> np.ndarray:
    """Boolean [n]: True for train rows, `train_fraction` of each class (at least one of each
    class on each side when the class has two rows or more)."""
    rng = np.random.default_rng(seed)
    train = np.zeros(len(labels), dtype=bool)
    for value in (0, 1):
        members = np.flatnonzero(labels == value)
        rng.shuffle(members)
        n_train = int(round(train_fraction * len(members)))
        if len(members) >= 2:
            n_train = min(max(n_train, 1), len(members) - 1)
        train[members[:n_train]] = True
    return train


def _normalized(text: str) -> str:
    return " ".join(text.lower().split())


def detector_scores(features: np.ndarray, labels: np.ndarray, train: np.ndarray) -> np.ndarray | None:
    """Logistic regression on standardised features [n, f] fitted on the train rows; the
    probability of "made up" for every row, or None when the train rows hold one class."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    if not has_both_classes(labels[train]):
        return None
    detector = make_pipeline(StandardScaler(), LogisticRegression(C=1.0, max_iter=2000))
    detector.fit(features[train], labels[train])
    return detector.predict_proba(features)[:, 1]


def _score(description: str, scores: np.ndarray | None, labels: np.ndarray, test: np.ndarray, unsupervised: bool) -> SignalScore:
    if scores is None or not has_both_classes(labels[test]):
        return SignalScore(description=description, auroc=None, roc=None)
    fpr, tpr, thresholds = roc_curve(scores[test], labels[test])
    both = has_both_classes(labels)
    return SignalScore(
        description=description,
        auroc=round(auroc(scores[test], labels[test]), 4),
        auroc_all_rows=round(auroc(scores, labels), 4) if unsupervised and both else None,
        best_threshold=round(best_threshold(scores, labels), 5) if unsupervised and both else None,
        roc=Roc(
            fpr=np.round(fpr, 5).tolist(),
            tpr=np.round(tpr, 5).tolist(),
            thresholds=[None if np.isinf(t) else round(float(t), 5) for t in thresholds],
        ),
    )


@register("hallucination_eval", version=2, params=HallucinationEvalParams, needs=("labelled_data", "generating_lm", "causal_lm", "attention"))
def hallucination_eval(model: LoadedModel, params: HallucinationEvalParams, inputs: Inputs) -> AnalysisOutput:
    """Answers every labelled row (the built-in key-value set: questions about present names are
    grounded, about absent names made up; or JSONL rows) greedily with the KV cache, averages each
    signal over the answer tokens, and reports the AUROC and ROC curve of each signal on a held-out
    split: BOS attention of the top-k retrieval heads, of all heads, the Lookback Lens ratio, and a
    logistic-regression detector over per-head features trained on the other split."""
    rows = params.rows()
    prompts = []
    for number, row in enumerate(rows, start=1):
        try:
            ids = model.tokenize(row.context + params.separator + row.question, inputs.max_tokens)  # [1, prompt_pos]
        except TooLong as exc:
            raise TooLong(f"Row {number}: {exc.message}") from None
        if ids.shape[1] + params.max_new_tokens - 1 > model.n_ctx:
            raise TooLong(f"Row {number}: the prompt is {ids.shape[1]} tokens; with the answer it exceeds {model.id}'s context of {model.n_ctx}.")
        prompts.append(ids)
    inputs.progress("scoring heads", 0.02)
    induction = induction_by_head(model, inputs)
    heads = top_heads(induction, params.top_k, params.min_induction)
    eos = model.tokenizer.eos_token_id
    features, answers, per_row = [], [], []
    for i, prompt_ids in enumerate(prompts):
        if i % 10 == 0:
            inputs.progress("generating", 0.05 + 0.9 * i / len(prompts))
        generation = generate_with_attention(
            model, prompt_ids, params.max_new_tokens, stop_ids=() if eos is None else (eos,)
        )
        signals = token_signals(generation, heads)
        retrieval = float("nan") if signals["signal"] is None else signals["signal"].mean()
        per_row.append([retrieval, signals["bos_all"].mean(), 1 - signals["lookback_ratio"].mean()])
        features.append(torch.cat([signals["bos_by_head"].mean(0), signals["lookback_by_head"].mean(0)]))
        answers.append(model.tokenizer.decode(generation.new_ids.tolist()))
    inputs.progress("scoring", 0.95)

    correct = [row.reference is not None and _normalized(row.reference) in _normalized(answer) for row, answer in zip(rows, answers)]
    labels = np.array([row.label if row.label is not None else int(not ok) for row, ok in zip(rows, correct)])
    train = stratified_split(labels, params.train_fraction, params.seed)
    test = ~train
    unsupervised = np.array([[float(v) for v in values] for values in per_row])  # [n, 3]
    detector = detector_scores(torch.stack(features).nan_to_num(0.0).numpy(), labels, train)  # NaN: heads without attention
    scores = {
        "bos_retrieval": unsupervised[:, 0] if len(heads) else None,  # no retrieval heads: no such signal
        "bos_all": unsupervised[:, 1],
        "lookback": unsupervised[:, 2],
        "detector": detector,
    }
    signals = {name: _score(SIGNALS[name], scores[name], labels, test, name != "detector") for name in SIGNALS}
    grounded_with_reference = [ok for row, ok, label in zip(rows, correct, labels) if label == 0 and row.reference is not None]
    note = None
    if not has_both_classes(labels):
        note = "Every row has the same label, so no AUROC can be computed."
    elif detector is None:
        note = "The train split holds one class only; the detector was not trained."
    n_layers, n_heads = model.n_layers, model.n_heads
    labels_of_heads = head_labels(len(induction) // (n_layers * n_heads), n_layers, n_heads)
    warning = None if len(heads) else no_retrieval_heads(induction, labels_of_heads, params.min_induction)
    examples = [
        ExampleRow(
            context=row.context[:PREVIEW_CHARS],
            question=row.question,
            answer=answer,
            reference=row.reference,
            label=int(label),
            split="train" if is_train else "test",
            scores={name: None if value is None else round(float(value[i]), 5) for name, value in scores.items()},
        )
        for i, (row, answer, label, is_train) in enumerate(zip(rows[:PREVIEW_ROWS], answers, labels, train))
    ]
    result = HallucinationEval(
        params=params.model_dump(mode="json", exclude={"jsonl"}),
        n_examples=len(rows),
        n_made_up=int(labels.sum()),
        n_train=int(train.sum()),
        n_test=int(test.sum()),
        n_iterations=len(induction) // (n_layers * n_heads),
        n_layers=n_layers,
        n_heads=n_heads,
        answer_accuracy=round(float(np.mean(grounded_with_reference)), 4) if grounded_with_reference else None,
        heads=labels_of_heads,
        retrieval_heads=heads.tolist(),
        warning=warning,
        signals=signals,
        note=note,
        examples=examples,
    )
    return AnalysisOutput(result=result)
