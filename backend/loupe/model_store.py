"""Loads TransformerBridge models by id from the zoo, local HF dirs or the hub; LRU; one lock per model.

Model ids: `<folder>` for the embedded zoo (`models/<folder>`), `local/<folder>` for subfolders of
LOUPE_MODEL_DIRS, and the hub name itself for LOUPE_HUB_MODELS. Only these ids are ever loaded:
a request names an id, never a path. A model with training checkpoints (`<folder>/checkpoints/<step>/`,
or hub revisions `<name>@step<N>` in LOUPE_HUB_MODELS) is also loaded at one of them as `<id>@<step>`:
the same entry with that checkpoint's weights and its own revision, so every analysis, cache key and
permalink gets the checkpoint axis.
"""

import hashlib
import json
import logging
import re
import tempfile
import threading
from collections import OrderedDict
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from functools import cached_property
from pathlib import Path
from typing import Any

import torch

from .architectures import native
from .config import Settings
from .errors import AppError, ModelUnavailable, TooLong, UnknownModel, Unsupported
from .placement import boot_arguments, check_loaded
from .tokens import decoder_kind, first_tokens, token_texts
from .verified import READOUT_MODEL_TYPES

log = logging.getLogger(__name__)

_LAYER_KEYS = ("num_hidden_layers", "n_layer", "num_layers", "n_layers")
_HEAD_KEYS = ("num_attention_heads", "n_head", "n_heads", "num_heads", "attention_heads")
_CTX_KEYS = ("max_position_embeddings", "n_positions", "n_ctx", "max_seq_len", "context_length")
_LAYER_LIST_KEYS = ("layers_block_type", "layer_types", "block_types")  # one entry per layer
# Files that hold a tokenizer (fast, SentencePiece, BPE or WordPiece vocabularies).
TOKENIZER_FILES = ("tokenizer.json", "tokenizer.model", "spiece.model", "sentencepiece.bpe.model", "vocab.json", "vocab.txt")
# TransformerLens' lists of blocks, in the order Loupe numbers their layers (HRM's fast L stack, then its slow H stack).
BLOCK_LISTS = ("blocks", "L_blocks", "H_blocks")
# Model types with no attention at all (state-space and RNN models): nothing to capture.
ATTENTION_FREE = frozenset({"mamba", "mamba2", "falcon_mamba", "rwkv"})
_ITERATION_KEYS = ("n_iterations", "total_ut_steps")
# Model types whose attention is bidirectional (every token attends to every token): encoders, which
# predict masked tokens, never the next one. Which of them load is up to TransformerLens' bridge.
ENCODER_TYPES = frozenset({"bert", "roberta", "xlm-roberta", "distilbert", "electra", "modernbert", "albert", "mpnet"})
# HF classes of an encoder that carry its masked-LM head; any other (the bare `BertModel`, as
# sentence-transformers ship) has no unembedding of its own.
_MLM_CLASSES = ("ForMaskedLM", "ForPreTraining")


def _first(config: dict, keys: tuple[str, ...], default: Any = None) -> Any:
    for key in keys:
        if config.get(key) is not None:
            return config[key]
    return default


@dataclass(frozen=True)
class ModelEntry:
    """A model Loupe may load, described from its files without loading it."""

    id: str
    source: str  # "zoo" | "local" | "hub"
    location: str  # a directory for zoo/local, the hub name for hub
    n_layers: int
    n_heads: int
    n_iterations: int
    n_ctx: int
    description: str
    loupe: dict = field(default_factory=dict, compare=False, hash=False)

    model_type: str = ""
    has_tokenizer: bool = True
    encoder: bool = False  # bidirectional attention (ENCODER_TYPES, not configured as a decoder)
    has_unembedding: bool = True  # False for an encoder saved without its MLM head
    draws_random: bool = False  # its forward draws random numbers (Huginn's initial latent): seeded per request
    fixed_loop: bool = False  # its loop is set by its config alone (HRM's cycles)
    remote_code: bool = False  # its config maps to code shipped in its folder (auto_map) and Loupe has no classes of its own for it
    own_exit: bool = False  # its early exit is its own method (Huginn's coda), read only after each iteration
    exit_gate: bool = False  # it decides per token when to stop looping (Ouro's exit gate)
    checkpoints: tuple[int, ...] = ()  # training steps it can also be loaded at (`<id>@<step>`), ascending
    step: int | None = None  # the training step of a checkpoint entry (`<id>@<step>`); None: the final weights

    @property
    def warnings(self) -> list[str]:
        """What a researcher should know before choosing this model."""
        warnings = []
        if not self.has_tokenizer:
            warnings.append(f"No tokenizer files ({', '.join(TOKENIZER_FILES[:3])}, …) in its folder: analyses of a text are refused.")
        if self.remote_code:
            warnings.append("Runs code shipped in its folder (config.json auto_map): it loads only with LOUPE_TRUST_REMOTE_CODE=1.")
        return warnings

    def refusal(self, need: str) -> "Unsupported | None":
        """Why an enforced need (registry ENFORCED_NEEDS) does not hold, as far as the files tell."""
        if need == "readout" and self.model_type not in READOUT_MODEL_TYPES and not self.own_exit:
            return Unsupported(
                f"The early exit of {self.model_type or self.id} (final norm, then unembedding) is not verified to be "
                "its own output head: some heads scale or soft-cap their logits or add layers, and an early exit "
                "would show a distribution the model never produces.",
                code="unverified_readout",
            )
        if need == "tokenizer" and not self.has_tokenizer:
            return Unsupported(
                f"{self.id} has no tokenizer files in its folder, so no text can be turned into its tokens; "
                "add the tokenizer the model was trained with.",
                code="no_tokenizer",
            )
        if need == "causal_lm" and self.encoder:
            return Unsupported(
                f"{self.id} is an encoder: its attention is bidirectional and it predicts masked tokens, not the "
                "next one: it generates nothing, has no next-token loss, and the logit lens (which reads the next "
                "token at each position) would misread it.",
                code="encoder",
            )
        if need == "unembedding" and not self.has_unembedding:
            return Unsupported(
                f"{self.id} is an encoder saved without its masked-LM head (a base model, e.g. for sentence "
                "embeddings), so nothing reads its residual stream out as tokens.",
                code="no_unembedding",
            )
        if need == "exit_gate" and not self.exit_gate:
            return Unsupported(
                f"{self.id} has no exit gate: it does not decide per token when to stop looping (Ouro does); "
                "the logit lens and probes show what each iteration would answer.",
                code="no_exit_gate",
            )
        if need == "training_data" and not self.training_data:
            return Unsupported(
                f"{self.id} declares no training data Loupe can regenerate (a zoo model whose loupe.json names its "
                "training script under `training_data`), so its training examples cannot be ranked.",
                code="no_training_data",
            )
        if need == "checkpoints" and not self.checkpoints:
            if self.step is not None:
                return Unsupported(
                    f"{self.id} is checkpoint {self.step} of {self.base_id}; an analysis over checkpoints runs on "
                    f"{self.base_id} itself (its final weights and every checkpoint).",
                    code="checkpoint_of",
                )
            return Unsupported(
                f"{self.id} has no training checkpoints (a `checkpoints/<step>/model.safetensors` folder beside its "
                "weights, or hub revisions `<name>@step<N>` in LOUPE_HUB_MODELS).",
                code="no_checkpoints",
            )
        return self.attention_refusal if need == "attention" else None

    @property
    def attention_refusal(self) -> "Unsupported | None":
        """Why Loupe cannot capture this model's attention, as far as its config tells (the loaded
        model's structure has the last word: LoadedModel.attention_refusal)."""
        if self.model_type in ATTENTION_FREE or self.n_heads == 0:
            return Unsupported(
                f"{self.model_type or self.id} has no attention layers; the logit lens and probes read its residual stream.",
                code="no_attention",
            )
        return None

    @property
    def capabilities(self) -> list[str]:
        """What the model offers analyses (registry MODEL_NEEDS): `attention` where Loupe captures
        it exactly, `loop` for a natively looped model, `generating_lm` unless its loupe.json says
        `"generating_lm": false` (a task model, such as an adder, whose generations are no language)
        or it is an encoder; `encoder` for bidirectional attention, `causal_lm` for any other (next-token
        prediction); `unembedding` unless it is an encoder without its MLM head; `seeded` where its
        forward draws random numbers, seeded by `loop.seed`; `exit_gate` where the model itself decides
        when to stop looping (Ouro); `checkpoints` where it has training checkpoints (its final
        weights' entry, not a checkpoint's); `training_data` where a zoo model's training script
        regenerates its data."""
        return (
            (["attention"] if self.attention_refusal is None else [])
            + (["tokenizer"] if self.has_tokenizer else [])
            + (["readout"] if self.model_type in READOUT_MODEL_TYPES or self.own_exit else [])
            + (["loop"] if self.n_iterations > 1 else [])
            + (["generating_lm"] if self.loupe.get("generating_lm", True) and not self.encoder else [])
            + (["encoder"] if self.encoder else ["causal_lm"])
            + (["unembedding"] if self.has_unembedding else [])
            + (["seeded"] if self.draws_random else [])
            + (["exit_gate"] if self.exit_gate else [])
            + (["checkpoints"] if self.checkpoints else [])
            + (["training_data"] if self.training_data else [])
        )

    @property
    def training_data(self) -> dict | None:
        """loupe.json's `training_data` ({"script", "seed", ...}) of a zoo model's final weights: its
        training script regenerates every step's batch; None elsewhere (only the zoo's own scripts are run)."""
        declared = self.loupe.get("training_data")
        if self.source != "zoo" or self.step is not None or not isinstance(declared, dict):
            return None
        return declared if self.training_script is not None else None

    @property
    def training_script(self) -> Path | None:
        """The file of loupe.json's `training_data.script`: a `train_*` module of the zoo package (beside
        the model's real folder, with an `__init__.py`), or None when it names none there."""
        name = (self.loupe.get("training_data") or {}).get("script") if isinstance(self.loupe.get("training_data"), dict) else None
        if self.source != "zoo" or not isinstance(name, str) or not re.fullmatch(r"train_[a-z0-9_]+", name):
            return None
        package = Path(self.location).resolve().parent
        path = package / f"{name}.py"
        return path if path.is_file() and (package / "__init__.py").is_file() and package.name.isidentifier() else None

    @property
    def base_id(self) -> str:
        """The id of the model this is a checkpoint of (its own id for final weights)."""
        return self.id.rpartition("@")[0] if self.step is not None else self.id

    def at(self, step: int) -> "ModelEntry":
        """This model at training checkpoint `step`: the same entry, its id `<id>@<step>`; UnknownModel
        naming the known steps when it has no such checkpoint."""
        if step not in self.checkpoints:
            known = ", ".join(map(str, self.checkpoints)) or "none"
            raise UnknownModel(f"{self.id} has no checkpoint {step}; its checkpoints: {known}.", code="unknown_checkpoint")
        snapshots = self.loupe.get("checkpoint_snapshots", {})
        loupe = {**self.loupe, "revision": snapshots[step][0], "snapshot": snapshots[step][1]} if snapshots else self.loupe
        return replace(self, id=f"{self.id}@{step}", checkpoints=(), step=step, loupe=loupe,
                       description=f"{self.description} — checkpoint at training step {step}")

    @property
    def checkpoint_weights(self) -> Path | None:
        """A local checkpoint's weights file (None for final weights and a hub revision, whose
        snapshot folder is a whole model)."""
        if self.step is None or self.source == "hub":
            return None
        return Path(self.location) / "checkpoints" / str(self.step) / "model.safetensors"

    @property
    def trajectory_path(self) -> Path | None:
        """`checkpoints/trajectory.json` (per-step training loss), where the folder records one."""
        path = Path(self.location) / "checkpoints" / "trajectory.json"
        return path if self.source != "hub" and path.is_file() else None

    @property
    def folder(self) -> Path:
        """The folder its files are in (a hub model's cached snapshot)."""
        return Path(self.loupe["snapshot"]) if self.source == "hub" else Path(self.location)

    @property
    def card_path(self) -> Path | None:
        """Its model card, the README.md in its folder, where there is one."""
        path = self.folder / "README.md"
        return path if path.is_file() else None

    def public(self) -> dict:
        return {
            "id": self.id,
            "source": self.source,
            "n_layers": self.n_layers,
            "n_heads": self.n_heads,
            "n_iterations": self.n_iterations,
            "n_ctx": self.n_ctx,
            "fixed_loop": self.fixed_loop,
            "description": self.description,
            "capabilities": self.capabilities,
            "warnings": self.warnings,
            "prompt_hint": self.loupe.get("prompt_hint"),
            "has_card": self.card_path is not None,
            "checkpoints": list(self.checkpoints) or None,
            "step": self.step,
        }


def _entry_from_dir(model_id: str, source: str, path: Path) -> ModelEntry | None:
    try:
        config = json.loads((path / "config.json").read_text())
        loupe = json.loads((path / "loupe.json").read_text()) if (path / "loupe.json").exists() else {}
    except (OSError, ValueError) as exc:
        log.warning("skipping model dir %s: %s", path, exc)
        return None
    text_config = config.get("text_config") or config
    layer_list = _first(text_config, _LAYER_LIST_KEYS)
    model_type = str(text_config.get("model_type") or config.get("model_type") or "")
    encoder = model_type in ENCODER_TYPES and not config.get("is_decoder", False)
    shape = dict(
        n_layers=int(_first(text_config, _LAYER_KEYS) or len(layer_list or ())),
        n_heads=int(_first(text_config, _HEAD_KEYS, 0)),
        n_iterations=int(_first(text_config, _ITERATION_KEYS, 1)),
        n_ctx=int(_first(text_config, _CTX_KEYS, 0)),
    )
    draws_random = exit_gate = fixed_loop = own_exit = False
    if (architecture := native(model_type)) is not None:  # Loupe's own classes: their facts, not key guesses
        try:
            facts = architecture.facts(config)
        except (KeyError, TypeError, ValueError) as exc:
            log.warning("skipping model dir %s: its %s config is incomplete: %s", path, model_type, exc)
            return None
        shape = dict(n_layers=facts.n_layers, n_heads=facts.n_heads, n_iterations=facts.n_iterations, n_ctx=facts.n_ctx)
        draws_random, exit_gate, fixed_loop, own_exit = facts.draws_random, facts.exit_gate, facts.fixed_loop, facts.own_exit
    return ModelEntry(
        id=model_id,
        source=source,
        location=str(path),
        model_type=model_type,
        encoder=encoder,
        has_unembedding=not encoder or any(arch.endswith(_MLM_CLASSES) for arch in config.get("architectures") or ()),
        has_tokenizer=any((path / name).is_file() for name in TOKENIZER_FILES),
        n_layers=int(loupe.get("n_layers") or shape["n_layers"]),
        n_heads=shape["n_heads"],
        n_iterations=int(loupe.get("n_iterations") or shape["n_iterations"]),
        n_ctx=shape["n_ctx"],
        draws_random=draws_random,
        exit_gate=exit_gate,
        fixed_loop=fixed_loop,
        own_exit=own_exit,
        checkpoints=checkpoint_steps(path),
        remote_code=bool(config.get("auto_map")) and architecture is None,
        description=loupe.get("description") or f"{config.get('model_type', 'model')} from {path.name}",
        loupe=loupe,
    )


def checkpoint_steps(path: Path) -> tuple[int, ...]:
    """The steps of `<path>/checkpoints/<step>/model.safetensors`, ascending (a step is a directory
    named by a plain integer)."""
    root = path / "checkpoints"
    if not root.is_dir():
        return ()
    steps = [int(d.name) for d in root.iterdir() if d.name.isdigit() and str(int(d.name)) == d.name]
    return tuple(sorted(s for s in steps if (root / str(s) / "model.safetensors").is_file()))


def _hub_entry(name: str) -> ModelEntry | None:
    """Describe a hub model from the local HF cache only; listing must never wait on the network."""
    try:
        from huggingface_hub import try_to_load_from_cache

        cached = try_to_load_from_cache(name, "config.json")
    except Exception as exc:  # a malformed name, an unreadable cache
        log.warning("hub model %s: %s", name, exc)
        return None
    if not isinstance(cached, str):
        return None
    entry = _entry_from_dir(name, "hub", Path(cached).parent)
    if entry is None:
        return None
    snapshot = Path(cached).parent  # named after the commit the cached files belong to
    loupe = {"revision": snapshot.name, "snapshot": str(snapshot)}
    return ModelEntry(**{**entry.__dict__, "location": name, "description": f"Hugging Face hub: {name}", "loupe": loupe})


def discover(settings: Settings) -> dict[str, ModelEntry]:
    """Every model id Loupe may load, in display order: zoo, local dirs, hub."""
    entries: dict[str, ModelEntry] = {}
    if settings.zoo_dir.is_dir():
        for path in sorted(settings.zoo_dir.iterdir()):
            if (path / "config.json").is_file() and (entry := _entry_from_dir(path.name, "zoo", path)):
                entries[entry.id] = entry
    for root in settings.model_dirs:
        if not root.is_dir():
            log.warning("LOUPE_MODEL_DIRS entry %s is not a directory", root)
            continue
        for path in sorted(root.iterdir()):
            if (path / "config.json").is_file():
                if entry := _entry_from_dir(f"local/{path.name}", "local", path):
                    entries[entry.id] = entry
    revisions: dict[str, list[str]] = {}
    for name in settings.hub_models:
        base, _, revision = name.partition("@")
        if revision:
            revisions.setdefault(base, []).append(revision)
        elif entry := _hub_entry(name):
            entries.setdefault(entry.id, entry)
    for base, listed in revisions.items():
        if (entry := entries.get(base) or _hub_entry(base)) is not None and entry.source == "hub":
            entries[base] = _hub_checkpoints(entry, listed)
    return entries


def _hub_checkpoints(entry: ModelEntry, revisions: list[str]) -> ModelEntry:
    """`checkpoints` and the snapshot of each for hub revisions named `step<N>` (Pythia's), found in
    the local HF cache only; a revision not cached is left out with a warning (the hub is never asked)."""
    from huggingface_hub import try_to_load_from_cache

    name, snapshots = entry.id, {}
    for revision in revisions:
        if not (revision.startswith("step") and revision[4:].isdigit()):
            log.warning("LOUPE_HUB_MODELS %s@%s: only `step<N>` revisions make a checkpoint axis", name, revision)
            continue
        cached = try_to_load_from_cache(name, "config.json", revision=revision)
        if not isinstance(cached, str):
            log.warning("LOUPE_HUB_MODELS %s@%s: not in the local Hugging Face cache; left out", name, revision)
            continue
        snapshots[int(revision[4:])] = (Path(cached).parent.name, str(Path(cached).parent))
    # the axis hangs off the cached final weights (`<name>` at main): listed revisions alone make no entry
    return replace(entry, checkpoints=tuple(sorted(snapshots)), loupe={**entry.loupe, "checkpoint_snapshots": snapshots})


def revision_of(entry: ModelEntry) -> str:
    """A content fingerprint of the model's files, so a changed checkpoint never hits an old cache.
    A checkpoint's covers the folder's config and tokenizer and its own weights; final weights' also
    cover every checkpoint and trajectory.json, so an analysis over checkpoints (emergence) never
    answers from before a checkpoint was added."""
    if entry.source == "hub":
        return entry.loupe.get("revision", "hub")
    digest = hashlib.sha256(_files_digest(Path(entry.location)).encode())
    if entry.step is not None:
        digest.update(_files_digest(Path(entry.location) / "checkpoints" / str(entry.step)).encode())
    elif entry.checkpoints:
        digest.update(_files_digest(Path(entry.location) / "checkpoints").encode())
        for step in entry.checkpoints:
            digest.update(f"{step}:{_files_digest(Path(entry.location) / 'checkpoints' / str(step))}".encode())
    if entry.training_data is not None:
        # its training examples are regenerated by the zoo's code from its data: an edit there (even
        # one that keeps a file's size) changes what data_attribution ranks, so it changes the key
        digest.update(_source_digest(entry.training_script.parent).encode())
    elif entry.step is None and not entry.checkpoints:
        return _files_digest(Path(entry.location))
    return digest.hexdigest()[:16]


def _source_digest(package: Path) -> str:
    """sha256 of every byte of a package's modules and of its data/ files."""
    digest = hashlib.sha256()
    for path in sorted([*package.glob("*.py"), *(package / "data").glob("*")]):
        if path.is_file():
            digest.update(f"{path.relative_to(package)}:".encode() + path.read_bytes())
    return digest.hexdigest()


def _files_digest(folder: Path) -> str:
    """sha256 of the names, sizes, heads and tails of a folder's files (not its subfolders)."""
    digest = hashlib.sha256()
    for path in sorted(folder.iterdir()):
        if not path.is_file() or path.name.startswith("."):
            continue
        size = path.stat().st_size
        digest.update(f"{path.name}:{size}".encode())
        with path.open("rb") as handle:  # head and tail: cheap even for multi-GB shards
            digest.update(handle.read(1 << 20))
            if size > 2 << 20:
                handle.seek(-(1 << 20), 2)
                digest.update(handle.read())
    return digest.hexdigest()[:16]


@dataclass
class LoadedModel:
    """A booted TransformerBridge with what analyses need to know about it."""

    entry: ModelEntry
    bridge: Any
    revision: str
    lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def id(self) -> str:
        return self.entry.id

    @cached_property
    def block_names(self) -> list[str]:
        """The bridge's name of each of Loupe's layers: `blocks.{i}`; for a model of several stacks
        (HRM: the fast L stack, then the slow H stack) every stack's blocks in turn."""
        return [f"{stack}.{i}" for stack in BLOCK_LISTS for i in range(len(getattr(self.bridge, stack, ())))]

    @cached_property
    def blocks(self) -> list[torch.nn.Module]:
        """The bridge's block component of each layer, in `block_names` order."""
        return [self.bridge.get_submodule(name) for name in self.block_names]

    @cached_property
    def attention_modules(self) -> dict[int, torch.nn.Module]:
        """layer -> the HF attention module of every layer that has one: the module the bridge's
        `attn` component wraps, or else (a hybrid block the bridge maps without one, as
        RecurrentGemma's temporal block) the block's own `…Attention` submodule. Whether Loupe's
        capture is exact on it is the fast path's allow-list's to say (capture.NATIVE_MODEL_TYPES)."""
        modules = {}
        for layer, block in enumerate(self.blocks):
            if hasattr(block, "attn"):
                modules[layer] = block.attn.original_component
            elif (found := _attention_submodule(block.original_component)) is not None:
                modules[layer] = found
        return modules

    @property
    def attention_layers(self) -> list[int]:
        """The layers with softmax attention: every layer, except in a hybrid stack, whose
        state-space or convolution layers show null."""
        return list(self.attention_modules)

    @cached_property
    def attention_refusal(self) -> Unsupported | None:
        """Why Loupe cannot capture this model's attention exactly, from its structure; None if it can."""
        if (refusal := self.entry.attention_refusal) is not None:
            return refusal
        kind = self.entry.model_type or type(self.bridge.original_model).__name__
        if not self.blocks:
            return Unsupported(
                f"TransformerLens' bridge for {kind} exposes no stack of layers ({', '.join(BLOCK_LISTS)}), "
                "so Loupe has no layer x head attention to show.",
                code="unsupported_architecture",
            )
        if not self.attention_layers:
            return Unsupported(
                f"{kind} has attention ({self.entry.n_heads} heads), but TransformerLens' bridge exposes none of its "
                "layers' attention as a component Loupe can capture; the logit lens and probes read its residual stream.",
                code="unsupported_architecture",
            )
        return None

    @cached_property
    def bridge_refusal(self) -> Unsupported | None:
        """Why the TransformerBridge cannot run this model (a component wrapping no module, as TL's
        GraniteMoeHybrid `rotary_emb` where the HF model has none); None if it can."""
        if incomplete := _incomplete_components(self.bridge):
            kind = self.entry.model_type or type(self.bridge.original_model).__name__
            return Unsupported(
                f"TransformerLens' bridge for {kind} is incomplete: {incomplete[0]} has no module behind it, so "
                "the bridge cannot run the model (Loupe's own attention capture can, where it is verified).",
                code="unsupported_architecture",
            )
        return None

    def require_bridge(self) -> None:
        """Unsupported (422) when an analysis needs the bridge's forward and it cannot run."""
        if (refusal := self.bridge_refusal) is not None:
            raise Unsupported(refusal.message, code=refusal.code)

    @property
    def capabilities(self) -> list[str]:
        """The entry's capabilities, with `attention` decided by the loaded structure."""
        others = [c for c in self.entry.capabilities if c != "attention"]
        return (["attention"] if self.attention_refusal is None else []) + others

    @property
    def n_layers(self) -> int:
        return len(self.block_names) or int(self.bridge.cfg.n_layers)

    @property
    def n_heads(self) -> int:
        return int(self.bridge.cfg.n_heads)

    @property
    def n_iterations(self) -> int:
        return self.entry.n_iterations

    @property
    def n_ctx(self) -> int:
        return int(self.bridge.cfg.n_ctx)

    @cached_property
    def tokenizer(self) -> Any:
        """The bridge's tokenizer; for an encoder its own, as saved: the bridge re-makes it to prepend a
        BOS, which drops the [CLS] ... [SEP] (<s> ... </s>) an encoder is trained on."""
        if self.entry.encoder:
            from transformers import AutoTokenizer

            return AutoTokenizer.from_pretrained(self.entry.location)
        return self.bridge.tokenizer

    @cached_property
    def spread(self) -> bool:
        """Whether accelerate placed the model by a device map (LOUPE_DEVICE_MAP): its layers may sit
        on several devices, so captured tensors come back to the CPU layer by layer."""
        return bool(getattr(self.bridge.original_model, "hf_device_map", None))

    @property
    def input_device(self) -> torch.device:
        """Where token ids go: the input embedding's device (a spread model's first device)."""
        return torch.device(self.bridge.cfg.device)

    def token_ids(self, text: str) -> torch.Tensor:
        """[1, pos] token ids, BOS prepended (an encoder's [CLS] and [SEP] added) as the model
        expects, however many there are."""
        if self.entry.encoder:
            return self.tokenizer(text, return_tensors="pt")["input_ids"].to(self.bridge.cfg.device)  # [1, pos]
        return self.bridge.to_tokens(text, truncate=False)  # [1, pos]

    def token_limit(self, max_tokens: int) -> int:
        """The most tokens a text may have here: LOUPE_MAX_TOKENS or the model's context, the smaller."""
        return min(max_tokens, self.n_ctx)

    def tokenize(self, text: str, max_tokens: int) -> torch.Tensor:
        """[1, pos] token ids as token_ids gives them; TooLong past the limit."""
        tokens = self.token_ids(text)  # [1, pos]
        limit = self.token_limit(max_tokens)
        if tokens.shape[-1] > limit:
            raise TooLong(f"The text is {tokens.shape[-1]} tokens long; {self.id} accepts at most {limit}.")
        return tokens

    def first_tokens(self, text: str, limit: int) -> tuple[str, list[int]]:
        """The longest prefix of the text that tokenizes as its first `limit` tokens (or fewer), and its ids."""
        return first_tokens(text, lambda part: self.token_ids(part)[0].tolist(), set(self.tokenizer.all_special_ids), limit)

    @cached_property
    def token_kind(self) -> str:
        """How the tokenizer's pieces mark whitespace (tokens.decoder_kind)."""
        return decoder_kind(self.tokenizer)

    def str_tokens(self, tokens: torch.Tensor) -> list[str]:
        """Each token id of a [pos] tensor as its text, whitespace kept (a SentencePiece `▁upon`
        is " upon"); a token holding only part of a UTF-8 character shows as its bytes (`\\xe2`)."""
        return token_texts(self.tokenizer, self.token_kind, [int(t) for t in tokens])

    def pattern_hook_names(self) -> dict[int, str]:
        """layer -> the bridge's pattern hook, for every layer with attention."""
        return {layer: f"{self.block_names[layer]}.attn.hook_pattern" for layer in self.attention_layers}


def _attention_submodule(block: torch.nn.Module) -> torch.nn.Module | None:
    """The first submodule of an HF block whose class is an attention (not a linear-attention mixer)."""
    for module in block.modules():
        name = type(module).__name__
        if name.endswith("Attention") and "Linear" not in name:
            return module
    return None


def _incomplete_components(bridge: Any) -> list[str]:
    """Names of the bridge's components that wrap no HF module (their forward raises)."""
    from transformer_lens.model_bridge.generalized_components.base import GeneralizedComponent

    return [
        name
        for name, module in bridge.named_modules()
        if isinstance(module, GeneralizedComponent) and module._modules.get("_original_component") is None
    ]


WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".ckpt", ".index.json")


def _tensor_names(folder: Path) -> set[str] | None:
    """The tensor names of a folder's safetensors weights (one file or an index), None if it has neither."""
    from safetensors import safe_open

    if (single := folder / "model.safetensors").is_file():
        with safe_open(str(single), "pt") as weights:
            return set(weights.keys())
    if (index := folder / "model.safetensors.index.json").is_file():
        return set(json.loads(index.read_text())["weight_map"])
    return None


@contextmanager
def checkpoint_folder(entry: ModelEntry) -> Iterator[Path]:
    """A folder that holds the checkpoint as a whole model: a hub revision's snapshot, or for a local
    checkpoint a temporary folder of links to the model folder's config and tokenizer files and to
    the checkpoint's weights. Its tensor names must be exactly the final weights' (a strict load:
    transformers would fill a missing tensor with random init, silently)."""
    if entry.source == "hub":
        yield Path(entry.loupe["snapshot"])
        return
    folder, weights = Path(entry.location), entry.checkpoint_weights
    expected = _tensor_names(folder)
    if expected is None:
        raise Unsupported(f"{entry.base_id} keeps its weights in no safetensors file, so its checkpoints' tensors cannot be checked against them.")
    found = _tensor_names(weights.parent)
    if found != expected:
        missing, extra = sorted(expected - found), sorted(found - expected)
        raise ModelUnavailable(
            f"Checkpoint {entry.step} of {entry.base_id} does not hold the model's tensors: "
            f"missing {missing[:3]}{' …' if len(missing) > 3 else ''}, unexpected {extra[:3]}{' …' if len(extra) > 3 else ''}."
        )
    with tempfile.TemporaryDirectory(prefix="loupe-checkpoint-") as tmp:
        for path in folder.iterdir():
            if path.is_file() and not path.name.endswith(WEIGHT_SUFFIXES):
                (Path(tmp) / path.name).symlink_to(path.resolve())
        (Path(tmp) / weights.name).symlink_to(weights.resolve())
        yield Path(tmp)


def boot(entry: ModelEntry, settings: Settings) -> Any:
    """Boot a TransformerBridge for an allow-listed entry. Remote code only when the setting allows it.
    A checkpoint boots as the whole model its checkpoint_folder makes, cast to the model's dtype as
    final weights are: exactly what loading that checkpoint as a model of its own gives."""
    from transformer_lens.model_bridge import TransformerBridge

    if entry.step is not None:
        with checkpoint_folder(entry) as folder:
            return boot(replace(entry, location=str(folder), step=None), settings)

    loader = entry.loupe.get("loader", "transformers")
    if (architecture := native(entry.model_type)) is not None:
        # Loupe's own classes read the folder (a hub model's cached snapshot); its auto_map never runs
        bridge = architecture.boot(Path(entry.loupe.get("snapshot", entry.location)), device=settings.device)
    elif loader == "looped":
        from .looped_model import boot_looped

        bridge = boot_looped(Path(entry.location), device=settings.device)
    else:
        placement = boot_arguments(settings, entry.id)
        bridge = TransformerBridge.boot_transformers(
            entry.location,
            trust_remote_code=settings.trust_remote_code,
            **placement,
            **(_as_masked_lm(entry.model_type) if entry.encoder and not entry.has_unembedding else {}),
        )
        check_loaded(bridge.original_model, placement.get("device_map"))
    bridge.eval()
    return bridge


def _as_masked_lm(model_type: str) -> dict[str, Any]:
    """boot_transformers arguments that load an encoder family as the MLM class the bridge supports
    (none: let the bridge decide).

    The bridge has adapters only for an encoder with its head (`BertForMaskedLM`,
    `RobertaForMaskedLM`), so a base model (`BertModel`, `RobertaModel`) boots as that class: its
    encoder weights load exactly, its head is left at random init, and `unembedding` is absent
    from its capabilities, so nothing reads that head out."""
    import transformers
    from transformer_lens.factories.architecture_adapter_factory import SUPPORTED_ARCHITECTURES

    for name in sorted(SUPPORTED_ARCHITECTURES):
        cls = getattr(transformers, name, None)
        if name.endswith("ForMaskedLM") and cls is not None and getattr(cls.config_class, "model_type", None) == model_type:
            return {"model_class": cls, "hf_config_overrides": {"architectures": [name]}}
    return {}


class ModelStore:
    """Loads models on first use and keeps the most recently used ones in memory."""

    def __init__(self, settings: Settings):
        self.settings = settings
        if settings.torch_threads is not None:
            torch.set_num_threads(settings.torch_threads)  # process-wide: this process' forwards
        self._entries: dict[str, ModelEntry] | None = None
        self._stamp: tuple = ()
        self._loaded: OrderedDict[str, LoadedModel] = OrderedDict()
        self._store_lock = threading.Lock()
        self._load_locks: dict[str, threading.Lock] = {}
        # One boot at a time, whatever the model: transformers initialises weights on the meta device
        # by patching process-wide state, so two models loading at once in two threads (a page's token
        # count and another model's job) can leave one with meta tensors ("Cannot copy out of meta tensor").
        self._boot_lock = threading.Lock()

    def entries(self) -> dict[str, ModelEntry]:
        """Every model Loupe may load, rediscovered when a model folder changes (a folder added to
        LOUPE_MODEL_DIRS or the zoo shows up without a restart; a stat per folder, no reading)."""
        stamp = self._folders_stamp()
        if self._entries is None or stamp != self._stamp:
            self._entries, self._stamp = discover(self.settings), stamp
        return self._entries

    def _folders_stamp(self) -> tuple:
        roots = [self.settings.zoo_dir, *self.settings.model_dirs]
        return tuple((str(root), root.stat().st_mtime_ns if root.is_dir() else None) for root in roots)

    def entry(self, model_id: str) -> ModelEntry:
        """The entry of a model id; `<id>@<step>` is model `<id>` at its checkpoint `step`."""
        entries = self.entries()
        entry = entries.get(model_id)
        if entry is None and "@" in model_id:
            base, _, step = model_id.rpartition("@")
            if (final := entries.get(base)) is not None:
                if not (step.isdigit() and str(int(step)) == step):
                    raise UnknownModel(f"{base} has no checkpoint {step!r}: a checkpoint is a training step, an integer.", code="unknown_checkpoint")
                return final.at(int(step))
        if entry is None:
            raise UnknownModel(f"Unknown model {model_id!r}. GET /api/models lists the available ones.")
        return entry

    def require_loadable(self, model_id: str) -> ModelEntry:
        """The entry, or Unsupported (422) when this server will not load it: code shipped in its
        folder, with LOUPE_TRUST_REMOTE_CODE off (said before any work, not as a failed load)."""
        entry = self.entry(model_id)
        if entry.remote_code and not self.settings.trust_remote_code:
            raise Unsupported(
                f"{model_id} ({entry.model_type or 'its architecture'}) runs code shipped in its folder (config.json "
                "auto_map), and this server does not run remote code; set LOUPE_TRUST_REMOTE_CODE=1 to allow it. "
                "(Ouro, Huginn and HRM-Text load with Loupe's or transformers' own classes, without it.)",
                code="remote_code",
            )
        return entry

    def get(self, model_id: str, keep: bool = True) -> LoadedModel:
        """The loaded model for an id, booting it (once, even under concurrency) if needed. With
        keep=False a model not loaded yet is booted for the caller alone and not kept (an analysis
        going through many checkpoints must not push every other model out of memory)."""
        entry = self.entry(model_id)
        with self._store_lock:
            if model_id in self._loaded:
                self._loaded.move_to_end(model_id)
                return self._loaded[model_id]
            load_lock = self._load_locks.setdefault(model_id, threading.Lock())
        with load_lock:
            with self._store_lock:
                if model_id in self._loaded:
                    return self._loaded[model_id]
            try:
                with self._boot_lock:
                    bridge = boot(entry, self.settings)
            except AppError:  # a refusal with its own reason (a device map this model cannot take)
                raise
            except Exception as exc:
                log.exception("loading %s failed", model_id)
                cause = " ".join(str(exc).split())[:300]
                raise ModelUnavailable(f"Model {model_id!r} could not be loaded: {type(exc).__name__}: {cause}") from exc
            model = LoadedModel(entry=entry, bridge=bridge, revision=revision_of(entry))
            if not keep:
                return model
            with self._store_lock:
                self._loaded[model_id] = model
                while len(self._loaded) > self.settings.max_loaded_models:
                    evicted, _ = self._loaded.popitem(last=False)
                    log.info("evicted model %s", evicted)
            return model

    def capabilities(self, model_id: str) -> list[str]:
        """A model's capabilities: from its structure once loaded, from its config before."""
        with self._store_lock:
            if model_id in self._loaded:
                return self._loaded[model_id].capabilities
        return self.entry(model_id).capabilities

    def attention_layers(self, model_id: str) -> list[int] | None:
        """The layers with attention, once the model is loaded (None before)."""
        with self._store_lock:
            loaded = self._loaded.get(model_id)
        return loaded.attention_layers if loaded is not None and loaded.attention_refusal is None else None

    def refusal(self, model_id: str, need: str) -> Unsupported | None:
        """Why an enforced need does not hold for this model, as known now (loaded or not)."""
        with self._store_lock:
            loaded = self._loaded.get(model_id)
        if need == "attention" and loaded is not None:
            return loaded.attention_refusal
        return self.entry(model_id).refusal(need)

    def revision(self, model_id: str) -> str:
        with self._store_lock:
            if model_id in self._loaded:
                return self._loaded[model_id].revision
        return revision_of(self.entry(model_id))
