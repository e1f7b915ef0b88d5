"""`probes`: a linear probe per (iteration, layer) beside the model's own self-verification per iteration.

"Loop as a Bridge" (arXiv 2601.10242) asks, per loop iteration, whether the residual stream linearly
encodes a label (is this answer correct?) and whether the model itself says it (early exit). Here
the residual after every layer at every iteration is read at one position of every text, in the
same batched forward passes; a logistic-regression probe with k-fold CV scores each (iteration,
layer); the early-exit readout of the label tokens gives self-verification accuracy, and, where rows
carry a prompt and its answer, the early-exit exact-match gives task accuracy.
"""

from collections.abc import Callable, Iterator
from typing import Literal

import numpy as np
import torch
from pydantic import BaseModel, Field, model_validator

from ..errors import InvalidInput
from ..loops import LoopSpec, capture_residuals, exit_logits, loop_layers, readout
from ..model_store import LoadedModel
from .exit_gate import gate_of
from .datasets import BUILT_IN, MAX_ROWS, Dataset, Row, check_rows
from .registry import MAX_SEED, AnalysisOutput, Inputs, register, rounded

LOGIT_BUDGET = 1 << 22  # floats of logits per forward batch (16 MB): bounds memory on large vocabularies
MAX_BATCH = 64


class ProbeParams(BaseModel):
    dataset: Literal["addition", "arithmetic_statements", "rows"] = Field(
        "addition", description="A built-in generator, or `rows` for your own (POST /api/datasets parses uploads)."
    )
    n: int = Field(400, ge=20, le=MAX_ROWS, description="Rows a built-in generator makes (balanced labels).")
    rows: list[Row] | None = Field(None, max_length=MAX_ROWS, description="The rows, when dataset is `rows`.")
    label_tokens: dict[str, str] | None = Field(
        None, description="Label -> what the model says for it, for self-verification (default: the dataset's, else the label)."
    )
    position: int = Field(-1, ge=-MAX_ROWS, le=MAX_ROWS, description="Token position read; negative counts from the end.")
    folds: int = Field(5, ge=2, le=10, description="k of the stratified k-fold cross-validation.")
    seed: int = Field(0, ge=0, le=MAX_SEED, description="Seed of the generator and of the fold split.")
    loop: LoopSpec | None = Field(None, description="Loop count, or a retrofit loop of a plain model.")

    @model_validator(mode="after")
    def _rows_iff_dataset_rows(self) -> "ProbeParams":
        if (self.dataset == "rows") != (self.rows is not None):
            raise ValueError("give `rows` exactly when dataset is `rows`")
        return self


class Probes(BaseModel):
    dataset: str
    n_rows: int
    labels: list[str]
    label_counts: dict[str, int]
    chance: float = Field(description="Share of the most frequent label: what always guessing it scores.")
    example_tokens: list[str] = Field(description="The first row's tokens.")
    position: int = Field(description="Index read in every text, counted from the end when negative.")
    example_position: int = Field(description="`position` in the first row's tokens.")
    folds: int
    n_iterations: int
    n_layers: int
    loop_layers: list[int] = Field(description="[start, end]: the looped layers; `end` is the readout layer.")
    # [iteration][layer]
    # null where a layer did not run in an iteration (HRM's slow stack runs every L_cycles iterations)
    probe_accuracy: list[list[float | None]]
    probe_accuracy_std: list[list[float | None]]
    probe_f1: list[list[float | None]] = Field(description="Macro F1, mean over folds.")
    # [iteration][layer][fold]
    probe_fold_accuracy: list[list[list[float | None]]]
    # [iteration]
    self_verification_accuracy: list[float | None] | None = Field(description="null after an iteration the model does not exit from")
    self_verification_note: str | None = None
    label_tokens: dict[str, str]
    task_accuracy: list[float | None] | None
    n_task_rows: int
    # models with an exit gate (Ouro): where the model itself would stop looping, at the read position
    exit_pdf: list[float] | None = Field(None, description="[iteration] mean over rows of the probability of exiting at that step.")
    expected_exit_step: float | None = Field(None, description="Mean over rows of the expected exit step (from 1).")


def resolve_dataset(params: ProbeParams) -> Dataset:
    if params.dataset == "rows":
        dataset = Dataset(rows=params.rows or [])
    else:
        dataset = BUILT_IN[params.dataset](params.n, params.seed)
    if params.label_tokens is not None:
        dataset.label_tokens = params.label_tokens
    check_rows(dataset.rows)
    return dataset


def _batches(lengths: list[int], key: Callable[[int], object], d_vocab: int) -> Iterator[list[int]]:
    """Row indices grouped by `key` (rows of one group share their length), split to bounded batches."""
    groups: dict[object, list[int]] = {}
    for index in range(len(lengths)):
        groups.setdefault(key(index), []).append(index)
    for _, members in sorted(groups.items(), key=lambda item: str(item[0])):
        size = max(1, min(MAX_BATCH, LOGIT_BUDGET // max(1, lengths[members[0]] * d_vocab)))
        for start in range(0, len(members), size):
            yield members[start : start + size]


def label_ids_in_context(
    model: LoadedModel, texts: list[str], labels: list[str], label_tokens: dict[str, str]
) -> tuple[torch.Tensor | None, str | None]:
    """[row, label] the token the model would say for each label right after each row's text, or
    None and why self-verification cannot be read. Resolved in context: the text and the text
    followed by the label's word are tokenized, and the first token where they differ is the
    label's. A SentencePiece tokenizer encodes a lone "Y" as ['▁', 'Y'] (so "Y" and "N" would
    share '▁'), but "...= Y" after the text as it is read."""
    encode = model.tokenizer.encode
    resolved: dict[str, list[int]] = {}
    rows = []
    for text in texts:
        if text not in resolved:
            base = encode(text, add_special_tokens=False)
            ids = []
            for label in labels:
                full = encode(text + label_tokens.get(label, label), add_special_tokens=False)
                at = next((i for i, (a, b) in enumerate(zip(base, full)) if a != b), len(base))
                if at < len(base):
                    return None, (f"The label {label!r} merges with the text's last token when tokenized after it, "
                                  "so no next token says it; set `label_tokens` (e.g. with a leading space).")
                if at >= len(full):
                    return None, f"The label {label!r} adds no token after the text; set `label_tokens`."
                ids.append(int(full[at]))
            if len(set(ids)) < len(ids):
                return None, "The labels begin with the same token after the text; set `label_tokens` to tell them apart."
            resolved[text] = ids
        rows.append(resolved[text])
    return torch.tensor(rows), None


def read_residuals(
    model: LoadedModel, tokens: list[torch.Tensor], position: int, loop: LoopSpec | None, progress: Callable[[float], None]
) -> torch.Tensor:
    """[iteration, layer, row, d_model]: the residual after every layer at `position` of every text."""
    lengths = [len(t) for t in tokens]
    for length in set(lengths):
        if not -length <= position < length:
            raise InvalidInput(f"position {position} is outside a text of {length} tokens.")
    features: torch.Tensor | None = None
    done = 0
    for batch in _batches(lengths, lambda i: lengths[i], model.bridge.cfg.d_vocab):
        index = position % lengths[batch[0]]
        _, resid = capture_residuals(model, torch.stack([tokens[i] for i in batch]), torch.tensor([index]), loop)
        resid = resid[:, :, :, 0]  # [iteration, layer, batch, d_model]
        if features is None:
            features = resid.new_zeros(*resid.shape[:2], len(tokens), resid.shape[-1])
        features[:, :, batch] = resid
        done += len(batch)
        progress(done / len(tokens))
    return features  # [iteration, layer, row, d_model]


def label_exits(
    model: LoadedModel,
    tokens: list[torch.Tensor],
    position: int,
    loop: LoopSpec | None,
    resid: torch.Tensor,
    label_ids: torch.Tensor,
) -> torch.Tensor:
    """[iteration, row, label]: the early exit's logit of each label's token at `position`, from the
    residuals read there (resid [iteration, row, d_model]), or from the model's own exit where it is
    more than norm and unembedding (Huginn's coda: more forward passes)."""
    if not model.entry.own_exit:
        logits = readout(model, resid)  # [iteration, row, d_vocab]
        return logits.gather(-1, label_ids.expand(logits.shape[0], -1, -1))
    lengths = [len(t) for t in tokens]
    exits = torch.zeros(resid.shape[0], len(tokens), label_ids.shape[1])
    for batch in _batches(lengths, lambda i: lengths[i], model.bridge.cfg.d_vocab):
        index = torch.tensor([position % lengths[batch[0]]])
        logits = exit_logits(model, torch.stack([tokens[i] for i in batch]), index, loop)[:, :, 0]  # [iteration, batch, d_vocab]
        exits[:, batch] = logits.gather(-1, label_ids[batch].expand(logits.shape[0], -1, -1))
    return exits


def exit_gate_at(
    model: LoadedModel, tokens: list[torch.Tensor], position: int, loop: LoopSpec | None
) -> tuple[torch.Tensor, torch.Tensor]:
    """The model's own exit gate at `position` of every text: (exit pdf [iteration, row], expected
    exit step [row])."""
    lengths = [len(t) for t in tokens]
    pdf: torch.Tensor | None = None
    expected = torch.zeros(len(tokens))
    for batch in _batches(lengths, lambda i: lengths[i], model.bridge.cfg.d_vocab):
        index = position % lengths[batch[0]]
        gate = gate_of(model, torch.stack([tokens[i] for i in batch]), loop)
        if pdf is None:
            pdf = torch.zeros(gate["exit_pdf"].shape[0], len(tokens))
        pdf[:, batch] = gate["exit_pdf"][:, :, index]
        expected[batch] = gate["expected_exit_step"][:, index]
    return pdf, expected


def task_accuracy(
    model: LoadedModel, rows: list[Row], loop: LoopSpec | None, max_tokens: int, progress: Callable[[float], None]
) -> tuple[torch.Tensor | None, int]:
    """Per iteration: the share of rows whose every answer token is the early exit's top prediction
    after `prompt` + the answer so far (teacher forcing; equal to greedy decoding's exact match)."""
    items = []
    for row in rows:
        if row.prompt is None or row.answer is None:
            continue
        prompt = model.tokenize(row.prompt, max_tokens)[0]
        full = model.tokenize(row.prompt + row.answer, max_tokens)[0]
        if len(full) > len(prompt) and torch.equal(full[: len(prompt)], prompt):  # the answer tokenizes apart
            items.append((full, len(prompt)))
    if not items:
        return None, 0
    correct: torch.Tensor | None = None
    for batch in _batches([len(f) for f, _ in items], lambda i: (len(items[i][0]), items[i][1]), model.bridge.cfg.d_vocab):
        full = torch.stack([items[i][0] for i in batch])  # [batch, pos]
        start = items[batch[0]][1]
        reads = torch.arange(start - 1, full.shape[1] - 1)  # positions predicting each answer token
        exits = exit_logits(model, full, reads, loop)  # [iteration, batch, n_answer, d_vocab]
        right = (exits.argmax(-1) == full[:, start:]).all(-1)  # [iteration, batch]
        counted = _where_exits(exits, right.sum(1).float())
        correct = counted if correct is None else correct + counted
        progress(len(batch) / len(items))
    return correct / len(items), len(items)


def _where_exits(exits: torch.Tensor, per_iteration: torch.Tensor) -> torch.Tensor:
    """per_iteration [iteration], NaN after an iteration the model does not exit from (exits
    [iteration, ...] all NaN there: HRM between its H cycles)."""
    return torch.where(exits.flatten(1).isnan().all(-1), float("nan"), per_iteration)


def fit_probes(
    features: torch.Tensor, y: np.ndarray, folds: int, seed: int, progress: Callable[[float], None]
) -> dict[str, np.ndarray]:
    """Logistic-regression probes with stratified k-fold CV on features [iteration, layer, row, d_model].
    Returns fold accuracy [iteration, layer, fold] and macro F1 [iteration, layer, fold]."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold, cross_validate
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    from threadpoolctl import threadpool_limits

    n_iterations, n_layers = features.shape[:2]
    accuracy = np.zeros((n_iterations, n_layers, folds))
    f1 = np.zeros((n_iterations, n_layers, folds))
    split = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
    # One BLAS thread: these fits are small, and on shared cores threads that wait for each other
    # made them 20x slower.
    with threadpool_limits(limits=1):
        for iteration in range(n_iterations):
            for layer in range(n_layers):
                if features[iteration, layer].isnan().any():  # the layer did not run in this iteration
                    accuracy[iteration, layer] = f1[iteration, layer] = np.nan
                    continue
                probe = make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000))
                x = features[iteration, layer].double().numpy()  # [row, d_model]
                scores = cross_validate(probe, x, y, cv=split, scoring=("accuracy", "f1_macro"))
                accuracy[iteration, layer], f1[iteration, layer] = scores["test_accuracy"], scores["test_f1_macro"]
                progress((iteration * n_layers + layer + 1) / (n_iterations * n_layers))
    return {"accuracy": accuracy, "f1": f1}


@register("probes", version=2, params=ProbeParams, needs=("labelled_data", "loop", "readout"))
def probes(model: LoadedModel, params: ProbeParams, inputs: Inputs) -> AnalysisOutput:
    """Linear probes per iteration and layer, self-verification and task accuracy per iteration.
    Every text is read at `position` (last token by default) after every layer of every iteration;
    a standardized logistic regression per (iteration, layer), scored by stratified k-fold CV
    (fixed seed), predicts the label. Self-verification: whether the early exit (final norm +
    unembedding of the last looped layer's residual) ranks the label's own token above the other
    labels' tokens. Task accuracy: rows with `prompt` and `answer`, exact match at each early exit.
    With an exit gate (Ouro): the mean probability of the model exiting at each step, read there."""
    dataset = resolve_dataset(params)
    rows = dataset.rows
    labels = sorted({row.label for row in rows})
    tokens = [model.tokenize(row.text, inputs.max_tokens)[0] for row in rows]  # each [pos]
    inputs.progress("reading residuals", 0.0)
    features = read_residuals(model, tokens, params.position, params.loop, lambda f: inputs.progress("reading residuals", 0.4 * f))
    n_iterations, n_layers = features.shape[:2]
    y = np.array([labels.index(row.label) for row in rows])

    start, end = loop_layers(model, params.loop)
    label_ids, note = label_ids_in_context(model, [row.text for row in rows], labels, dataset.label_tokens)  # [row, label]
    verification = None
    if label_ids is not None:
        exits = label_exits(model, tokens, params.position, params.loop, features[:, end], label_ids)  # [iteration, row, label]
        verification = _where_exits(exits, (exits.argmax(-1) == torch.from_numpy(y)).float().mean(-1))  # [iteration]

    done = {"task": 0.0}

    def task_progress(fraction: float) -> None:
        done["task"] += fraction
        inputs.progress("task accuracy", 0.4 + 0.1 * done["task"])

    task, n_task = task_accuracy(model, rows, params.loop, inputs.max_tokens, task_progress)
    gate = exit_gate_at(model, tokens, params.position, params.loop) if model.entry.exit_gate else None
    scores = fit_probes(features, y, params.folds, params.seed, lambda f: inputs.progress("fitting probes", 0.5 + 0.5 * f))
    counts = {label: int((y == i).sum()) for i, label in enumerate(labels)}
    return AnalysisOutput(
        result=Probes(
            dataset=params.dataset,
            n_rows=len(rows),
            labels=labels,
            label_counts=counts,
            chance=round(max(counts.values()) / len(rows), 4),
            example_tokens=model.str_tokens(tokens[0]),
            position=params.position,
            example_position=params.position % len(tokens[0]),
            folds=params.folds,
            n_iterations=n_iterations,
            n_layers=n_layers,
            loop_layers=[start, end],
            probe_accuracy=rounded(torch.from_numpy(scores["accuracy"].mean(-1))),
            probe_accuracy_std=rounded(torch.from_numpy(scores["accuracy"].std(-1))),
            probe_f1=rounded(torch.from_numpy(scores["f1"].mean(-1))),
            probe_fold_accuracy=rounded(torch.from_numpy(scores["accuracy"])),
            self_verification_accuracy=None if verification is None else rounded(verification),
            self_verification_note=note,
            label_tokens={label: dataset.label_tokens.get(label, label) for label in labels},
            task_accuracy=None if task is None else rounded(task),
            n_task_rows=n_task,
            exit_pdf=None if gate is None else [round(v, 4) for v in gate[0].mean(-1).tolist()],
            expected_exit_step=None if gate is None else round(float(gate[1].mean()), 4),
        )
    )
