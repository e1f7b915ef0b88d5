"""Where a model's weights go: LOUPE_DEVICE_MAP checked and turned into TransformerBridge's boot arguments.

A device map spreads one model over several devices (accelerate's dispatch, as HF's
`from_pretrained(device_map=...)`): a strategy (`auto`, `balanced`, `balanced_low_0`, `sequential`)
over this machine's accelerators, or an explicit JSON object of module name -> device (`"cuda:1"`,
an index, `"cpu"`, or `"disk"` to offload). What can be checked without the model is checked at
start-up; what needs the model's module names, once it is loaded. Either way a bad map is refused
with its reason (ModelUnavailable, code `device_map`), never half-applied.
"""

import json
import re
from pathlib import Path
from typing import Any

import torch

from .config import Settings
from .errors import ModelUnavailable

STRATEGIES = ("auto", "balanced", "balanced_low_0", "sequential")
OFFLOAD = ("cpu", "disk")  # targets that hold weights off any accelerator

DeviceMap = str | dict[str, str | int]


def refusal(message: str) -> ModelUnavailable:
    return ModelUnavailable(f"LOUPE_DEVICE_MAP: {message}", code="device_map")


def _accelerators() -> int:
    """How many accelerators (CUDA, XPU, MPS, ...) torch sees on this machine."""
    return torch.accelerator.device_count() if torch.accelerator.is_available() else 0


def _check_device(module: str, target: object) -> None:
    """Refuse a map entry whose device is not a real place for weights on this machine."""
    if isinstance(target, bool) or not isinstance(target, (str, int)):
        raise refusal(f"{module!r} maps to {target!r}; a device is a string (\"cuda:1\", \"cpu\", \"disk\") or a GPU index.")
    if target in OFFLOAD:
        return
    if target == "meta":
        raise refusal(f"{module!r} maps to \"meta\", which holds no weights: the model could not run.")
    try:
        device = torch.device("cuda", target) if isinstance(target, int) else torch.device(target)
    except (RuntimeError, ValueError):
        raise refusal(f"{module!r} maps to {target!r}, which is no device torch knows (e.g. \"cuda:0\", 0, \"cpu\", \"disk\").") from None
    backend = getattr(torch, device.type, None)
    count = backend.device_count() if backend is not None and backend.is_available() else 0
    if (device.index or 0) >= count:
        raise refusal(f"{module!r} maps to {target!r}, but this machine has {count} {device.type} device(s).")


def device_map(settings: Settings) -> DeviceMap | None:
    """The device map LOUPE_DEVICE_MAP asks for, checked against this machine; None when unset.
    Raises ModelUnavailable (code `device_map`) with the reason for anything that would not load."""
    text = (settings.device_map or "").strip()
    if not text:
        return None
    if text in STRATEGIES:
        if _accelerators() == 0:
            raise refusal(
                f"{text!r} spreads a model over accelerators, and torch sees none on this machine; "
                "leave it unset (LOUPE_DEVICE=cpu), or give an explicit JSON map of cpu/disk targets to offload."
            )
        return text
    if not text.startswith("{"):
        raise refusal(f"{text!r} is neither a strategy ({', '.join(STRATEGIES)}) nor a JSON object of module -> device.")
    try:
        mapping = json.loads(text)
    except ValueError as exc:
        raise refusal(f"not valid JSON: {exc}.") from None
    if not isinstance(mapping, dict) or not mapping:
        raise refusal("a JSON map must be a non-empty object of module name -> device.")
    for module, target in mapping.items():
        _check_device(module, target)
    targets = set(mapping.values())
    if targets & set(OFFLOAD) and targets - set(OFFLOAD):
        # TransformerBridge refuses these too: its components are verified to materialise
        # offloaded weights only on CPU-only placements
        raise refusal("it mixes cpu/disk offload with accelerators, which TransformerBridge does not run; use one or the other.")
    return mapping


def refusal_at_start(settings: Settings) -> dict | None:
    """The error body that stops a process from starting (a server or a worker) when LOUPE_DEVICE_MAP
    cannot be honoured on this machine, else None: a bad map stops the start, not the first load."""
    try:
        device_map(settings)
    except ModelUnavailable as exc:
        return exc.body()
    return None


def boot_arguments(settings: Settings, model_id: str) -> dict[str, Any]:
    """TransformerBridge.boot_transformers' placement arguments: `device`, or `device_map` (and an
    offload folder of this model's own under the data dir when the map offloads to disk)."""
    placement = device_map(settings)
    if placement is None:
        return {"device": settings.device}
    arguments: dict[str, Any] = {"device": None, "device_map": placement}
    if isinstance(placement, dict) and "disk" in placement.values():
        arguments["offload_folder"] = str(offload_folder(settings, model_id))
    return arguments


def offload_folder(settings: Settings, model_id: str) -> Path:
    return (settings.data_dir / "offload" / re.sub(r"[^A-Za-z0-9._-]", "_", model_id)).resolve()


def _hf_names(names: Any) -> set[str]:
    """HF module/parameter names with the bridge's wrapper segments taken out (the bridge puts its
    components into the HF tree; each holds the HF module as `_original_component`)."""
    return {name.replace("._original_component", "").replace("_original_component.", "") for name in names}


def check_loaded(hf_model: torch.nn.Module, placement: DeviceMap | None) -> None:
    """Refuse an explicit map that names modules the model lacks, or leaves parameters unplaced
    (HF would put them on the CPU unasked). Strategies are the dispatcher's to fill in."""
    if not isinstance(placement, dict) or "" in placement:
        return
    modules = _hf_names(name for name, _ in hf_model.named_modules())
    if unknown := sorted(set(placement) - modules):
        raise refusal(f"the model has no module {unknown[0]!r} (its top-level ones: {', '.join(_top_level(hf_model))}).")
    covered = tuple(f"{name}." for name in placement)
    if unplaced := sorted(name for name in _hf_names(hf_model.state_dict()) if not name.startswith(covered)):
        raise refusal(f"it names no device for {unplaced[0]} ({len(unplaced)} weights unplaced); map every module.")


def _top_level(hf_model: torch.nn.Module) -> list[str]:
    """The model's modules two levels down (a leaf at the top level itself): what a map names."""
    names = []
    for name, module in hf_model.named_children():
        names += [f"{name}.{child}" for child, _ in module.named_children()] or [name]
    return names[:12]
