"""`head_metrics`: every head's attention stats averaged over a corpus, with the examples where each is strongest.

HeadVis-style: instead of one prompt, a corpus of natural texts (the shipped English text, or
uploaded texts) is read one text at a time; for every (iteration, layer, head) the per-text means
of the `attention` analysis' stats (previous token, first token, self, entropy) and a prefix-matching
induction score on the text's own repeats are averaged over the texts, and the top-k (text, query
position) pairs of each stat are kept with a token window around them.
"""

from collections.abc import Iterator
from pathlib import Path
from typing import Literal

import torch
from pydantic import BaseModel, Field, model_validator

from ..capture import recording_attention
from ..config import REPO_ROOT
from ..errors import InvalidInput, TooLong
from ..loops import LoopSpec, by_iteration
from ..model_store import LoadedModel
from .attention import FIRST_QUERY, STAT_DESCRIPTIONS, STAT_LABELS, head_stats, position_stats
from .registry import AnalysisOutput, Inputs, register, rounded

CORPUS = REPO_ROOT / "models" / "data" / "english.txt"  # Debian `fortunes`, paragraphs split by blank lines
MAX_TEXTS = 500
MAX_TEXT_CHARS = 4000
MAX_TOP_K = 20
WINDOW = 8  # tokens kept each side of an example's position

METRICS = ("previous_token", "bos", "self", "entropy", "induction")
LABELS = {**STAT_LABELS, "induction": "Induction (prefix matching)"}
DESCRIPTIONS = {
    **STAT_DESCRIPTIONS,
    "induction": "At each query q whose token occurred earlier at some 1 ≤ j < q−1: the summed attention to the "
    "positions j+1 right after those earlier occurrences; averaged over such queries of a text, then over "
    "the texts that have any.",
}


class HeadMetricParams(BaseModel):
    corpus: Literal["english", "texts"] = Field("english", description="The built-in English text, or `texts` for your own.")
    texts: list[str] | None = Field(
        None, max_length=MAX_TEXTS, description="Your own texts (the page reads a JSONL of {\"text\": …} rows), when corpus is `texts`."
    )
    n_texts: int = Field(100, ge=1, le=MAX_TEXTS, description="Texts taken from the built-in corpus.")
    max_tokens: int = Field(64, ge=4, le=4096, description="Tokens per text at most (BOS included): built-in texts are cut to fit, uploaded ones refused.")
    top_k: int = Field(5, ge=1, le=MAX_TOP_K, description="Examples kept per head and metric.")
    loop: LoopSpec | None = Field(None, description="Loop count, or a retrofit loop of a plain model.")

    @model_validator(mode="after")
    def _texts_iff_corpus_texts(self) -> "HeadMetricParams":
        if (self.corpus == "texts") != (self.texts is not None):
            raise ValueError("give `texts` exactly when corpus is `texts`")
        return self


class Example(BaseModel):
    text: int = Field(description="Index into `texts`.")
    position: int = Field(description="The query position (in the text's tokens, BOS at 0).")
    value: float
    offset: int = Field(description="The position of `tokens[0]` in the text.")
    tokens: list[str] = Field(description=f"The tokens from position-{WINDOW} to position+{WINDOW} (clipped to the text).")


class HeadMetrics(BaseModel):
    corpus: str = Field(description="`english` (built in) or `texts` (uploaded).")
    texts: list[str] = Field(description="The texts read, in order: what an example's `text` indexes.")
    n_tokens: int = Field(description="Tokens read over all texts (BOS included).")
    n_induction_texts: int = Field(description="Texts with at least one repeated token (the induction mean is over these).")
    n_iterations: int
    n_layers: int
    n_heads: int
    attention_layers: list[int]
    # metric -> [iteration][layer][head]; null for a layer without attention (or no text with a repeat)
    metrics: dict[str, list[list[list[float | None]]]]
    # metric -> [iteration][layer][head] -> the top_k examples, strongest first
    examples: dict[str, list[list[list[list[Example]]]]]
    metric_labels: dict[str, str]
    metric_descriptions: dict[str, str]


def corpus_texts(model: LoadedModel, n_texts: int, max_tokens: int, path: Path = CORPUS) -> Iterator[str]:
    """Up to n_texts texts of the built-in corpus, each tokenizing to at most max_tokens tokens: its
    paragraphs in order, a paragraph too long split at line breaks into the longest runs of lines
    that fit (a single line that does not fit is skipped)."""
    made = 0

    def fits(text: str) -> bool:
        try:
            model.tokenize(text, max_tokens)  # TooLong past max_tokens
        except TooLong:
            return False
        return True

    for paragraph in path.read_text().split("\n\n"):
        lines = [line for line in paragraph.strip("\n").split("\n") if line.strip()]
        run: list[str] = []
        for line in lines + [None]:  # None: flush the last run
            candidate = run + [line] if line is not None else run
            if line is not None and fits("\n".join(candidate)):
                run = candidate
                continue
            if run:
                yield "\n".join(run)
                made += 1
                if made == n_texts:
                    return
            run = [line] if line is not None and fits(line) else []


def induction_targets(ids: torch.Tensor) -> torch.Tensor:
    """[query_pos, key_pos] 1.0 at k = j+1 for every earlier occurrence j of query q's token with
    1 ≤ j < q−1 (BOS is no occurrence; k = q itself is excluded, so a head attending to itself
    scores nothing on an immediate repeat), from token ids [pos]."""
    same = ids[:, None] == ids[None, :]  # [query_pos, j]
    targets = torch.zeros(len(ids), len(ids))
    targets[:, 2:] = same[:, 1:-1].float()  # key k = j + 1 for j >= 1
    return targets.tril(-1)  # k < q


def text_metrics(probs: torch.Tensor, targets: torch.Tensor) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """(metric -> its mean over the text [head], metric -> its value per query [head, query_pos] with
    -inf where it is not defined) of one text's patterns probs [head, query_pos, key_pos]."""
    means = head_stats(probs)
    per_query = position_stats(probs)
    repeats = targets.any(-1)  # [query_pos]: queries with an earlier occurrence
    induction = (probs * targets).sum(-1)  # [head, query_pos]
    means["induction"] = induction[:, repeats].mean(-1) if repeats.any() else torch.full(probs.shape[:1], float("nan"))
    ranked = {}
    for name, values in per_query.items():
        defined = torch.arange(values.shape[-1]) >= max(1, FIRST_QUERY[name])  # query 0 attends only to itself
        ranked[name] = values.masked_fill(~defined, float("-inf"))
    ranked["induction"] = induction.masked_fill(~repeats, float("-inf"))
    return means, ranked


class _TopK:
    """The k largest per-query values of one (iteration, layer, metric) over the texts so far, per head."""

    def __init__(self, k: int):
        self.k = k
        self.values: torch.Tensor | None = None  # [head, k]
        self.where: torch.Tensor | None = None  # [head, k, 2]: (text, position)

    def add(self, text: int, values: torch.Tensor) -> None:
        """values [head, query_pos] of text `text`."""
        n_heads, n_pos = values.shape
        where = torch.stack([torch.full((n_pos,), text), torch.arange(n_pos)], -1).expand(n_heads, -1, -1)
        if self.values is not None:
            values, where = torch.cat([self.values, values], -1), torch.cat([self.where, where], 1)
        best = values.topk(min(self.k, values.shape[-1]), -1)  # sorted, strongest first
        self.values, self.where = best.values, where.gather(1, best.indices[..., None].expand(-1, -1, 2))

    def examples(self, tokens: list[list[str]]) -> list[list[Example]]:
        """[head] -> its examples (defined values only)."""
        heads = []
        for values, where in zip(self.values.tolist(), self.where.tolist()):
            found = []
            for value, (text, position) in zip(values, where):
                if value == float("-inf"):
                    continue
                offset = max(0, position - WINDOW)
                found.append(Example(text=text, position=position, value=round(value, 4), offset=offset,
                                     tokens=tokens[text][offset : position + WINDOW + 1]))
            heads.append(found)
        return heads


def _texts(model: LoadedModel, params: HeadMetricParams, limit: int) -> tuple[list[str], list[torch.Tensor]]:
    """(the texts, their tokens [pos] each), or InvalidInput/TooLong."""
    texts = params.texts if params.corpus == "texts" else list(corpus_texts(model, params.n_texts, limit))
    if not texts or not any(text.strip() for text in texts):
        raise InvalidInput("The corpus is empty: give at least one non-empty text.")
    for number, text in enumerate(texts, start=1):
        if len(text) > MAX_TEXT_CHARS:
            raise TooLong(f"Text {number} has {len(text)} characters; at most {MAX_TEXT_CHARS} are accepted.")
        if not text.strip():
            raise InvalidInput(f"Text {number} is empty.")
    tokens = []
    for number, text in enumerate(texts, start=1):
        try:
            tokens.append(model.tokenize(text, limit)[0])  # [pos]
        except TooLong as exc:
            raise TooLong(f"Text {number}: {exc.message} (max_tokens)") from None
    return texts, tokens


@register("head_metrics", version=1, params=HeadMetricParams, needs=("attention", "causal_lm", "tokenizer"))
def head_metrics(model: LoadedModel, params: HeadMetricParams, inputs: Inputs) -> AnalysisOutput:
    """Every head's mean previous-token, first-token, self and entropy stat (as the `attention`
    analysis computes them on one text) and prefix-matching induction score over a corpus, with its
    top-k examples. Each text is read in its own forward pass (BOS prepended); a metric is the mean
    over texts of its per-text mean. Induction at query q: the summed attention to the positions j+1
    after every earlier occurrence j of q's token (1 ≤ j < q−1); its per-text mean is over the
    queries with such an occurrence, and the corpus mean over texts with any. Examples: the (text,
    query) pairs where the per-query value is largest (queries from 1; entropy: the most diffuse)."""
    limit = min(params.max_tokens, inputs.max_tokens, model.n_ctx)
    if params.max_tokens > min(inputs.max_tokens, model.n_ctx):
        raise TooLong(f"max_tokens is {params.max_tokens}; this server and {model.id} accept at most {limit} tokens per text.")
    texts, tokens = _texts(model, params, limit)
    sums: dict[str, torch.Tensor] = {}  # metric -> [iteration, layer, head]
    counts: dict[str, torch.Tensor] = {}
    top: dict[tuple[int, int], dict[str, _TopK]] = {}  # (iteration firing, layer) -> metric -> its top k
    text: dict = {}  # the text being read: its index, induction targets, and per-text means by firing

    def keep(iteration: int, layer: int, probs: torch.Tensor) -> None:
        means, ranked = text_metrics(probs[0], text["targets"].to(probs.device))  # a spread model's patterns are on the CPU
        text["kept"][iteration, layer] = means
        for name, values in ranked.items():
            top.setdefault((iteration, layer), {}).setdefault(name, _TopK(params.top_k)).add(text["index"], values)

    with recording_attention(model, keep, params.loop) as recorder:
        for index, ids in enumerate(tokens):
            text.update(index=index, targets=induction_targets(ids), kept={})
            recorder.forward(ids[None])  # [1, pos]
            grid = by_iteration(text["kept"], model.n_layers)  # [iteration][layer] -> metric -> [head]
            for name in METRICS:
                value = torch.stack([torch.stack([cell[name] for cell in row]) for row in grid])  # [iteration, layer, head]
                sums[name] = sums.get(name, 0) + value.nan_to_num(0.0)
                counts[name] = counts.get(name, 0) + ~value.isnan()
            inputs.progress("reading texts", (index + 1) / len(tokens))
    str_tokens = [model.str_tokens(ids) for ids in tokens]
    cells = by_iteration(top, model.n_layers, missing=lambda _: None)  # [iteration][layer] -> metric -> _TopK
    no_heads = [[] for _ in range(model.n_heads)]
    examples = {
        name: [[no_heads if cell is None else cell[name].examples(str_tokens) for cell in row] for row in cells]
        for name in METRICS
    }
    return AnalysisOutput(
        result=HeadMetrics(
            corpus=params.corpus,
            texts=texts,
            n_tokens=sum(len(ids) for ids in tokens),
            n_induction_texts=sum(bool(induction_targets(ids).any()) for ids in tokens),
            n_iterations=len(cells),
            n_layers=model.n_layers,
            n_heads=model.n_heads,
            attention_layers=model.attention_layers,
            metrics={name: rounded(sums[name] / counts[name]) for name in METRICS},  # 0/0: NaN -> null
            examples=examples,
            metric_labels={name: LABELS[name] for name in METRICS},
            metric_descriptions={name: DESCRIPTIONS[name] for name in METRICS},
        )
    )
