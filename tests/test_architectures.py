"""The architecture matrix: for every decoder-only architecture TransformerBridge supports (tiny
seeded models from tests/architectures.py), Loupe's default attention capture must equal HF eager
attention for every attention layer and head, and its logits a plain HF forward, within 1e-4; or
Loupe must refuse the model with a 422 AppError. A mismatch or any other exception fails.

`python -m tests.test_architectures [name ...]` runs the same check outside pytest and writes the
outcome table (with metadata checks and timings) to /tmp/arch_report.md.
"""

import os
import sys
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import torch
from transformers import AutoConfig, AutoModelForCausalLM

from loupe.capture import capture_patterns
from loupe.config import Settings
from loupe.errors import AppError
from loupe.model_store import ModelStore

from .architectures import ARCHITECTURES, ATTENTION_FREE, BY_NAME, build_all, not_built, supported_causal_lms

PROMPT = "The cat sat on the mat. The dog sat on the log."  # 26 tokens with the shared tokenizer
TOLERANCE = 1e-4
REFUSED_STATUS = 422
# Layer kinds in config.layer_types (and its variants) that hold no softmax attention.
_NOT_ATTENTION = {"linear_attention", "mamba", "m", "conv", "recurrent", "moe", "mlp", "e", "-", "rwkv"}


@dataclass
class Outcome:
    """One architecture's result: kind is exact | refused | mismatch | error."""

    name: str
    kind: str
    detail: str = ""
    d_pattern: float | None = None
    d_logits: float | None = None
    metadata: list[str] = field(default_factory=list)
    seconds: float = 0.0

    def line(self) -> str:
        if self.kind == "mismatch":
            return f"mismatch (max |Δpattern| {_num(self.d_pattern)}, max |Δlogits| {_num(self.d_logits)}){_note(self.detail)}"
        if self.kind == "exact":
            return f"exact (max |Δpattern| {_num(self.d_pattern)}, max |Δlogits| {_num(self.d_logits)})"
        return f"{self.kind} ({self.detail})"


def _num(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.2e}"


def _note(text: str) -> str:
    return f"; {text}" if text else ""


def _eager_model(root: Path, name: str) -> Any:
    """The saved tiny model as transformers loads it, with eager attention: the reference."""
    return AutoModelForCausalLM.from_pretrained(root / name, attn_implementation="eager").float().eval()


def _refused(name: str, exc: AppError) -> Outcome:
    """A refusal (a 422) or an error (any other status) of Loupe's, as the matrix reports it."""
    kind = "refused" if exc.status == REFUSED_STATUS else "error"
    return Outcome(name, kind, f"{type(exc).__name__} {exc.status}: {' '.join(exc.message.split())[:240]}")


def _short(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {' '.join(str(exc).split())[:240]}"


def attention_layers(config: Any, n_layers: int) -> list[int]:
    """The indices of the layers that compute softmax attention, from the HF config's layer kinds."""
    config = getattr(config, "text_config", None) or config
    for key in ("layer_types", "layers_block_type", "block_types"):
        kinds = getattr(config, key, None)
        if isinstance(kinds, (list, tuple)) and len(kinds) == n_layers:
            return [i for i, kind in enumerate(kinds) if str(kind).lower() not in _NOT_ATTENTION]
    if getattr(config, "attn_layer_indices", None):
        return sorted(config.attn_layer_indices)
    return list(range(n_layers))


def _metadata(model: Any, config: Any) -> list[str]:
    """What Loupe's ModelEntry (listing, from config.json) and LoadedModel (from the bridge) say
    about layers, heads and context, where it is 0 or differs from the HF config."""
    text = getattr(config, "text_config", None) or config
    expected = {
        "n_layers": getattr(text, "num_hidden_layers", None),
        "n_heads": getattr(text, "num_attention_heads", None),
        "n_ctx": getattr(text, "max_position_embeddings", None),
    }
    problems = []
    for key, want in expected.items():
        for where, got in (("entry", getattr(model.entry, key)), ("loaded", getattr(model, key))):
            if want is not None and got != want:
                problems.append(f"{where}.{key}={got} (config {want})")
    return problems


def check_architecture(name: str, root: Path, store: ModelStore) -> Outcome:
    """Load `local/<name>` through Loupe, capture its patterns and logits on PROMPT with the
    default path, and compare with HF eager attention and a plain HF forward on the same ids."""
    start = time.perf_counter()
    outcome = _check(name, root, store)
    outcome.seconds = time.perf_counter() - start
    return outcome


def _check(name: str, root: Path, store: ModelStore) -> Outcome:
    model_id = f"local/{name}"
    config = AutoConfig.from_pretrained(root / name)
    metadata: list[str] = []
    try:
        model = store.get(model_id)
        metadata = _metadata(model, config)
        tokens = model.tokenize(PROMPT, 256)  # [1, pos]
        with model.lock:
            logits, pattern = capture_patterns(model, tokens)  # [batch, pos, vocab], [iteration, layer, batch, head, q, k]
    except AppError as exc:
        kind = "refused" if exc.status == REFUSED_STATUS else "error"
        detail = f"{type(exc).__name__} {exc.status}: {' '.join(exc.message.split())[:240]}"
        return Outcome(name, kind, detail, metadata=metadata)
    except Exception as exc:
        return Outcome(name, "error", _short(exc), metadata=metadata)

    hf = _eager_model(root, name)
    with torch.no_grad():
        expected_logits = hf(tokens).logits.float()  # [batch, pos, vocab]
        attentions = hf(tokens, output_attentions=True).attentions or ()
    n_layers = hf.config.get_text_config().num_hidden_layers
    layers = attention_layers(hf.config, n_layers)
    expected = [a.float() for a in attentions if a is not None]  # [batch, head, q, k] per attention layer

    notes = []
    d_logits = (logits - expected_logits).abs().max().item() if logits.shape == expected_logits.shape else None
    if d_logits is None:
        notes.append(f"logits shape {tuple(logits.shape)} vs HF {tuple(expected_logits.shape)}")
    if len(expected) != len(layers):
        notes.append(f"HF returned {len(expected)} attention tensors for attention layers {layers}")
        layers = layers[: len(expected)]
    if pattern.shape[0] != 1:
        notes.append(f"{pattern.shape[0]} iterations")
    loupe_index = layers if pattern.shape[1] == n_layers else list(range(len(layers)))
    if pattern.shape[1] not in (n_layers, len(layers)):
        notes.append(f"Loupe has {pattern.shape[1]} layers, the model {n_layers} ({len(layers)} with attention)")
    d_pattern: float | None = 0.0
    for position, (layer, want) in enumerate(zip(layers, expected)):
        if loupe_index[position] >= pattern.shape[1]:
            d_pattern = None
            break
        got = pattern[0, loupe_index[position]]  # [batch, head, q, k]
        if got.shape != want.shape:
            notes.append(f"layer {layer} pattern {tuple(got.shape)} vs HF {tuple(want.shape)}")
            d_pattern = None
            break
        d_pattern = max(d_pattern, (got - want).abs().max().item())
    if not expected:
        notes.append("HF returned no attention probabilities")
        d_pattern = None
    exact = not notes and d_pattern is not None and d_logits is not None and d_pattern <= TOLERANCE and d_logits <= TOLERANCE
    return Outcome(name, "exact" if exact else "mismatch", "; ".join(notes), d_pattern, d_logits, metadata)


def check_kept(name: str, root: Path, store: ModelStore) -> Outcome:
    """The kept path of long prompts, on PROMPT in chunks of 16 query rows: every head recomputed from
    the kept queries, keys and rule equals HF eager attention (sliding windows, chunks, soft-capping,
    sinks and GQA included), and the streamed head stats and thumbnails equal those of the eager
    patterns; or the path declines the model (NotModelled: its long prompts store patterns, up to
    LOUPE_MAX_STORED_TOKENS) or Loupe refuses it with a 422."""
    from loupe.analyses.attention import head_stats
    from loupe.attention_rule import NotModelled
    from loupe.codec import _max_pool

    from .kept import keep, recomputed

    try:
        model = store.get(f"local/{name}")
        tokens = model.tokenize(PROMPT, 256)  # [1, pos]
        kept, stats = keep(model, tokens)  # 16 rows a block: the prompt spans two
    except NotModelled as exc:
        return Outcome(name, "refused", f"kept path declined: {exc}")
    except AppError as exc:
        return _refused(name, exc)
    except Exception as exc:
        return Outcome(name, "error", _short(exc))
    hf = _eager_model(root, name)
    with torch.no_grad():
        attentions = [a.float()[0] for a in hf(tokens, output_attentions=True).attentions or () if a is not None]  # [head, q, k]
    layers = sorted(layer for _, layer in kept.kept)
    if len(attentions) != len(layers):
        return Outcome(name, "mismatch", f"HF returned {len(attentions)} attention tensors, the kept path {len(layers)} layers")
    streamed = stats.stacked(model.n_layers)
    d_pattern = d_stats = 0.0
    for want, layer in zip(attentions, layers):
        got = recomputed(kept, 0, layer)
        d_pattern = max(d_pattern, (got - want).abs().max().item(), (kept.pooled[0, layer] - _max_pool(want)).abs().max().item())
        full = head_stats(want, model.entry.encoder)
        d_stats = max(d_stats, *((streamed[stat][0, layer] - full[stat]).abs().max().item() for stat in full))
    exact = d_pattern <= TOLERANCE and d_stats <= TOLERANCE
    return Outcome(name, "exact" if exact else "mismatch", f"head stats within {d_stats:.2e}", d_pattern)


def check_logit_lens(name: str, root: Path, store: ModelStore) -> Outcome:
    """The logit lens at the last token: its exit layer (the last layer of a plain model) must be the
    model's own next-token distribution, a plain HF forward's softmax (top tokens and their
    probabilities within 1e-4); or Loupe refuses the model with a 422."""
    from loupe.analyses.logit_lens import LogitLensParams, logit_lens
    from loupe.analyses.registry import Inputs

    try:
        model = store.get(f"local/{name}")
        with model.lock:
            result = logit_lens(model, LogitLensParams(position=-1, top_k=5), Inputs(text=PROMPT, max_tokens=256)).result
    except AppError as exc:
        return _refused(name, exc)
    except Exception as exc:
        return Outcome(name, "error", _short(exc))
    hf = _eager_model(root, name)
    with torch.no_grad():
        probs = hf(torch.tensor([result.token_ids])).logits[0, -1].float().softmax(-1)  # [vocab]
    exit_layer = result.loop_layers[1]
    got_ids, got_probs = result.top_token_ids[-1][exit_layer], result.top_probs[-1][exit_layer]
    want = probs.topk(len(got_ids))
    d = max(abs(a - b) for a, b in zip(got_probs, want.values.tolist()))
    same = got_ids == want.indices.tolist() or d <= TOLERANCE  # ties may order differently
    return Outcome(name, "exact" if same and d <= TOLERANCE else "mismatch", "" if same else f"top {got_ids} vs HF {want.indices.tolist()}", d, None)


# --- the pytest matrix ---------------------------------------------------------------------------

ALL = [arch.name for arch in ARCHITECTURES + ATTENTION_FREE]


@pytest.fixture(scope="session")
def architecture_models(tmp_path_factory):
    """Every architecture's tiny model under one LOUPE_MODEL_DIRS root, built once per session;
    (root, name -> folder or the build's exception, a ModelStore over root)."""
    root = tmp_path_factory.mktemp("architectures")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        built = build_all(root)
    settings = Settings(model_dirs=[root], zoo_dir=tmp_path_factory.mktemp("empty_zoo"), max_loaded_models=1)
    return root, built, ModelStore(settings)


def test_the_matrix_covers_every_supported_decoder_only_architecture():
    """A TransformerLens or transformers upgrade that adds an architecture adds it here too."""
    assert sorted({BY_NAME[name].hf_class for name in ALL}) == supported_causal_lms()


@pytest.mark.slow
@pytest.mark.parametrize("check", [check_architecture, check_logit_lens, check_kept], ids=["attention", "logit_lens", "kept"])
@pytest.mark.parametrize("name", ALL)
def test_exact_against_the_model_itself_or_refused(architecture_models, name, check):
    """Attention: every pattern equals HF eager and the capture run's logits a plain forward. Logit
    lens: its exit layer is the model's own next-token distribution."""
    root, built, store = architecture_models
    if isinstance(built[name], Exception):
        pytest.fail(f"building the tiny {name} failed: {_short(built[name])}")
    outcome = check(name, root, store)
    assert outcome.kind in ("exact", "refused"), f"{name} ({BY_NAME[name].hf_class}) {check.__name__}: {outcome.line()}"


# --- the report ----------------------------------------------------------------------------------

_ORDER = {"exact": 0, "refused": 1, "mismatch": 2, "error": 3}


def report(outcomes: list[Outcome], seconds: float, lens: dict[str, Outcome] | None = None) -> str:
    """The outcome table (sorted by outcome), its counts, and the metadata problems, as markdown;
    with `lens`, each architecture's logit-lens outcome too."""
    counts = {kind: sum(o.kind == kind for o in outcomes) for kind in _ORDER}
    lens = lens or {}
    lens_counts = {kind: sum(o.kind == kind for o in lens.values()) for kind in _ORDER}
    lines = [
        "# Architecture matrix",
        "",
        "Written by `PYTHONPATH=backend LOUPE_ARCH_REPORT=tests/architecture_matrix.md .venv/bin/python -m tests.test_architectures` (CPU, 2 cores).",
        "",
        f"{len(outcomes)} architectures in {seconds:.0f} s: "
        + ", ".join(f"{counts[kind]} {kind}" for kind in _ORDER)
        + f". Tolerance {TOLERANCE:g}; prompt {PROMPT!r}.",
        "",
        "Logit lens (its exit layer against the model's own next-token distribution): "
        + ", ".join(f"{lens_counts[kind]} {kind}" for kind in _ORDER) + ".",
        "",
        "| architecture | HF class | features | attention | logit lens | s |",
        "|---|---|---|---|---|---|",
    ]
    for o in sorted(outcomes, key=lambda o: (_ORDER[o.kind], o.detail.split(":")[0], o.name)):
        arch = BY_NAME[o.name]
        free = " (attention-free)" if arch in ATTENTION_FREE else ""
        outcome = o.line().replace("|", "\\|")  # a literal bar inside a table cell
        lens_line = lens[o.name].line().replace("|", "\\|") if o.name in lens else ""
        lines.append(f"| {o.name}{free} | {arch.hf_class} | {arch.features} | {outcome} | {lens_line} | {o.seconds:.1f} |")
    lines += ["", "## Metadata (ModelEntry from config.json, LoadedModel from the bridge) vs the HF config", ""]
    wrong = [o for o in outcomes if o.metadata]
    lines += [f"- {o.name}: {', '.join(o.metadata)}" for o in wrong] or ["- all loaded models agree"]
    unloaded = [o.name for o in outcomes if o.kind in ("error", "refused") and o.detail.startswith(("ModelUnavailable", "build"))]
    if unloaded:
        lines.append(f"- not checked (not loaded): {', '.join(unloaded)}")
    lines += ["", "## Supported by TransformerBridge, not in the matrix", ""]
    lines += [f"- {name}: {reason}" for name, reason in not_built().items()]
    return "\n".join(lines) + "\n"


def main(names: list[str], out: Path) -> None:
    import logging
    import tempfile

    from transformers.utils import logging as hf_logging

    logging.disable(logging.WARNING)
    hf_logging.disable_progress_bar()
    warnings.simplefilter("ignore")
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        root, zoo = Path(tmp) / "models", Path(tmp) / "zoo"
        root.mkdir()
        zoo.mkdir()
        built = build_all(root, names or None)
        build_s = time.perf_counter() - start
        store = ModelStore(Settings(model_dirs=[root], zoo_dir=zoo, max_loaded_models=1))
        outcomes, lens = [], {}
        for name, folder in built.items():
            if isinstance(folder, Exception):
                outcomes.append(Outcome(name, "error", f"build: {_short(folder)}"))
                continue
            try:
                outcomes.append(check_architecture(name, root, store))
            except Exception as exc:  # the reference side failing is reported, not raised
                outcomes.append(Outcome(name, "error", f"reference: {_short(exc)}"))
            try:
                lens[name] = check_logit_lens(name, root, store)
            except Exception as exc:
                lens[name] = Outcome(name, "error", f"reference: {_short(exc)}")
            print(f"{name}: {outcomes[-1].line()}; logit lens {lens[name].line()}", file=sys.stderr, flush=True)
    text = report(outcomes, time.perf_counter() - start, lens) + f"\nBuilding all models took {build_s:.1f} s.\n"
    out.write_text(text)
    print(text)


if __name__ == "__main__":
    main(sys.argv[1:], Path(os.environ.get("LOUPE_ARCH_REPORT", "/tmp/arch_report.md")))
